"""Streamed features against an undisturbed offline run of the same ticks.

The ticks that reached ``ticks.raw`` (first copy of each record id, in
partition order) go through :func:`cryptovol.core.features.features_frame`,
the path training uses; every product's rows on ``ticks.features`` (first copy
of each record id) must equal that table's, bit for bit, NaN-aware.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass

from cryptovol.core.codec import DecodeError, decode_row, decode_tick
from cryptovol.core.features import FEATURE_NAMES, FeatureConfig, features_frame
from cryptovol.core.schemas import FeatureRow
from cryptovol.core.ticks import Tick
from cryptovol.core.timestamps import to_micros
from cryptovol.devtools.ledger.topics import end_offsets, read_topic


@dataclass
class ProductComparison:
    offline_rows: int = 0
    streamed_rows: int = 0
    equal: int = 0
    different: int = 0
    only_offline: int = 0
    only_streamed: int = 0
    first_difference: str | None = None

    @property
    def identical(self) -> bool:
        return self.offline_rows == self.streamed_rows == self.equal

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "identical": self.identical}


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def compare_with_offline(bootstrap: str, topic_raw: str, topic_features: str,
                         config: FeatureConfig | None = None) -> dict[str, ProductComparison]:
    ends = end_offsets(bootstrap, [topic_raw, topic_features])
    ticks: list[Tick] = []
    seen: set[str] = set()
    for record in read_topic(bootstrap, topic_raw, ends[topic_raw]):
        try:
            tick = decode_tick(record.value)
        except DecodeError:
            continue
        if tick.record_id not in seen:
            seen.add(tick.record_id)
            ticks.append(tick)
    frame = features_frame(ticks, config)
    offline: dict[str, tuple[str, int, bool, tuple[float, ...]]] = {}
    columns = [frame[name].to_numpy() for name in FEATURE_NAMES]
    times = [to_micros(t.to_pydatetime()) for t in frame["event_time"]]
    for i, (rid, product, warmup) in enumerate(zip(frame["record_id"], frame["product_id"],
                                                   frame["warmup"], strict=True)):
        offline[rid] = (product, times[i], bool(warmup),
                        tuple(float(c[i]) for c in columns))
    streamed: dict[str, FeatureRow] = {}
    for record in read_topic(bootstrap, topic_features, ends[topic_features]):
        try:
            row = decode_row(record.value)
        except DecodeError:
            continue
        streamed.setdefault(row.record_id, row)

    out: dict[str, ProductComparison] = defaultdict(ProductComparison)
    for rid, (product, time_us, warmup, values) in offline.items():
        account = out[product]
        account.offline_rows += 1
        row = streamed.get(rid)
        if row is None:
            account.only_offline += 1
            continue
        got = tuple(math.nan if row.features.get(n) is None else float(row.features[n])
                    for n in FEATURE_NAMES)
        if to_micros(row.event_time) == time_us and row.warmup == warmup and all(
                map(_same, got, values)):
            account.equal += 1
        else:
            account.different += 1
            if account.first_difference is None:
                names = [n for n, a, b in zip(FEATURE_NAMES, got, values, strict=True)
                         if not _same(a, b)]
                account.first_difference = f"{rid}: {names or ['event_time/warmup']}"
    for rid, row in streamed.items():
        account = out[row.product_id]
        account.streamed_rows += 1
        if rid not in offline:
            account.only_streamed += 1
    return dict(sorted(out.items()))
