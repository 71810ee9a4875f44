"""Composition root of the ingest service: source (live client or replay) ->
bounded queue -> publisher (spool + Kafka), with metrics and health over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from cryptovol.runtime.health import serve_http
from cryptovol.runtime.kafka import make_producer
from cryptovol.runtime.lifecycle import Shutdown
from cryptovol.runtime.logs import get_logger
from cryptovol_ingest.archive import RawArchive
from cryptovol_ingest.client import CoinbaseClient
from cryptovol_ingest.handler import MessageHandler
from cryptovol_ingest.metrics import IngestMetrics, default_metrics
from cryptovol_ingest.publisher import AckHook, Publisher
from cryptovol_ingest.replay import ReplaySource, discover
from cryptovol_ingest.settings import IngestSettings
from cryptovol_ingest.spool import Spool

log = get_logger(__name__)

# the producer keeps retrying a record for a day: during an outage it owns only what was
# in flight when the outage was detected, and giving up early could duplicate records
DELIVERY_TIMEOUT_MS = 24 * 3600 * 1000
SOURCE_STOP_GRACE_S = 5.0


def ingest_producer(settings: IngestSettings) -> Any:
    return make_producer(
        settings,
        delivery_timeout_ms=DELIVERY_TIMEOUT_MS,
        max_block_ms=2000,
        bootstrap_timeout_ms=5000,
        reconnect_backoff_max_ms=1000,
    )


class IngestService:
    def __init__(
        self,
        settings: IngestSettings,
        *,
        metrics: IngestMetrics | None = None,
        producer_factory: Callable[[], Any] | None = None,
        on_ack: AckHook | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or default_metrics()
        self.spool = Spool(
            settings.spool_path, max_bytes=settings.spool_max_bytes,
            segment_bytes=settings.spool_segment_bytes,
            fsync_interval_s=settings.spool_fsync_interval_s,
        )
        self.publisher = Publisher(
            settings, self.spool, self.metrics,
            producer_factory=producer_factory or (lambda: ingest_producer(settings)),
            on_ack=on_ack,
        )
        live = settings.source == "live"
        self.archive = (RawArchive(settings.raw_path, rotate_bytes=settings.raw_rotate_bytes,
                                   rotate_s=settings.raw_rotate_s)
                        if settings.save_raw and live else None)
        self.handler = MessageHandler(
            self.publisher, self.metrics, source="live" if live else "replay",
            archive=self.archive, max_ticks=settings.max_ticks,
            products=frozenset(settings.products) if live else None,
        )
        self.client: CoinbaseClient | None = None
        self.replay: ReplaySource | None = None
        self.http_port: int | None = None
        self._source_alive = False
        self.metrics.last_message_age.set_function(
            lambda: time.monotonic() - self.handler.last_message_at)

    # -- health ---------------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict]:
        publisher = self.publisher
        age = time.monotonic() - self.handler.last_message_at
        details = {
            "source": self.settings.source,
            "source_running": self._source_alive,
            "publisher_running": publisher.alive,
            "kafka": "spooling" if publisher.paused else "publishing",
            "spool_depth": self.spool.unacked,
            "spool_bytes": self.spool.bytes_on_disk,
            "spool_dropped": publisher.dropped,
            "ticks_received": self.handler.ticks,
            "ticks_acknowledged": publisher.acked,
            "last_message_age_s": round(age, 3),
        }
        if self.client is not None:
            details["connections"] = self.client.connections
            details["reconnects"] = self.client.reconnects
        ok = publisher.alive and self._source_alive and (
            self.spool.bytes_on_disk < self.spool.max_bytes)
        return ok, details

    # -- running --------------------------------------------------------------------------------

    def run(self, shutdown: Shutdown, *, serve_metrics: bool = True) -> int:
        """Run until the source ends (replay) or ``shutdown`` is requested; returns an
        exit code."""
        server = None
        if serve_metrics:
            server = serve_http(self.settings.metrics_port, self.health,
                                host=self.settings.metrics_host)
            self.http_port = server.server_address[1]
            log.info("metrics and health served", extra={"port": self.http_port})
        self.publisher.start()
        code = 0
        try:
            finished = asyncio.run(self._run_source(shutdown))
            if not self.publisher.alive:
                log.error("the publisher stopped unexpectedly; exiting")
                code = 1
            elif finished and not shutdown.requested:
                log.info("source finished; waiting until Kafka has acknowledged every tick",
                         extra={"ticks": self.handler.ticks})
                self.publisher.wait_idle(cancel=lambda: shutdown.requested)
        except FileNotFoundError as exc:
            log.error("cannot replay", extra={"error": str(exc)})
            code = 2
        finally:
            self.publisher.stop()
            if self.archive is not None:
                self.archive.close()
            if server is not None:
                server.shutdown()
                server.server_close()
        log.info("ingest stopped", extra={"ticks_received": self.handler.ticks,
                                          "ticks_acknowledged": self.publisher.acked,
                                          "spool_depth": self.spool.unacked})
        return code

    async def _run_source(self, shutdown: Shutdown) -> bool:
        """True when the source ran to its end (replay done or ``max_ticks`` reached)."""
        stop = asyncio.Event()
        settings = self.settings
        if settings.source == "live":
            self.client = CoinbaseClient(settings, self.handler, self.metrics, stop)
            source = self.client.run()
        else:
            self.replay = ReplaySource(
                discover(settings.replay_files), self.handler, speed=settings.replay_speed,
                max_gap_s=settings.replay_max_gap_s, loop=settings.replay_loop, stop=stop)
            source = self.replay.run()

        async def watch_shutdown() -> None:
            while not shutdown.requested and not stop.is_set():
                if not self.publisher.alive:
                    log.error("publisher stopped; stopping the source")
                    break
                await asyncio.sleep(0.1)
            stop.set()

        watcher = asyncio.create_task(watch_shutdown())
        task = asyncio.create_task(source)
        self._source_alive = True
        try:
            await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                # asked to stop: give the source a moment to finish its message, then cancel
                # it (it may be waiting for room in the queue of a publisher that is stuck)
                await asyncio.wait({task}, timeout=SOURCE_STOP_GRACE_S)
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            self._source_alive = False
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        return not shutdown.requested and self.publisher.alive
