"""Running a stage on the stream worker as a service: the wiring every stage's
``main`` would otherwise repeat.

:func:`run_stream_stage` serves ``/metrics`` and the health endpoints from the
start (``/readyz`` fails while Kafka is not reachable yet), connects to Kafka
(retrying with backoff), lets the service build its stage and sinks on the
connected clients, runs the worker until SIGTERM/SIGINT, and closes everything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from cryptovol.runtime.health import serve_http
from cryptovol.runtime.kafka import Clients, connect
from cryptovol.runtime.lifecycle import Shutdown, tune_gc
from cryptovol.runtime.logs import get_logger
from cryptovol.runtime.settings import ServiceSettings
from cryptovol.runtime.worker import Sink, Stage, StreamWorker, WorkerConfig

log = get_logger(__name__)

Build = Callable[[Clients], tuple[Stage, Sequence[Sink]]]


def run_stream_stage(
    settings: ServiceSettings,
    config: WorkerConfig,
    *,
    group: str,
    outputs: Sequence[str],
    build: Build,
    lag_gauge: Any = None,
    read_back: bool = False,
) -> None:
    """Run ``build``'s stage and sinks on a worker consuming ``config.inputs`` in
    consumer group ``group`` until shutdown. ``read_back`` gives the worker a
    group-less reader for restoring state from history."""
    shutdown = Shutdown()
    worker: StreamWorker | None = None
    started = time.monotonic()

    def health() -> tuple[bool, dict]:
        if worker is None:
            return False, {"phase": "connecting to Kafka",
                           "since_s": round(time.monotonic() - started, 1)}
        return worker.health()

    server = serve_http(settings.metrics_port, health, host=settings.metrics_host)
    log.info(f"{settings.service_name} starting", extra={
        "bootstrap": settings.bootstrap, "inputs": list(config.inputs), "outputs": list(outputs),
        "group": group, "metrics_port": server.server_address[1]})
    clients = connect(settings, shutdown, group=group, topics=[*config.inputs, *outputs],
                      max_poll_records=config.max_records, read_back=read_back)
    if clients is None:
        server.shutdown()
        return
    sinks: Sequence[Sink] = ()
    try:
        stage, sinks = build(clients)
        worker = StreamWorker(config, clients.consumer, clients.producer, stage, sinks,
                              shutdown=shutdown, reader=clients.reader, lag_gauge=lag_gauge)
        tune_gc()
        worker.run()
    finally:
        log.info("stopping")
        for sink in sinks:
            close = getattr(sink, "close", None)
            if close is not None:
                close()
        clients.close(config.produce_timeout_s)
        server.shutdown()
