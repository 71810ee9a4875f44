"""The tick: one ticker update of one product, normalised. The one value every
stage passes around: ingest produces it, ``ticks.raw`` carries it (see
:mod:`cryptovol.core.codec`), the features engine consumes it. Times are integer
epoch microseconds (see :mod:`cryptovol.core.timestamps`)."""

from __future__ import annotations

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
