"""The tick: one ticker update of one product, normalised. The one value every
stage passes around: ingest produces it, ``ticks.raw`` carries it (see
:mod:`cryptovol.core.codec`), the features engine consumes it. Times are integer
epoch microseconds (see :mod:`cryptovol.core.timestamps`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal, NamedTuple

Source = Literal["live", "replay", "fake"]
EventType = Literal["snapshot", "update"]


class Tick(NamedTuple):
    record_id: str  # stable id: product, exchange event time (us), position in the message
    product_id: str
    event_us: int  # exchange envelope time
    receive_us: int  # local receive time
    price: float
    best_bid: float | None = None
    best_ask: float | None = None
    best_bid_quantity: float | None = None
    best_ask_quantity: float | None = None
    sequence_num: int | None = None  # exchange per-connection counter
    event_type: EventType = "update"
    source: Source = "live"
    volume_24h: float | None = None
    low_24h: float | None = None
    high_24h: float | None = None
    price_percent_chg_24h: float | None = None


def tick_record_id(product_id: str, event_us: int, index: int = 0) -> str:
    """Stable id of a tick: product, exchange event time in exact microseconds, and
    the position of the ticker inside its exchange message (several tickers can
    share one envelope timestamp)."""
    return f"{product_id}:{event_us}:{index}"


#: No tick this pipeline reads is older: Coinbase's exchange opened in 2015.
EARLIEST_EVENT_TIME = datetime(2015, 1, 1, tzinfo=UTC)
#: How far the exchange's clock may run ahead of the receiving host's.
MAX_CLOCK_AHEAD = timedelta(minutes=5)
_EARLIEST_US = (EARLIEST_EVENT_TIME - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
_AHEAD_US = MAX_CLOCK_AHEAD // timedelta(microseconds=1)


def implausible_event_time(event_us: int, receive_us: int) -> str | None:
    """Why an exchange event time cannot be right, or None. Such a time would
    restart its product's windows twice (on it, and again on the next good tick),
    so ticks carrying one are refused wherever ticks enter: the Coinbase parser,
    the ``ticks.raw`` decoder and schema."""
    if event_us < _EARLIEST_US:
        return f"event_time is before {EARLIEST_EVENT_TIME:%Y-%m-%d}"
    if event_us > receive_us + _AHEAD_US:
        return (f"event_time is {(event_us - receive_us) / 1e6:.0f} s after receive_time "
                f"(at most {MAX_CLOCK_AHEAD.total_seconds():.0f} s)")
    return None
