"""Coinbase Advanced Trade protocol: normalisation of tickers into
:class:`~cryptovol.core.ticks.Tick` values and parsing of whole WebSocket
messages (ticker, heartbeats, subscriptions, market_trades, errors, unknown
types).

Pure functions: the live client, the replay source and the offline feature
path all turn exchange tickers into ticks here, so they cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import orjson

from cryptovol.core.ticks import EventType, Source, Tick, implausible_event_time, tick_record_id
from cryptovol.core.timestamps import parse_micros


def _number(raw: Mapping[str, object], key: str) -> float | None:
    value = raw.get(key)
    if value is None or value == "":
        return None
    return float(value)  # type: ignore[arg-type]


def ticker_to_tick(
    raw: Mapping[str, object],
    *,
    event_us: int,
    receive_us: int,
    sequence_num: int | None = None,
    event_type: EventType = "update",
    index: int = 0,
    source: Source = "live",
) -> Tick:
    """One element of ``events[].tickers[]`` as a tick (times in epoch
    microseconds). Raises ``ValueError`` (or ``KeyError``) on a ticker without a
    product or a positive finite price, or whose event time no exchange clock
    can give (see :func:`cryptovol.core.schemas.implausible_event_time`)."""
    product_id = raw["product_id"]
    if not isinstance(product_id, str) or not product_id:
        raise ValueError(f"ticker without a product id: {product_id!r}")
    price = _number(raw, "price")
    if price is None or not 0 < price < math.inf:
        raise ValueError(f"ticker for {product_id} has no positive finite price: "
                         f"{raw.get('price')!r}")
    why = implausible_event_time(event_us, receive_us)
    if why:
        raise ValueError(f"ticker for {product_id}: {why}")
    return Tick(
        record_id=tick_record_id(product_id, event_us, index),
        product_id=product_id,
        event_us=event_us,
        receive_us=receive_us,
        price=price,
        best_bid=_number(raw, "best_bid"),
        best_ask=_number(raw, "best_ask"),
        best_bid_quantity=_number(raw, "best_bid_quantity"),
        best_ask_quantity=_number(raw, "best_ask_quantity"),
        sequence_num=sequence_num,
        event_type=event_type,
        source=source,
        volume_24h=_number(raw, "volume_24_h"),
        low_24h=_number(raw, "low_24_h"),
        high_24h=_number(raw, "high_24_h"),
        price_percent_chg_24h=_number(raw, "price_percent_chg_24_h"),
    )


# --- Advanced Trade WebSocket envelopes -------------------------------------------------------
#
# Every server message is an envelope
#   {"channel": ..., "client_id": "", "timestamp": "<RFC 3339, 9 fractional digits>Z",
#    "sequence_num": <per-connection counter from 0>, "events": [...]}
# except errors, which arrive as {"type": "error", "message": ...}.

MessageKind = Literal["ticker", "heartbeats", "subscriptions", "market_trades", "error", "unknown"]
KNOWN_CHANNELS = frozenset({"ticker", "heartbeats", "subscriptions", "market_trades"})
TICKER_EVENT_TYPES = frozenset({"snapshot", "update"})


class MalformedMessage(ValueError):
    """A message that cannot be understood. ``reason`` is a short, fixed code fit for a
    metric label; the text says what exactly was wrong."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Trade:
    """One element of a ``market_trades`` event."""

    trade_id: str
    product_id: str
    price: float
    size: float
    side: str
    time_us: int


@dataclass(slots=True)
class ExchangeMessage:
    """One server message, fully parsed. ``ticks`` holds every ticker of every event;
    tickers that could not be normalised are listed in ``bad_tickers`` (the others
    are still usable)."""

    kind: MessageKind
    channel: str
    timestamp_us: int | None = None  # the envelope's, in epoch microseconds
    sequence_num: int | None = None
    ticks: list[Tick] = field(default_factory=list)
    trades: list[Trade] = field(default_factory=list)
    heartbeat_counter: int | None = None
    subscriptions: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None
    bad_tickers: list[str] = field(default_factory=list)

    @property
    def product_id(self) -> str:
        """The product the message is about ("" for channels without one)."""
        if self.ticks:
            return self.ticks[0].product_id
        if self.trades:
            return self.trades[0].product_id
        return ""


def decode_message(raw: bytes | str) -> dict:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage("invalid_json", str(exc)) from None
    if not isinstance(doc, dict):
        raise MalformedMessage("not_an_object", f"top-level {type(doc).__name__}")
    return doc


def parse_message(
    raw: bytes | str | Mapping[str, object],
    *,
    receive_us: int,
    source: Source = "live",
) -> ExchangeMessage:
    """Parse one server message (raw text or an already decoded object) received
    at ``receive_us`` (epoch microseconds).

    Raises :class:`MalformedMessage` when the message itself is unusable. Unknown
    channels and types come back as ``kind="unknown"`` so callers can ignore them.
    """
    doc = raw if isinstance(raw, Mapping) else decode_message(raw)
    channel = doc.get("channel")
    if channel is None:
        kind = doc.get("type")
        if kind == "error":
            return ExchangeMessage("error", "error", error=str(doc.get("message") or doc))
        if isinstance(kind, str) and kind:
            return ExchangeMessage("unknown", kind)
        raise MalformedMessage("bad_envelope", "neither channel nor type")
    if not isinstance(channel, str):
        raise MalformedMessage("bad_envelope", f"channel is {type(channel).__name__}")
    try:
        timestamp = parse_micros(doc.get("timestamp"))  # type: ignore[arg-type]
    except ValueError as exc:
        raise MalformedMessage("bad_envelope", f"timestamp: {exc}") from None
    sequence_num = doc.get("sequence_num")
    if not isinstance(sequence_num, int) or isinstance(sequence_num, bool) or sequence_num < 0:
        raise MalformedMessage("bad_envelope", f"sequence_num {sequence_num!r}")
    events = doc.get("events")
    if not isinstance(events, list) or not all(isinstance(e, Mapping) for e in events):
        raise MalformedMessage("bad_envelope", "events is not a list of objects")
    message = ExchangeMessage(
        channel if channel in KNOWN_CHANNELS else "unknown",  # type: ignore[arg-type]
        channel, timestamp_us=timestamp, sequence_num=sequence_num,
    )
    if channel == "ticker":
        _parse_ticker_events(message, events, receive_us, source)
    elif channel == "heartbeats":
        _parse_heartbeats(message, events)
    elif channel == "subscriptions":
        for event in events:
            subs = event.get("subscriptions")
            if isinstance(subs, Mapping):
                for name, items in subs.items():
                    message.subscriptions[str(name)] = [str(i) for i in items or []]
    elif channel == "market_trades":
        _parse_trades(message, events)
    return message


def _parse_ticker_events(
    message: ExchangeMessage, events: list, receive_us: int, source: Source
) -> None:
    assert message.timestamp_us is not None
    index = 0
    for event in events:
        event_type = event.get("type")
        if event_type not in TICKER_EVENT_TYPES:
            raise MalformedMessage("bad_event", f"ticker event type {event_type!r}")
        tickers = event.get("tickers")
        if not isinstance(tickers, list):
            raise MalformedMessage("bad_event", "ticker event without a tickers list")
        for raw_ticker in tickers:
            # the index counts every ticker of the message, so ids stay unique even when a
            # bad ticker is skipped
            position, index = index, index + 1
            if not isinstance(raw_ticker, Mapping):
                message.bad_tickers.append(f"ticker {position} is not an object")
                continue
            try:
                message.ticks.append(ticker_to_tick(
                    raw_ticker, event_us=message.timestamp_us, receive_us=receive_us,
                    sequence_num=message.sequence_num, event_type=event_type,
                    index=position, source=source,
                ))
            except (ValueError, KeyError, TypeError) as exc:
                message.bad_tickers.append(f"ticker {position}: {exc!r}")


def _parse_heartbeats(message: ExchangeMessage, events: list) -> None:
    for event in events:
        counter = event.get("heartbeat_counter")
        try:
            message.heartbeat_counter = int(counter)  # a string in older documentation
        except (TypeError, ValueError):
            raise MalformedMessage("bad_event", f"heartbeat_counter {counter!r}") from None


def _parse_trades(message: ExchangeMessage, events: list) -> None:
    for event in events:
        trades = event.get("trades")
        if not isinstance(trades, list):
            raise MalformedMessage("bad_event", "market_trades event without a trades list")
        for trade in trades:
            try:
                message.trades.append(Trade(
                    trade_id=str(trade["trade_id"]), product_id=str(trade["product_id"]),
                    price=float(trade["price"]), size=float(trade["size"]),
                    side=str(trade.get("side", "")), time_us=parse_micros(trade["time"]),
                ))
            except (ValueError, KeyError, TypeError) as exc:
                raise MalformedMessage("bad_trade", repr(exc)) from None


class SequenceTracker:
    """Counts messages missing according to ``sequence_num`` on one connection.

    The counter starts at 0 on every connection, so a first message numbered 3 means
    three were lost. A number that does not move forward is a duplicate or a reset and
    is not counted as a gap."""

    def __init__(self) -> None:
        self.last: int | None = None
        self.missing = 0
        self.regressions = 0

    def observe(self, sequence_num: int) -> int:
        """Record one sequence number; return how many messages it shows missing."""
        expected = 0 if self.last is None else self.last + 1
        if sequence_num < expected:
            self.regressions += 1
            return 0
        gap = sequence_num - expected
        self.last = sequence_num
        self.missing += gap
        return gap
