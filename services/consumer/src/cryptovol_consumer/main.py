"""``cryptovol-consumer``: score ``ticks.features`` through the API and record
the predictions in ``predictions.log``."""

from __future__ import annotations

import logging
import time

from kafka.errors import KafkaError

from cryptovol.runtime.health import serve_http
from cryptovol.runtime.kafka import ensure_topics, make_consumer, make_producer
from cryptovol.runtime.lifecycle import Shutdown
from cryptovol.runtime.logs import configure_logging, get_logger
from cryptovol_consumer.client import PredictClient
from cryptovol_consumer.pacing import backoff_delay
from cryptovol_consumer.service import PredictionService
from cryptovol_consumer.settings import ConsumerSettings
from cryptovol_consumer.sink import FileSink, KafkaSink, NullSink, PredictionSink

log = get_logger(__name__)


def _connect(settings: ConsumerSettings, shutdown: Shutdown) -> tuple[object, object] | None:
    """Consumer and producer, retrying with backoff until Kafka answers."""
    attempt = 0
    while not shutdown.requested:
        try:
            try:
                ensure_topics(settings, [settings.topic_features, settings.topic_predictions])
            except KafkaError as exc:  # e.g. topics managed by an operator; not fatal
                log.warning("could not ensure topics", extra={"error": repr(exc)})
            producer = make_producer(settings, max_block_ms=10_000)
            consumer = make_consumer(
                settings,
                settings.consumer_group,
                [settings.topic_features],
                max_poll_records=settings.batch_size,
            )
            return consumer, producer
        except (KafkaError, OSError) as exc:
            delay = backoff_delay(attempt, 1.0, 30.0)
            attempt += 1
            log.warning(
                "Kafka unavailable; retrying",
                extra={"bootstrap": settings.bootstrap, "error": repr(exc), "retry_in_s": delay},
            )
            shutdown.wait(delay)
    return None


def main() -> None:
    settings = ConsumerSettings()
    configure_logging(settings.service_name, settings.log_level)
    for chatty in ("httpx", "httpcore"):  # one line per /predict call otherwise
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))
    shutdown = Shutdown()
    service: PredictionService | None = None
    started = time.monotonic()

    def health() -> tuple[bool, dict]:
        if service is None:
            return False, {"phase": "connecting to Kafka", "since_s": time.monotonic() - started}
        return service.health()

    server = serve_http(settings.metrics_port, health, host=settings.metrics_host)
    connected = _connect(settings, shutdown)
    if connected is None:
        server.shutdown()
        return
    consumer, producer = connected
    fallback = FileSink(settings.prediction_log_dir)
    sink: PredictionSink = (
        KafkaSink(producer, settings.topic_predictions, fallback, settings.produce_timeout_s)
        if settings.log_predictions
        else NullSink()
    )
    client = PredictClient(settings.api_url, settings.api_timeout_s)
    service = PredictionService(settings, consumer, producer, client, sink, shutdown)
    try:
        service.run()
    finally:
        log.info("stopping")
        client.close()
        consumer.close(autocommit=False)  # type: ignore[attr-defined]
        producer.flush(timeout=settings.produce_timeout_s)  # type: ignore[attr-defined]
        producer.close(timeout=settings.produce_timeout_s)  # type: ignore[attr-defined]
        server.shutdown()


if __name__ == "__main__":
    main()
