"""The consumer's step on the stream worker: ticks.features messages to the rows
to score (pure). Malformed rows are dead-lettered; warm-up rows are skipped
unless ``predict_warmup``. Scoring and recording is the
:class:`~cryptovol_consumer.predictor.Predictor` sink's job, so offsets are
committed only once a batch's predictions are recorded."""

from __future__ import annotations

from typing import Any

from cryptovol.core.codec import decode_row
from cryptovol.core.schemas import FeatureRow
from cryptovol.runtime.worker import Batch, Output, Record, Stage, decoded
from cryptovol_consumer import metrics


class FeatureRows(Stage):
    def __init__(self, predict_warmup: bool = False) -> None:
        self.predict_warmup = predict_warmup
        self.skipped_warmup = 0

    def process(self, batch: Batch) -> Output:
        rows: list[FeatureRow] = []
        dead: list[tuple[Record, str]] = []
        warmup = 0
        for records in batch.values():
            for row in decoded(records, decode_row, dead):
                if row.warmup and not self.predict_warmup:
                    warmup += 1
                    continue
                rows.append(row)
        return Output(dead=dead, items=rows, tally=warmup)

    def settled(self, output: Output) -> None:
        if output.tally:
            metrics.ROWS_SKIPPED.labels(reason="warmup").inc(output.tally)
            self.skipped_warmup += output.tally
        if output.dead:
            metrics.ROWS_SKIPPED.labels(reason="dead_letter").inc(len(output.dead))

    def health(self) -> tuple[bool, dict[str, Any]]:
        return True, {"skipped_warmup": self.skipped_warmup}
