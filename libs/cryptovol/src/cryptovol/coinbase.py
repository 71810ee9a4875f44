"""Normalisation of Coinbase Advanced Trade ticker data into :class:`RawTick`.

Pure functions: the live client, the replay source and the offline feature
path all turn exchange tickers into ticks here, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Literal

from cryptovol.schemas import RawTick, tick_record_id

Source = Literal["live", "replay", "fake"]


def _number(raw: Mapping[str, object], key: str) -> float | None:
    value = raw.get(key)
    if value is None or value == "":
        return None
    return float(value)  # type: ignore[arg-type]


def ticker_to_tick(
    raw: Mapping[str, object],
    *,
    event_time: datetime,
    receive_time: datetime,
    sequence_num: int | None = None,
    event_type: Literal["snapshot", "update"] = "update",
    index: int = 0,
    source: Source = "live",
) -> RawTick:
    """One element of ``events[].tickers[]`` as a tick. Raises ``ValueError``
    (or ``KeyError``) on a ticker without a product or a usable price."""
    product_id = str(raw["product_id"])
    price = _number(raw, "price")
    if price is None or not price > 0:
        raise ValueError(f"ticker for {product_id} has no positive price: {raw.get('price')!r}")
    return RawTick(
        record_id=tick_record_id(product_id, event_time, index),
        product_id=product_id,
        event_time=event_time,
        receive_time=receive_time,
        sequence_num=sequence_num,
        event_type=event_type,
        source=source,
        price=price,
        best_bid=_number(raw, "best_bid"),
        best_ask=_number(raw, "best_ask"),
        best_bid_quantity=_number(raw, "best_bid_quantity"),
        best_ask_quantity=_number(raw, "best_ask_quantity"),
        volume_24h=_number(raw, "volume_24_h"),
        low_24h=_number(raw, "low_24_h"),
        high_24h=_number(raw, "high_24_h"),
        price_percent_chg_24h=_number(raw, "price_percent_chg_24_h"),
    )
