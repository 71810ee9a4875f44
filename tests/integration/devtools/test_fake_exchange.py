"""The fake exchange speaks the Advanced Trade protocol (real sockets, no Kafka)."""

from __future__ import annotations

import asyncio
import math
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from cryptovol.core.timestamps import format_micros
from cryptovol.devtools.fake_exchange import FakeExchange
from cryptovol.runtime.recordings import open_recordings, read_ticks

REPO = Path(__file__).resolve().parents[3]
ONE = REPO / "data" / "coinbase-ticker" / "ticks_BTCUSD_20251130_235646.ndjson.gz"
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")


def sub(channel: str, products: list[str] | None = None) -> str:
    body: dict = {"type": "subscribe", "channel": channel}
    if products is not None:
        body["product_ids"] = products
    return orjson.dumps(body).decode()


async def collect(url: str, requests: list[str], until: int, timeout: float = 20) -> list[dict]:
    out: list[dict] = []
    async with connect(url, close_timeout=0.5) as ws:
        for request in requests:
            await ws.send(request)
        async with asyncio.timeout(timeout):
            while len(out) < until:
                out.append(orjson.loads(await ws.recv()))
    return out


def test_subscribe_ack_snapshot_updates_sequence_and_timestamps() -> None:
    async def go() -> list[dict]:
        async with FakeExchange([ONE], speed=math.inf) as fx:
            return await collect(fx.url, [sub("ticker", ["BTC-USD"]),
                                          sub("heartbeats", ["BTC-USD"])], until=30)

    messages = asyncio.run(go())
    assert [m["sequence_num"] for m in messages] == list(range(30))  # one counter, from 0
    assert all(TS.match(m["timestamp"]) and m["client_id"] == "" for m in messages)
    acks = [m for m in messages if m["channel"] == "subscriptions"]
    assert acks[0]["events"][0]["subscriptions"] == {"ticker": ["BTC-USD"]}
    tickers = [m for m in messages if m["channel"] == "ticker"]
    types = [m["events"][0]["type"] for m in tickers]
    assert types[0] == "snapshot" and set(types[1:]) == {"update"}
    # the envelope carries the recorded tick time and the untouched recorded ticker
    offline = list(read_ticks(open_recordings([ONE])))[: len(tickers)]
    assert [m["timestamp"][:26] for m in tickers] == [
        format_micros(t.event_us)[:26] for t in offline]
    assert [float(m["events"][0]["tickers"][0]["price"]) for m in tickers] == [
        t.price for t in offline]


def test_heartbeats_every_second_with_a_counter() -> None:
    async def go() -> list[dict]:
        async with FakeExchange([ONE], heartbeat_s=0.2) as fx:
            return await collect(fx.url, [sub("heartbeats")], until=4)

    messages = asyncio.run(go())
    beats = [m for m in messages if m["channel"] == "heartbeats"]
    assert [b["events"][0]["heartbeat_counter"] for b in beats] == [1, 2, 3]
    assert all("current_time" in b["events"][0] for b in beats)


@pytest.mark.parametrize("request_text", [
    sub("ticker"),  # no products
    sub("ticker", []),
    sub("no_such_channel", ["BTC-USD"]),
    '{"type": "subscribe"}',
    "hello",
])
def test_a_bad_subscribe_gets_an_error(request_text: str) -> None:
    async def go() -> list[dict]:
        async with FakeExchange([ONE]) as fx:
            return await collect(fx.url, [request_text], until=1)

    [reply] = asyncio.run(go())
    assert reply["type"] == "error" and reply["message"]


def test_no_subscribe_within_the_limit_closes_the_connection() -> None:
    async def go() -> int | None:
        async with FakeExchange([ONE], subscribe_timeout_s=0.3) as fx, connect(fx.url) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(10):
                    await ws.recv()
            return closed.value.rcvd.code if closed.value.rcvd else None

    assert asyncio.run(go()) == 1008


def test_the_command_prints_its_url_and_serves() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cryptovol.devtools.fake_exchange", "--port", "0",
         "--files", str(ONE), "--speed", "max"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert url.startswith("ws://127.0.0.1:")
        messages = asyncio.run(collect(url, [sub("ticker", ["BTC-USD"])], until=3))
        assert [m["channel"] for m in messages] == ["subscriptions", "ticker", "ticker"]
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_many_products_are_served_interleaved_in_time_order() -> None:
    names = ["BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD"]

    async def go() -> list[dict]:
        async with FakeExchange([ONE], speed=math.inf, products=len(names)) as fx:
            messages = await collect(fx.url, [sub("ticker", names)], until=1 + 4 * 40)
            assert fx.ticks_sent >= 4 * 40
            return messages

    tickers = [m for m in asyncio.run(go()) if m["channel"] == "ticker"]
    stamps = [m["timestamp"] for m in tickers]
    assert stamps == sorted(stamps)
    products = [m["events"][0]["tickers"][0]["product_id"] for m in tickers]
    assert set(products) == set(names)
    assert products[:4] == names  # each recorded tick, product after product
