"""``cryptovol-evaluator``: grade every prediction against its realized label
and export live model quality (composition root)."""

from __future__ import annotations

import logging
import threading
from functools import partial

from cryptovol.runtime.bootstrap import run_stream_stage
from cryptovol.runtime.kafka import Clients
from cryptovol.runtime.logs import configure_logging, get_logger
from cryptovol_evaluator import metrics
from cryptovol_evaluator.quality import Windows
from cryptovol_evaluator.settings import EvaluatorSettings
from cryptovol_evaluator.sink import LabelledSink
from cryptovol_evaluator.stage import Evaluate

log = get_logger(__name__)


class PartitionMismatch(RuntimeError):
    """The input and output topics are not co-partitioned."""


def check_partitions(settings: EvaluatorSettings, clients: Clients) -> None:
    """A product's ticks, predictions and labelled predictions must share a
    partition number: the three topics need the same partition count."""
    topics = (settings.topic_raw, settings.topic_predictions, settings.topic_labelled)
    counts = {t: len(clients.consumer.partitions_for_topic(t) or ()) for t in topics}
    if len(set(counts.values())) != 1:
        raise PartitionMismatch(f"topics must have the same partition count: {counts}")


def build(settings: EvaluatorSettings, clients: Clients) -> tuple[Evaluate, list[LabelledSink]]:
    check_partitions(settings, clients)
    stage = Evaluate(settings.grading_config(), Windows(settings.windows()),
                     topic_ticks=settings.topic_raw, topic_predictions=settings.topic_predictions,
                     topic_labelled=settings.topic_labelled,
                     refresh_s=settings.quality_refresh_s,
                     rebuild_margin_s=settings.rebuild_margin_s)
    stage.run_refresher(threading.Event())  # a daemon: ends with the process
    sinks = [LabelledSink(settings.sink_dir(), settings.parquet_max_rows,
                          settings.parquet_flush_s)] if settings.parquet_enabled else []
    return stage, sinks


def main() -> None:
    settings = EvaluatorSettings()
    configure_logging(settings.service_name, settings.log_level)
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
    run_stream_stage(settings, settings.worker_config(), group=settings.consumer_group,
                     outputs=[settings.topic_labelled], build=partial(build, settings),
                     lag_gauge=metrics.LAG, lag_by_topic=True, read_back=True)


if __name__ == "__main__":
    main()
