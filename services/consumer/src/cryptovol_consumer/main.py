"""``cryptovol-consumer``: score ``ticks.features`` through the API and record
the predictions in ``predictions.log``."""

from __future__ import annotations

import logging
from functools import partial

from cryptovol.runtime.bootstrap import run_stream_stage
from cryptovol.runtime.kafka import Clients, DeadLetter
from cryptovol.runtime.logs import configure_logging, get_logger
from cryptovol.runtime.pacing import RateLimiter
from cryptovol_consumer import metrics
from cryptovol_consumer.breaker import BreakerState, CircuitBreaker
from cryptovol_consumer.client import PredictClient
from cryptovol_consumer.predictor import Predictor
from cryptovol_consumer.settings import ConsumerSettings
from cryptovol_consumer.sink import FileSink, KafkaSink, NullSink, PredictionSink
from cryptovol_consumer.stage import FeatureRows

log = get_logger(__name__)


def _breaker_changed(state: BreakerState) -> None:
    metrics.BREAKER_STATE.set(int(state))
    log.warning("circuit breaker " + state.name.lower(), extra={"breaker": int(state)})


def build(settings: ConsumerSettings, clients: Clients) -> tuple[FeatureRows, list[Predictor]]:
    """The consumer's stage and its one sink: score through the API, then record."""
    records: PredictionSink = NullSink()
    if settings.log_predictions:
        records = KafkaSink(clients.producer, settings.topic_predictions,
                            FileSink(settings.prediction_log_dir), settings.produce_timeout_s)
    breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset_s,
                             on_change=_breaker_changed)
    metrics.BREAKER_STATE.set(int(breaker.state))
    rps = settings.rate_limit_rps
    predictor = Predictor(
        PredictClient(settings.api_url, settings.api_timeout_s), records,
        DeadLetter(clients.producer), topic=settings.topic_features, breaker=breaker,
        limiter=RateLimiter(rps, burst=max(1.0, rps / 10)),
        produce_timeout_s=settings.produce_timeout_s)
    return FeatureRows(settings.predict_warmup), [predictor]


def main() -> None:
    settings = ConsumerSettings()
    configure_logging(settings.service_name, settings.log_level)
    for chatty in ("httpx", "httpcore"):  # one line per /predict call otherwise
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))
    run_stream_stage(settings, settings.worker_config(), group=settings.consumer_group,
                     outputs=[settings.topic_predictions], build=partial(build, settings),
                     lag_gauge=metrics.LAG)


if __name__ == "__main__":
    main()
