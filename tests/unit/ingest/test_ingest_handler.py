"""What the ingest does with each kind of exchange message."""

from __future__ import annotations

import asyncio

import orjson
from ingest_fakes import CollectingSink

from cryptovol.core.coinbase import SequenceTracker
from cryptovol_ingest.handler import MessageHandler
from cryptovol_ingest.metrics import isolated_metrics

TS = "2025-12-06T01:12:47.761914000Z"
TICKER = {"type": "ticker", "product_id": "BTC-USD", "price": "89387.88"}


def msg(channel: str, seq: int, events: list) -> bytes:
    return orjson.dumps({"channel": channel, "client_id": "", "timestamp": TS,
                         "sequence_num": seq, "events": events})


def run(handler: MessageHandler, messages: list[bytes]) -> None:
    tracker = SequenceTracker()

    async def go() -> None:
        for raw in messages:
            await handler.handle(raw, 1_765_000_000_000_000, tracker)

    asyncio.run(go())


def value(counter: object) -> float:
    return counter._value.get()  # type: ignore[attr-defined]


def test_messages_are_counted_published_dead_lettered_or_ignored() -> None:
    sink, metrics = CollectingSink(), isolated_metrics()
    handler = MessageHandler(sink, metrics)
    run(handler, [
        msg("subscriptions", 0, [{"subscriptions": {"ticker": ["BTC-USD"]}}]),
        msg("ticker", 1, [{"type": "snapshot", "tickers": [TICKER]}]),
        b"{broken",
        msg("ticker", 4, [{"type": "update", "tickers": [TICKER, {"product_id": "BTC-USD"}]}]),
        msg("status", 5, [{"type": "snapshot"}]),
        b'{"type": "notice"}',
        msg("heartbeats", 9, [{"heartbeat_counter": 1}]),
    ])
    assert [t.sequence_num for t in sink.ticks] == [1, 4]
    assert sink.ticks[0].receive_us == 1_765_000_000_000_000
    assert [reason.split(":")[0] for _, reason in sink.dead_letters] == ["invalid_json",
                                                                         "bad_ticker"]
    assert sink.dead_letters[0][0] == b"{broken"  # untouched bytes
    assert value(metrics.sequence_gaps) == 2 + 3  # 2..3 and 6..8 missing
    assert value(metrics.malformed.labels(reason="invalid_json")) == 1
    assert value(metrics.malformed.labels(reason="bad_ticker")) == 1
    assert value(metrics.unknown.labels(type="status")) == 1
    assert value(metrics.unknown.labels(type="notice")) == 1
    assert value(metrics.message("ticker", "BTC-USD")) == 2
    assert value(metrics.message("invalid", "")) == 1
    assert value(metrics.message("unknown", "")) == 2
    assert value(metrics.message("heartbeats", "")) == 1


def test_max_ticks_trims_and_reports_exhaustion() -> None:
    sink = CollectingSink()
    handler = MessageHandler(sink, isolated_metrics(), max_ticks=3)
    run(handler, [msg("ticker", i, [{"type": "update", "tickers": [TICKER, TICKER]}])
                  for i in range(4)])
    assert len(sink.ticks) == 3 and handler.exhausted


def test_a_full_queue_makes_the_reader_wait_instead_of_dropping() -> None:
    sink = CollectingSink(room=1)
    handler = MessageHandler(sink, isolated_metrics())
    waits = []
    handler.on_wait = lambda: (waits.append(1), setattr(sink, "room", None))

    run(handler, [msg("ticker", i, [{"type": "update", "tickers": [TICKER]}]) for i in range(2)])
    assert len(sink.ticks) == 2 and waits


def test_tickers_of_products_nobody_subscribed_to_are_dead_lettered_not_published() -> None:
    sink, metrics = CollectingSink(), isolated_metrics()
    handler = MessageHandler(sink, metrics, products=frozenset({"BTC-USD"}))
    stranger = {**TICKER, "product_id": "NOPE-USD"}
    run(handler, [msg("ticker", 0, [{"type": "update", "tickers": [TICKER, stranger]}]),
                  msg("ticker", 1, [{"type": "update", "tickers": [stranger]}])])
    assert [t.product_id for t in sink.ticks] == ["BTC-USD"]  # its neighbour is kept
    assert [reason for _, reason in sink.dead_letters] == [
        "unknown_product: not subscribed: ['NOPE-USD']"] * 2
    assert value(metrics.malformed.labels(reason="unknown_product")) == 2
