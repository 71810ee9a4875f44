"""Prometheus metrics of the ingest service (names and labels: docs/metrics.md)."""

from __future__ import annotations

import functools

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0, 300.0)


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.messages = Counter(
            "cryptovol_ingest_messages_total", "WebSocket messages received",
            ["channel", "product_id"], registry=registry)
        self.ticks_published = Counter(
            "cryptovol_ingest_ticks_published_total", "ticks acknowledged by Kafka",
            ["product_id"], registry=registry)
        self.reconnects = Counter(
            "cryptovol_ingest_reconnects_total", "reconnects to the exchange", ["reason"],
            registry=registry)
        self.sequence_gaps = Counter(
            "cryptovol_ingest_sequence_gaps_total", "messages missing according to sequence_num",
            registry=registry)
        self.malformed = Counter(
            "cryptovol_ingest_malformed_messages_total",
            "messages that could not be parsed (dead-lettered)", ["reason"], registry=registry)
        self.unknown = Counter(
            "cryptovol_ingest_unknown_messages_total",
            "messages of unknown type or channel (ignored)", ["type"], registry=registry)
        self.spool_depth = Gauge(
            "cryptovol_ingest_spool_depth", "ticks waiting in the on-disk spool", registry=registry)
        self.spool_dropped = Counter(
            "cryptovol_ingest_spool_dropped_total",
            "ticks dropped because the spool bound was hit", registry=registry)
        self.publish_latency = Histogram(
            "cryptovol_ingest_publish_latency_seconds", "receive to Kafka acknowledgement",
            buckets=LATENCY_BUCKETS, registry=registry)
        self.last_message_age = Gauge(
            "cryptovol_ingest_last_message_age_seconds",
            "seconds since the last WebSocket message (heartbeats included)", registry=registry)
        self.connected = Gauge(
            "cryptovol_ingest_connected", "1 while subscribed to the exchange", registry=registry)

    @functools.cache  # noqa: B019 - one small cache per metrics object, kept for its lifetime
    def published(self, product_id: str) -> Counter:
        return self.ticks_published.labels(product_id=product_id)

    @functools.cache  # noqa: B019
    def message(self, channel: str, product_id: str) -> Counter:
        return self.messages.labels(channel=channel, product_id=product_id)


@functools.cache
def default_metrics() -> IngestMetrics:
    """The process-wide metrics on the default registry (the one ``/metrics`` serves)."""
    return IngestMetrics(REGISTRY)


def isolated_metrics() -> IngestMetrics:
    """Metrics on a private registry (tests and benchmarks run several services in one
    process)."""
    return IngestMetrics(CollectorRegistry())
