"""Live source: the Coinbase Advanced Trade WebSocket client.

Connects, subscribes to ``ticker`` and ``heartbeats`` (optionally ``market_trades``)
for every product within the 5 s the exchange allows, hands every message to the
:class:`MessageHandler`, and reconnects on any close, error, exchange error or stall
(no message at all for ``STALL_TIMEOUT_S``) after an exponential backoff with full
jitter. Connects and subscribes share one token bucket below the exchange's limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.frames import CloseCode

from cryptovol.core.coinbase import SequenceTracker
from cryptovol.core.timestamps import now_micros
from cryptovol.runtime.logs import get_logger
from cryptovol.runtime.pacing import Backoff, RateLimiter
from cryptovol_ingest.handler import MessageHandler
from cryptovol_ingest.metrics import IngestMetrics
from cryptovol_ingest.settings import IngestSettings

log = get_logger(__name__)

MAX_MESSAGE_BYTES = 8 * 1024 * 1024


class ExchangeError(RuntimeError):
    """The exchange sent ``{"type": "error"}``."""


def subscribe_messages(products: list[str], market_trades: bool = False) -> list[bytes]:
    channels = ["ticker", "heartbeats"] + (["market_trades"] if market_trades else [])
    return [orjson.dumps({"type": "subscribe", "product_ids": products, "channel": c})
            for c in channels]


class CoinbaseClient:
    def __init__(self, settings: IngestSettings, handler: MessageHandler,
                 metrics: IngestMetrics, stop: asyncio.Event) -> None:
        self.settings = settings
        self.handler = handler
        self.metrics = metrics
        self.stop = stop
        self.backoff = Backoff(settings.backoff_base_s, settings.backoff_cap_s)
        self.limiter = RateLimiter(settings.connect_rate_per_s)
        self.connections = 0
        self.reconnects: dict[str, int] = {}
        self._last = time.monotonic()
        handler.on_wait = self._touch

    def _touch(self) -> None:
        # time spent waiting for the publisher is not silence from the exchange
        self._last = time.monotonic()

    async def run(self) -> None:
        while not self.stop.is_set():
            reason = await self._session()
            if self.stop.is_set() or self.handler.exhausted:
                break
            self.metrics.reconnects.labels(reason=reason).inc()
            self.reconnects[reason] = self.reconnects.get(reason, 0) + 1
            delay = self.backoff.delay()
            log.warning("reconnecting to the exchange",
                        extra={"reason": reason, "delay_s": round(delay, 3),
                               "attempt": self.backoff.attempt})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=delay)

    async def _session(self) -> str:
        await self.limiter.acquire()
        url = self.settings.coinbase_ws_url
        self.connections += 1
        try:
            async with connect(url, open_timeout=10, close_timeout=1, max_size=MAX_MESSAGE_BYTES,
                               ping_interval=20, ping_timeout=20, proxy=None) as ws:
                self._last = time.monotonic()
                for message in subscribe_messages(self.settings.products,
                                                  self.settings.subscribe_market_trades):
                    await self.limiter.acquire()
                    await ws.send(message.decode())
                log.info("connected and subscribed",
                         extra={"url": url, "products": self.settings.products})
                return await self._watch(ws)
        except ExchangeError as exc:
            log.error("exchange error", extra={"error": str(exc)})
            return "exchange_error"
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
                # the message is lost (it cannot be dead-lettered: it was never read)
                self.metrics.malformed.labels(reason="too_large").inc()
                log.warning("the exchange sent a message over the size limit; reconnecting",
                            extra={"max_bytes": MAX_MESSAGE_BYTES})
                return "too_large"
            log.info("connection closed", extra={"code": exc.rcvd.code if exc.rcvd else None})
            return "closed"
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            log.warning("connection failed", extra={"url": url, "error": repr(exc)})
            return "error"
        except Exception:  # a bug must cost a reconnect, never the service
            log.exception("unexpected failure on the exchange connection")
            return "error"
        finally:
            self.metrics.connected.set(0)

    async def _watch(self, ws: ClientConnection) -> str:
        reader = asyncio.create_task(self._read(ws))
        stall = self.settings.stall_timeout_s
        try:
            while True:
                done, _ = await asyncio.wait({reader}, timeout=min(0.5, stall / 4))
                if done:
                    return reader.result()
                if self.stop.is_set():
                    return "shutdown"
                silent = time.monotonic() - self._last
                if silent > stall:
                    log.warning("no message from the exchange; treating the connection as dead",
                                extra={"silent_s": round(silent, 1)})
                    return "stall"
        finally:
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await reader

    async def _read(self, ws: ClientConnection) -> str:
        tracker = SequenceTracker()
        handler = self.handler
        while True:
            raw = await ws.recv(decode=False)
            received = now_micros()
            self._last = time.monotonic()
            message = await handler.handle(raw, received, tracker)
            if message is None:
                continue
            if message.kind == "error":
                raise ExchangeError(message.error or "unspecified")
            if message.kind == "subscriptions":
                self.metrics.connected.set(1)
                log.info("subscriptions acknowledged", extra={"channels": message.subscriptions})
            elif message.kind in ("ticker", "heartbeats") and self.backoff.attempt:
                self.backoff.reset()  # the connection works: start over on the next failure
            if handler.exhausted:
                self.stop.set()
                return "shutdown"
