"""``cryptovol-featurizer``: windowed features of ``ticks.raw``.

- ``cryptovol-featurizer`` (or ``... run``): the streaming service, a consumer
  group on ``ticks.raw`` producing ``ticks.features`` and Parquet.
- ``cryptovol-featurizer offline --files data/coinbase-ticker --out data/processed``:
  the same features from recordings, as Parquet for training.
"""

from __future__ import annotations

import argparse
import logging
from functools import partial
from pathlib import Path

from cryptovol.runtime.bootstrap import run_stream_stage
from cryptovol.runtime.kafka import Clients
from cryptovol.runtime.logs import configure_logging
from cryptovol_featurizer import metrics
from cryptovol_featurizer.offline import write_offline
from cryptovol_featurizer.settings import FeaturizerSettings
from cryptovol_featurizer.sink import ParquetSink
from cryptovol_featurizer.stage import Featurize


def build(settings: FeaturizerSettings, _clients: Clients) -> tuple[Featurize, list[ParquetSink]]:
    """The featurizer's stage and sinks."""
    stage = Featurize(settings.feature_config(), topic_out=settings.topic_features,
                      emit_interval_ms=settings.emit_interval_ms,
                      rebuild_margin_s=settings.rebuild_margin_s)
    sinks = [ParquetSink(settings.sink_dir(), settings.parquet_max_rows,
                         settings.parquet_flush_s)] if settings.parquet_enabled else []
    return stage, sinks


def run_service(settings: FeaturizerSettings) -> None:
    configure_logging(settings.service_name, settings.log_level)
    # The client's network thread warns whenever the CPU-bound feature loop holds
    # the interpreter for more than 100 ms; heartbeats run on their own thread.
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
    run_stream_stage(settings, settings.worker_config(), group=settings.consumer_group,
                     outputs=[settings.topic_features], build=partial(build, settings),
                     lag_gauge=metrics.CONSUMER_LAG, read_back=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cryptovol-featurizer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run the streaming service (the default)")
    offline = sub.add_parser("offline", help="recordings to Parquet features")
    offline.add_argument("--files", nargs="+", type=Path, default=[Path("data/coinbase-ticker")],
                         help="recording files or folders (default: data/coinbase-ticker)")
    offline.add_argument("--out", type=Path, default=None,
                         help="output folder (default: DATA_DIR/processed)")
    offline.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    settings = FeaturizerSettings()
    if args.command == "offline":
        configure_logging(settings.service_name, settings.log_level)
        out = args.out or settings.data_dir / "processed"
        written = write_offline(args.files, out, settings.feature_config(),
                                progress=not args.no_progress)
        print(f"wrote {len(written)} files under {out / 'features'}")
        return
    run_service(settings)


if __name__ == "__main__":
    main()
