"""``cryptovol-featurizer``: windowed features of ``ticks.raw``.

- ``cryptovol-featurizer`` (or ``... run``): the streaming service, a consumer
  group on ``ticks.raw`` producing ``ticks.features`` and Parquet.
- ``cryptovol-featurizer offline --files data/coinbase-ticker --out data/processed``:
  the same features from recordings, as Parquet for training.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from kafka.errors import KafkaError

from cryptovol.runtime.health import serve_http
from cryptovol.runtime.kafka import ensure_topics, make_consumer, make_producer
from cryptovol.runtime.lifecycle import Shutdown, tune_gc
from cryptovol.runtime.logs import configure_logging, get_logger
from cryptovol_featurizer.offline import write_offline
from cryptovol_featurizer.service import Featurizer
from cryptovol_featurizer.settings import FeaturizerSettings
from cryptovol_featurizer.sink import ParquetSink

log = get_logger(__name__)


def _connect(settings: FeaturizerSettings, shutdown: Shutdown) -> tuple | None:
    """Consumer, producer and read-back reader, retrying until Kafka answers."""
    delay = 1.0
    while not shutdown.requested:
        try:
            try:
                ensure_topics(settings, [settings.topic_raw, settings.topic_features])
            except KafkaError as exc:  # e.g. topics managed by an operator
                log.warning("could not ensure topics", extra={"error": repr(exc)})
            producer = make_producer(settings, max_block_ms=10_000)
            consumer = make_consumer(settings, settings.consumer_group,
                                     max_poll_records=settings.poll_max_records)
            reader = make_consumer(settings, None, client_id=f"{settings.service_name}-readback")
            return consumer, producer, reader
        except (KafkaError, OSError) as exc:
            log.warning("Kafka unavailable; retrying", extra={
                "bootstrap": settings.bootstrap, "error": repr(exc), "retry_in_s": delay})
            shutdown.wait(delay)
            delay = min(delay * 2, 30.0)
    return None


def run_service(settings: FeaturizerSettings) -> None:
    configure_logging(settings.service_name, settings.log_level)
    # The client's network thread warns whenever the CPU-bound feature loop holds
    # the interpreter for more than 100 ms; heartbeats run on their own thread.
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
    shutdown = Shutdown()
    featurizer: Featurizer | None = None
    started = time.monotonic()

    def health() -> tuple[bool, dict]:
        if featurizer is None:
            return False, {"phase": "connecting to Kafka", "since_s": time.monotonic() - started}
        return featurizer.health()

    server = serve_http(settings.metrics_port, health, host=settings.metrics_host)
    log.info("featurizer starting", extra={
        "bootstrap": settings.bootstrap, "topic_in": settings.topic_raw,
        "topic_out": settings.topic_features, "group": settings.consumer_group,
        "emit_interval_ms": settings.emit_interval_ms,
        "metrics_port": server.server_address[1]})
    connected = _connect(settings, shutdown)
    if connected is None:
        server.shutdown()
        return
    consumer, producer, reader = connected
    sink = ParquetSink(settings.sink_dir(), settings.parquet_max_rows, settings.parquet_flush_s) \
        if settings.parquet_enabled else None
    featurizer = Featurizer(settings, consumer, producer, reader, shutdown, sink)
    tune_gc()
    try:
        featurizer.run()
    finally:
        log.info("stopping")
        consumer.close(autocommit=False)
        reader.close(autocommit=False)
        producer.flush(timeout=settings.produce_timeout_s)
        producer.close(timeout=settings.produce_timeout_s)
        server.shutdown()


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
