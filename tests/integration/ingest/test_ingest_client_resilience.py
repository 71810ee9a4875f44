"""The live client against the fake exchange: stalls, exchange errors, batched
messages (real sockets; a collecting sink stands in for Kafka)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from cryptovol.core.ticks import Tick
from cryptovol.devtools.fake_exchange import FakeExchange, Faults
from cryptovol_ingest.client import CoinbaseClient
from cryptovol_ingest.handler import MessageHandler
from cryptovol_ingest.metrics import isolated_metrics
from cryptovol_ingest.settings import IngestSettings

REPO = Path(__file__).resolve().parents[3]
ONE = REPO / "data" / "coinbase-ticker" / "ticks_BTCUSD_20251130_235646.ndjson.gz"


class Sink:
    def __init__(self) -> None:
        self.ticks: list[Tick] = []
        self.dead: list[bytes] = []

    def offer_ticks(self, ticks: list[Tick], received_us: int) -> bool:
        self.ticks.extend(ticks)
        return True

    def offer_dead_letter(self, raw: bytes, reason: str, key: bytes | None = None) -> bool:
        self.dead.append(raw)
        return True


def run_client(fx: FakeExchange, *, until: Callable[[CoinbaseClient], bool],
               products: list[str] | None = None, timeout: float = 60,
               **overrides: object) -> tuple[Sink, CoinbaseClient]:
    sink, metrics = Sink(), isolated_metrics()

    async def go() -> CoinbaseClient:
        async with fx:
            settings = IngestSettings(coinbase_ws_url=fx.url, products=products or ["BTC-USD"],
                                      backoff_base_s=0.05, backoff_cap_s=0.5, **overrides)
            stop = asyncio.Event()
            client = CoinbaseClient(settings, MessageHandler(sink, metrics), metrics, stop)
            task = asyncio.create_task(client.run())
            async with asyncio.timeout(timeout):
                while not until(client):
                    await asyncio.sleep(0.05)
            stop.set()
            await task
            return client

    client = asyncio.run(go())
    return sink, client


def test_a_stalled_connection_is_replaced_and_nothing_is_lost() -> None:
    fx = FakeExchange([ONE], faults=Faults(stall_after=40, stall_s=60, stalls=1))
    sink, client = run_client(
        fx, stall_timeout_s=2.0,
        until=lambda c: fx.finished.is_set() and len(sink_of(c).ticks) >= fx.ticks_sent)
    assert client.reconnects.get("stall", 0) >= 1 and "closed" not in client.reconnects
    assert client.metrics.reconnects.labels(reason="stall")._value.get() >= 1
    assert [t.record_id for t in sink.ticks] == fx.sent_ids and fx.ticks_sent == 159
    assert fx.stalls_done == 1


def test_an_exchange_error_causes_a_reconnect() -> None:
    fx = FakeExchange([ONE])
    _, client = run_client(fx, products=["BTC-USD", ""],  # an empty product id is refused
                           until=lambda c: c.reconnects.get("exchange_error", 0) >= 2)
    assert client.metrics.reconnects.labels(reason="exchange_error")._value.get() >= 2
    assert client.connections >= 2


def test_batched_tickers_are_all_published_with_distinct_ids() -> None:
    fx = FakeExchange([ONE], tickers_per_message=4)
    sink, _ = run_client(
        fx, until=lambda c: fx.finished.is_set() and len(sink_of(c).ticks) >= fx.ticks_sent)
    assert [t.record_id for t in sink.ticks] == fx.sent_ids
    assert len(set(fx.sent_ids)) == fx.ticks_sent == 159


def sink_of(client: CoinbaseClient) -> Sink:
    return client.handler.sink  # type: ignore[return-value]
