"""What happens to one exchange message, whichever source it came from: count it,
check its sequence number, hand its ticks to the publisher, dead-letter what cannot
be parsed (and, from a live exchange, tickers of products nobody subscribed to),
ignore (and count) what is unknown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from cryptovol.core.coinbase import (
    ExchangeMessage,
    MalformedMessage,
    SequenceTracker,
    Source,
    parse_message,
)
from cryptovol.core.ticks import Tick
from cryptovol.runtime.logs import get_logger
from cryptovol_ingest.archive import RawArchive
from cryptovol_ingest.metrics import IngestMetrics

log = get_logger(__name__)

BACKPRESSURE_SLEEP_S = 0.005


class Sink(Protocol):
    def offer_ticks(self, ticks: list[Tick], received_us: int) -> bool: ...

    def offer_dead_letter(self, raw: bytes, reason: str, key: bytes | None = None) -> bool: ...


class LogThrottle:
    """Lets through at most ``per_s`` log lines a second and counts the rest."""

    def __init__(self, per_s: float = 5.0) -> None:
        self.per_s = per_s
        self._window = 0.0
        self._count = 0
        self.suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now - self._window >= 1.0:
            self._window, self._count = now, 0
        self._count += 1
        if self._count <= self.per_s:
            return True
        self.suppressed += 1
        return False


class MessageHandler:
    def __init__(
        self,
        sink: Sink,
        metrics: IngestMetrics,
        *,
        source: Source = "live",
        archive: RawArchive | None = None,
        max_ticks: int | None = None,
        products: frozenset[str] | None = None,
    ) -> None:
        self.sink = sink
        self.metrics = metrics
        self.source: Source = source
        self.archive = archive
        self.max_ticks = max_ticks
        self.products = products  # the subscribed ones; None: any product
        self.ticks = 0
        self.last_message_at = time.monotonic()
        self._throttle = LogThrottle()
        self.on_wait: Callable[[], None] | None = None

    @property
    def exhausted(self) -> bool:
        return self.max_ticks is not None and self.ticks >= self.max_ticks

    async def handle(
        self, raw: bytes, received_us: int, tracker: SequenceTracker | None = None
    ) -> ExchangeMessage | None:
        """Process one message received at wall-clock ``received_us`` (epoch
        microseconds). Returns the parsed message, or None when it was malformed."""
        self.last_message_at = time.monotonic()
        if self.archive is not None:
            self.archive.write(raw, received_us)
        try:
            message = parse_message(raw, receive_us=received_us, source=self.source)
        except MalformedMessage as exc:
            self.metrics.message("invalid", "").inc()
            await self.dead_letter(raw, exc.reason, exc.detail)
            return None
        channel = message.channel if message.kind != "unknown" else "unknown"
        self.metrics.message(channel, message.product_id).inc()
        if tracker is not None and message.sequence_num is not None:
            gap = tracker.observe(message.sequence_num)
            if gap:
                self.metrics.sequence_gaps.inc(gap)
                if self._throttle.allow():
                    log.warning("sequence gap: messages were lost on this connection",
                                extra={"missing": gap, "sequence_num": message.sequence_num})
        if message.kind == "unknown":
            self.metrics.unknown.labels(type=message.channel[:64]).inc()
            return message
        if message.bad_tickers:
            await self.dead_letter(raw, "bad_ticker", "; ".join(message.bad_tickers))
        ticks = message.ticks
        if self.products is not None and ticks:
            unknown = sorted({t.product_id for t in ticks} - self.products)
            if unknown:
                await self.dead_letter(raw, "unknown_product", f"not subscribed: {unknown}")
                ticks = [t for t in ticks if t.product_id in self.products]
        if ticks:
            await self.publish(ticks, received_us)
        return message

    async def publish(self, ticks: list[Tick], received_us: int) -> None:
        if self.max_ticks is not None:
            ticks = ticks[: max(0, self.max_ticks - self.ticks)]
            if not ticks:
                return
        self.ticks += len(ticks)
        while not self.sink.offer_ticks(ticks, received_us):
            await self._wait()

    async def dead_letter(self, raw: bytes, reason: str, detail: str) -> None:
        self.metrics.malformed.labels(reason=reason).inc()
        if self._throttle.allow():
            log.warning("malformed exchange message dead-lettered",
                        extra={"reason": reason, "detail": detail[:300],
                               "raw_message": raw[:200].decode("utf-8", "replace")})
        while not self.sink.offer_dead_letter(raw, f"{reason}: {detail}"[:500]):
            await self._wait()

    async def _wait(self) -> None:
        # the publisher is behind: wait for room rather than lose ticks
        await asyncio.sleep(BACKPRESSURE_SLEEP_S)
        if self.on_wait is not None:
            self.on_wait()
