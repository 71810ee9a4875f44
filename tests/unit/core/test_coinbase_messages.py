"""Parsing of whole Advanced Trade messages (cryptovol.core.coinbase)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from cryptovol.core.coinbase import (
    MalformedMessage,
    SequenceTracker,
    parse_message,
    ticker_to_tick,
)
from cryptovol.core.ticks import tick_record_id
from cryptovol.core.timestamps import format_exchange, parse_micros, to_micros

RECEIVED = to_micros(datetime(2025, 12, 6, 1, 12, 48, tzinfo=UTC))


def ticker(product: str = "BTC-USD", price: str = "89387.88", **extra: str) -> dict:
    return {"type": "ticker", "product_id": product, "price": price, "volume_24_h": "8344.1",
            "low_24_h": "88099.05", "high_24_h": "92716.42", "best_bid": "89388.37",
            "best_ask": "89390", "best_bid_quantity": "0.019", "best_ask_quantity": "0.018",
            "price_percent_chg_24_h": "-3.29", **extra}


def envelope(channel: str, events: list, seq: int = 7,
             ts: str = "2025-12-06T01:12:47.761914123Z") -> bytes:
    return orjson.dumps({"channel": channel, "client_id": "", "timestamp": ts,
                         "sequence_num": seq, "events": events})


def test_every_ticker_of_every_event_becomes_a_tick() -> None:
    raw = envelope("ticker", [
        {"type": "snapshot", "tickers": [ticker("BTC-USD"), ticker("ETH-USD", "3000.5")]},
        {"type": "update", "tickers": [ticker("BTC-USD", "89390.01")]},
    ])
    message = parse_message(raw, receive_us=RECEIVED)
    assert message.kind == "ticker"
    assert message.sequence_num == 7
    assert [t.product_id for t in message.ticks] == ["BTC-USD", "ETH-USD", "BTC-USD"]
    assert [t.event_type for t in message.ticks] == ["snapshot", "snapshot", "update"]
    assert [t.price for t in message.ticks] == [89387.88, 3000.5, 89390.01]
    event_time = to_micros(datetime(2025, 12, 6, 1, 12, 47, 761914, tzinfo=UTC))
    assert {t.event_us for t in message.ticks} == {event_time}
    assert all(t.receive_us == RECEIVED and t.sequence_num == 7 for t in message.ticks)
    # the index counts tickers across events, so ids sharing a timestamp stay unique
    assert [t.record_id for t in message.ticks] == [
        tick_record_id("BTC-USD", event_time, 0), tick_record_id("ETH-USD", event_time, 1),
        tick_record_id("BTC-USD", event_time, 2)]
    assert message.product_id == "BTC-USD"


def test_envelope_tick_matches_ticker_to_tick() -> None:
    raw = envelope("ticker", [{"type": "update", "tickers": [ticker()]}])
    [tick] = parse_message(raw, receive_us=RECEIVED).ticks
    expected = ticker_to_tick(ticker(), event_us=parse_micros("2025-12-06T01:12:47.761914Z"),
                              receive_us=RECEIVED, sequence_num=7)
    assert tick == expected
    assert tick.volume_24h == 8344.1 and tick.best_ask_quantity == 0.018


def test_nanosecond_timestamps_round_trip_through_the_exchange_format() -> None:
    dt = to_micros(datetime(2025, 11, 30, 23, 56, 11, 637517, tzinfo=UTC))
    text = format_exchange(dt)
    assert text == "2025-11-30T23:56:11.637517000Z"
    assert parse_micros(text) == dt
    assert parse_micros("2025-11-30T23:56:11.637517999Z") == dt  # truncated, not rounded


def test_heartbeats_subscriptions_and_trades() -> None:
    hb = parse_message(envelope("heartbeats", [
        {"current_time": "2025-12-06 01:12:47.1 +0000 UTC", "heartbeat_counter": "3049"}]),
        receive_us=RECEIVED)
    assert (hb.kind, hb.heartbeat_counter, hb.ticks) == ("heartbeats", 3049, [])
    subs = parse_message(envelope("subscriptions", [
        {"subscriptions": {"ticker": ["BTC-USD"], "heartbeats": ["heartbeats"]}}]),
        receive_us=RECEIVED)
    assert subs.subscriptions == {"ticker": ["BTC-USD"], "heartbeats": ["heartbeats"]}
    trades = parse_message(envelope("market_trades", [{"type": "update", "trades": [
        {"trade_id": "1", "product_id": "BTC-USD", "price": "89000.1", "size": "0.01",
         "side": "BUY", "time": "2025-12-06T01:12:47.5Z"},
        {"trade_id": "2", "product_id": "BTC-USD", "price": "89000.2", "size": "0.02",
         "side": "SELL", "time": "2025-12-06T01:12:47.6Z"}]}]), receive_us=RECEIVED)
    assert trades.kind == "market_trades"
    assert [t.trade_id for t in trades.trades] == ["1", "2"]
    assert trades.product_id == "BTC-USD"


def test_error_and_unknown_messages() -> None:
    error = parse_message(b'{"type": "error", "message": "Failure to subscribe"}',
                          receive_us=RECEIVED)
    assert (error.kind, error.error) == ("error", "Failure to subscribe")
    unknown_type = parse_message(b'{"type": "notice"}', receive_us=RECEIVED)
    assert (unknown_type.kind, unknown_type.channel) == ("unknown", "notice")
    unknown_channel = parse_message(envelope("l2_data", [{"type": "snapshot"}], seq=3),
                                    receive_us=RECEIVED)
    assert (unknown_channel.kind, unknown_channel.channel) == ("unknown", "l2_data")
    assert unknown_channel.sequence_num == 3  # still counts for gap detection


@pytest.mark.parametrize(("raw", "reason"), [
    (b'{"channel": "ticker", "timest', "invalid_json"),
    (b"not json", "invalid_json"),
    (b"[1, 2]", "not_an_object"),
    (b"{}", "bad_envelope"),
    (b'{"channel": 5}', "bad_envelope"),
    (orjson.dumps({"channel": "ticker", "timestamp": "yesterday", "sequence_num": 1,
                   "events": []}), "bad_envelope"),
    (orjson.dumps({"channel": "ticker", "timestamp": "2025-12-06T01:12:47Z",
                   "events": []}), "bad_envelope"),
    (orjson.dumps({"channel": "ticker", "timestamp": "2025-12-06T01:12:47Z",
                   "sequence_num": -1, "events": []}), "bad_envelope"),
    (orjson.dumps({"channel": "ticker", "timestamp": "2025-12-06T01:12:47Z",
                   "sequence_num": 1, "events": {}}), "bad_envelope"),
    (envelope("ticker", [{"type": "partial", "tickers": []}]), "bad_event"),
    (envelope("ticker", [{"type": "update"}]), "bad_event"),
    (envelope("heartbeats", [{"heartbeat_counter": "many"}]), "bad_event"),
    (envelope("market_trades", [{"type": "update", "trades": [{"trade_id": "1"}]}]),
     "bad_trade"),
])
def test_malformed_messages_raise_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(MalformedMessage) as caught:
        parse_message(raw, receive_us=RECEIVED)
    assert caught.value.reason == reason


def test_bad_tickers_are_reported_and_good_ones_kept() -> None:
    raw = envelope("ticker", [{"type": "update", "tickers": [
        ticker(), {"product_id": "BTC-USD", "price": "0"}, "junk", ticker(price="89400")]}])
    message = parse_message(raw, receive_us=RECEIVED)
    assert [t.price for t in message.ticks] == [89387.88, 89400.0]
    assert len(message.bad_tickers) == 2
    assert message.ticks[1].record_id.endswith(":3")  # positions are kept


def test_sequence_tracker_counts_missing_messages() -> None:
    tracker = SequenceTracker()
    assert [tracker.observe(n) for n in (0, 1, 2, 5, 6, 6, 4, 10)] == [0, 0, 0, 2, 0, 0, 0, 3]
    assert tracker.missing == 5
    assert tracker.regressions == 2
    late_start = SequenceTracker()
    assert late_start.observe(3) == 3  # the counter starts at 0 on every connection
