"""``cryptovol-fake-exchange``: a WebSocket server on 127.0.0.1 that speaks the Coinbase
Advanced Trade market-data protocol and serves recorded ticker data.

Protocol, as documented by Coinbase: the client must subscribe within 5 s or is
disconnected; every valid subscribe is acknowledged with a ``subscriptions`` message,
an invalid one answered with ``{"type": "error"}``; ``ticker`` sends a ``snapshot``
event first and ``update`` events after; ``heartbeats`` sends one message a second with
a ``heartbeat_counter``; every message carries ``sequence_num``, one counter per
connection starting at 0, and a ``timestamp`` with nine fractional digits. Each
recorded ticker (``raw``) is wrapped in a real envelope whose timestamp is the
recorded tick time, so event times (and record ids) are the same on every run.

``--products N`` serves the recording as N products (see
:mod:`cryptovol.devtools.products`: re-labelled, shifted by a few milliseconds
each, prices scaled by exact powers of two).

The feed is shared by all connections and resumes where the previous connection
stopped: every recorded tick is sent once. Fault switches for tests: drop the
connection after N ticker messages, skip sequence numbers, interleave malformed JSON
and unknown message types, stall (send nothing, heartbeats included).

``--port 0`` picks a free port; the bound URL is printed on one line of stdout when
the server is ready.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from cryptovol.core.ticks import tick_record_id
from cryptovol.core.timestamps import (
    MICROS_PER_SECOND,
    format_exchange,
    from_micros,
    now_micros,
)
from cryptovol.devtools.products import ProductFanOut, product_names
from cryptovol.runtime.logs import configure_logging, get_logger
from cryptovol.runtime.pacing import Pacer
from cryptovol.runtime.recordings import open_recordings

log = get_logger(__name__)

CHANNELS = frozenset({"ticker", "heartbeats", "market_trades", "level2", "ticker_batch",
                      "candles", "status", "user", "futures_balance_summary"})
NO_PRODUCTS_NEEDED = frozenset({"heartbeats", "status", "user", "futures_balance_summary"})
YIELD_EVERY = 100

MALFORMED = (
    b'{"channel": "ticker", "client_id": "", "timestamp": "2025-12-06T01:12:4',
    b"this is not JSON",
    b"[1, 2, 3]",
    b'{"channel": "ticker", "client_id": "", "timestamp": "2025-12-06T01:12:47.000000000Z", '
    b'"events": [{"type": "update", "tickers": []}]}',  # no sequence_num
)


@dataclass
class Faults:
    drop_after: int = 0  # close a connection after this many ticker messages (0: never)
    drops: int = 1  # how many connections to drop that way
    skip_every: int = 0  # every N-th ticker message jumps the sequence number ...
    skip_by: int = 1  # ... by this many
    malformed_every: int = 0  # a malformed message after every N-th ticker message
    unknown_every: int = 0  # an unknown message type after every N-th ticker message
    stall_after: int = 0  # go silent after this many ticker messages on a connection
    stall_s: float = 30.0
    stalls: int = 1
    # messages sent verbatim (at most once) as soon as this many ticks have been sent
    inject: dict[int, list[bytes]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FeedTick:
    event_us: int
    raw: dict


def load_feed(files: Iterable[Path | str], mirror_products: Sequence[str] = ()) -> list[FeedTick]:
    """Recorded tickers in chronological file order; each is also served under every
    product in ``mirror_products`` (same times and prices) for multi-product tests."""
    feed: list[FeedTick] = []
    for recording in open_recordings(files):
        for record in recording.records():
            raw = record.get("raw") or record
            if not isinstance(raw, dict) or "product_id" not in raw:
                continue
            raw = {k: v for k, v in raw.items() if k not in ("timestamp", "event_time")}
            feed.append(FeedTick(record["event_us"], raw))
            for product in mirror_products:
                feed.append(FeedTick(record["event_us"], {**raw, "product_id": product}))
    return feed


def envelope(channel: str, timestamp_us: int, sequence_num: int, events: list) -> bytes:
    return orjson.dumps({"channel": channel, "client_id": "",
                         "timestamp": format_exchange(timestamp_us),
                         "sequence_num": sequence_num, "events": events})


class _Connection:
    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.seq = 0
        self.lock = asyncio.Lock()
        self.subscriptions: dict[str, set[str]] = {}
        self.ticker = asyncio.Event()
        self.stalled = False
        self.ticker_messages = 0
        self.tasks: list[asyncio.Task] = []

    async def send(self, build: Callable[[int], bytes], skip: int = 0) -> int:
        """Send ``build(sequence_num)``; return the number used."""
        async with self.lock:
            seq = self.seq + skip
            await self.ws.send(build(seq).decode())
            self.seq = seq + 1
            return seq


class FakeExchange:
    def __init__(
        self,
        files: Iterable[Path | str] = (Path("data/coinbase-ticker"),),
        *,
        feed: Sequence[FeedTick] | None = None,
        speed: float = math.inf,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        loop: bool = False,
        max_ticks: int | None = None,
        mirror_products: Sequence[str] = (),
        heartbeat_s: float = 1.0,
        subscribe_timeout_s: float = 5.0,
        max_gap_s: float = 5.0,
        tickers_per_message: int = 1,
        products: int = 0,
        product_shift_us: int = 5_000,
    ) -> None:
        if feed is None:
            feed = load_feed(files, mirror_products)
            if products:
                feed = ProductFanOut(feed, product_names(products), product_shift_us)
        self.feed = feed
        self.speed = speed
        self.host = host
        self.port = port
        self.faults = faults or Faults()
        self.loop = loop
        self.max_ticks = max_ticks
        self.heartbeat_s = heartbeat_s
        self.subscribe_timeout_s = subscribe_timeout_s
        self.max_gap_s = max_gap_s
        self.tickers_per_message = max(1, tickers_per_message)
        self._server: Server | None = None
        self._cursor = 0
        self._batch_end = 0
        self._pass = 0
        self._span_us = (self.feed[-1].event_us - self.feed[0].event_us + MICROS_PER_SECOND
                         if self.feed else 0)
        # what was sent, for tests: record ids in send order, and fault counts
        self.sent_ids: list[str] = []
        self.ticks_sent = 0
        self.connections = 0
        self.sequence_skipped = 0
        self.malformed_sent = 0
        self.unknown_sent = 0
        self.drops_done = 0
        self.stalls_done = 0
        self._stall_until = 0.0  # monotonic time before which nothing is sent (stall_for)
        self._injections = sorted(self.faults.inject.items())
        self.injected = 0
        self.finished = threading.Event()

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def stall_for(self, seconds: float) -> None:
        """Send nothing at all (heartbeats included) on any connection for
        ``seconds`` from now; callable from any thread."""
        self._stall_until = time.monotonic() + seconds
        self.stalls_done += 1
        log.info("fault: stalling every connection", extra={"seconds": seconds})

    async def _hold_while_stalled(self, conn: _Connection) -> None:
        while (remaining := self._stall_until - time.monotonic()) > 0:
            conn.stalled = True
            await asyncio.sleep(min(remaining, 0.5))
        conn.stalled = False

    async def start(self) -> str:
        self._server = await serve(self._handle, self.host, self.port, compression=None,
                                   max_size=2**20, ping_interval=None)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.url

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> FakeExchange:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- one connection -------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        conn = _Connection(ws)
        try:
            try:
                first = await asyncio.wait_for(ws.recv(), timeout=self.subscribe_timeout_s)
            except TimeoutError:
                await ws.close(1008, "no subscribe message within 5 seconds")
                return
            await self._on_client_message(conn, first)
            stream = asyncio.create_task(self._stream(conn))
            conn.tasks.append(stream)
            async for message in ws:
                await self._on_client_message(conn, message)
        except ConnectionClosed:
            pass
        finally:
            for task in conn.tasks:
                task.cancel()
            for task in conn.tasks:
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await task

    async def _on_client_message(self, conn: _Connection, message: str | bytes) -> None:
        try:
            request = orjson.loads(message)
            kind, channel = request["type"], request["channel"]
            products = request.get("product_ids") or []
            if (kind not in ("subscribe", "unsubscribe") or channel not in CHANNELS
                    or not isinstance(products, list)
                    or not all(isinstance(p, str) and p for p in products)
                    or (channel not in NO_PRODUCTS_NEEDED and not products)):
                raise ValueError(f"bad subscribe request {request!r}")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.info("rejected client message", extra={"error": repr(exc)})
            await conn.ws.send(orjson.dumps(
                {"type": "error", "message": "Failure to subscribe"}).decode())
            return
        current = conn.subscriptions.setdefault(channel, set())
        if kind == "subscribe":
            current.update(products)
        else:
            current.difference_update(products)
        now = now_micros()
        subs = {c: sorted(p) or [c] for c, p in conn.subscriptions.items() if p or c == channel}
        await conn.send(lambda seq: envelope("subscriptions", now, seq, [{"subscriptions": subs}]))
        if kind == "subscribe" and channel == "heartbeats" and not any(
                t.get_name() == "heartbeats" for t in conn.tasks):
            conn.tasks.append(asyncio.create_task(self._heartbeats(conn), name="heartbeats"))
        if kind == "subscribe" and channel == "ticker":
            conn.ticker.set()
        if kind == "subscribe" and channel == "market_trades":
            # no trades were recorded: acknowledge with an empty snapshot
            await conn.send(lambda seq: envelope(
                "market_trades", now, seq, [{"type": "snapshot", "trades": []}]))

    async def _heartbeats(self, conn: _Connection) -> None:
        counter = 0
        while True:
            await asyncio.sleep(self.heartbeat_s)
            if conn.stalled or "heartbeats" not in conn.subscriptions \
                    or time.monotonic() < self._stall_until:
                continue
            counter += 1
            now = now_micros()
            current = from_micros(now).strftime("%Y-%m-%d %H:%M:%S.%f000 +0000 UTC")
            await conn.send(lambda seq, n=counter, t=now, c=current: envelope(
                "heartbeats", t, seq, [{"current_time": c, "heartbeat_counter": n}]))

    def _next_batch(self, products: set[str]) -> list[FeedTick] | None:
        """The next ticks for ``products`` without consuming them; None at the end."""
        skipped = 0
        while True:
            if self.max_ticks is not None and self.ticks_sent >= self.max_ticks:
                return None
            if self._cursor >= len(self.feed):
                if not self.loop or not self.feed:
                    return None
                self._cursor, self._pass = 0, self._pass + 1
            if self.feed[self._cursor].raw["product_id"] in products:
                break
            self._cursor += 1  # a product nobody subscribed to: skip it for good
            skipped += 1
            if skipped > len(self.feed):
                return None
        shift = self._span_us * self._pass
        batch: list[FeedTick] = []
        probe = self._cursor
        while (probe < len(self.feed) and len(batch) < self.tickers_per_message
               and self.feed[probe].raw["product_id"] in products):
            tick = self.feed[probe]
            batch.append(FeedTick(tick.event_us + shift, tick.raw) if shift else tick)
            probe += 1
        self._batch_end = probe
        return batch

    async def _stream(self, conn: _Connection) -> None:
        await conn.ticker.wait()
        faults = self.faults
        pacer = Pacer(self.speed, self.max_gap_s)
        first = True
        while True:
            batch = self._next_batch(conn.subscriptions.get("ticker", set()))
            if batch is None:
                self.finished.set()
                return
            stamp = batch[-1].event_us
            await pacer.wait(stamp / MICROS_PER_SECOND)
            await self._hold_while_stalled(conn)
            if (faults.stall_after and conn.ticker_messages == faults.stall_after
                    and self.stalls_done < faults.stalls):
                self.stalls_done += 1
                conn.stalled = True
                log.info("fault: stalling", extra={"seconds": faults.stall_s})
                await asyncio.sleep(faults.stall_s)
                conn.stalled = False
            skip = faults.skip_by if (faults.skip_every and conn.ticker_messages
                                      and conn.ticker_messages % faults.skip_every == 0) else 0
            event = {"type": "snapshot" if first else "update", "tickers": [t.raw for t in batch]}
            await conn.send(lambda seq, e=event, s=stamp: envelope("ticker", s, seq, [e]), skip)
            # sent: consume the ticks
            self._cursor = self._batch_end
            self.ticks_sent += len(batch)
            self.sent_ids.extend(tick_record_id(t.raw["product_id"], stamp, i)
                                 for i, t in enumerate(batch))
            self.sequence_skipped += skip
            first = False
            conn.ticker_messages += 1
            n = conn.ticker_messages
            if faults.malformed_every and n % faults.malformed_every == 0:
                bad = MALFORMED[self.malformed_sent % len(MALFORMED)]
                await conn.ws.send(bad.decode())
                self.malformed_sent += 1
            if faults.unknown_every and n % faults.unknown_every == 0:
                await self._send_unknown(conn)
            while self._injections and self._injections[0][0] <= self.ticks_sent:
                for message in self._injections.pop(0)[1]:  # popped first: at most once
                    self.injected += 1
                    await conn.ws.send(_frame(message))
            if faults.drop_after and n == faults.drop_after and self.drops_done < faults.drops:
                self.drops_done += 1
                log.info("fault: dropping the connection", extra={"after": n})
                await conn.ws.close(1011, "fault injection: connection dropped")
                return
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)

    async def _send_unknown(self, conn: _Connection) -> None:
        if self.unknown_sent % 2 == 0:  # an envelope on a channel the client never asked for
            now = now_micros()
            await conn.send(lambda seq: envelope(
                "status", now, seq, [{"type": "snapshot", "products": []}]))
        else:  # a message type nobody knows
            await conn.ws.send(orjson.dumps({"type": "notice", "message": "hello"}).decode())
        self.unknown_sent += 1


def _frame(message: bytes) -> str | bytes:
    """A text frame, as the exchange sends, unless the bytes are not UTF-8."""
    try:
        return message.decode()
    except UnicodeDecodeError:
        return message


class FakeExchangeThread:
    """Runs a :class:`FakeExchange` on its own event loop in a background thread."""

    def __init__(self, **kwargs: object) -> None:
        self.exchange = FakeExchange(**kwargs)  # type: ignore[arg-type]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-exchange",
                                        daemon=True)

    def start(self) -> str:
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self.exchange.start(), self._loop).result(10)

    @property
    def url(self) -> str:
        return self.exchange.url

    def stall_for(self, seconds: float) -> None:
        self._loop.call_soon_threadsafe(self.exchange.stall_for, seconds)

    def wait_finished(self, timeout: float | None = None) -> bool:
        return self.exchange.finished.wait(timeout)

    def stop(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(TimeoutError):
                asyncio.run_coroutine_threadsafe(self.exchange.close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> FakeExchangeThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _speed(value: str) -> float:
    return math.inf if value.lower() in ("max", "inf", "0") else float(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cryptovol-fake-exchange",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--files", nargs="+", default=["data/coinbase-ticker"])
    parser.add_argument("--speed", type=_speed, default=math.inf,
                        help='multiple of real time, or "max" (default)')
    parser.add_argument("--loop", action="store_true", help="serve the data forever")
    parser.add_argument("--max-ticks", type=int)
    parser.add_argument("--mirror-products", default="",
                        help="comma-separated extra products served with the recorded data")
    parser.add_argument("--products", type=int, default=0,
                        help="serve the recording as N products (BTC-USD, ETH-USD, ...), each "
                        "shifted in time and price (see cryptovol.devtools.products)")
    parser.add_argument("--product-shift-ms", type=float, default=5.0,
                        help="time shift between consecutive products (default 5 ms)")
    parser.add_argument("--tickers-per-message", type=int, default=1)
    parser.add_argument("--heartbeat-s", type=float, default=1.0)
    parser.add_argument("--subscribe-timeout-s", type=float, default=5.0)
    group = parser.add_argument_group("faults")
    for name, kind, help_text in [
        ("drop-after", int, "close each connection after N ticker messages"),
        ("drops", int, "how many connections to drop (default 1)"),
        ("skip-every", int, "jump sequence_num on every N-th ticker message"),
        ("skip-by", int, "by this many numbers (default 1)"),
        ("malformed-every", int, "a malformed message after every N-th ticker message"),
        ("unknown-every", int, "an unknown message type after every N-th ticker message"),
        ("stall-after", int, "go silent after N ticker messages"),
        ("stall-s", float, "for this many seconds (default 30)"),
        ("stalls", int, "how many times (default 1)"),
    ]:
        group.add_argument(f"--{name}", type=kind, help=help_text)
    args = parser.parse_args(argv)
    configure_logging("fake-exchange", "INFO")
    faults = Faults(**{k: v for k, v in vars(args).items()
                       if k in Faults.__dataclass_fields__ and v is not None})
    mirror = [p.strip() for p in args.mirror_products.split(",") if p.strip()]
    try:
        exchange = FakeExchange(args.files, speed=args.speed, host=args.host, port=args.port,
                                faults=faults, loop=args.loop, max_ticks=args.max_ticks,
                                mirror_products=mirror, products=args.products,
                                product_shift_us=round(args.product_shift_ms * 1000),
                                heartbeat_s=args.heartbeat_s,
                                subscribe_timeout_s=args.subscribe_timeout_s,
                                tickers_per_message=args.tickers_per_message)
    except (FileNotFoundError, StopIteration) as exc:
        print(f"cryptovol-fake-exchange: no recordings: {exc!r}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(exchange))


async def _serve(exchange: FakeExchange) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with exchange:
        print(exchange.url, flush=True)
        log.info("serving", extra={"url": exchange.url, "ticks": len(exchange.feed)})
        started = time.monotonic()
        await stop.wait()
    log.info("stopped", extra={"ticks_sent": exchange.ticks_sent,
                               "connections": exchange.connections,
                               "uptime_s": round(time.monotonic() - started, 1)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
