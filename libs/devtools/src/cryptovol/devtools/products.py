"""Many products from one recording, for the fake exchange (``--products N``).

Coinbase lists hundreds of USD pairs; the recordings hold BTC-USD only. Product
``k`` of ``N`` serves every recorded tick ``i`` re-labelled, shifted in time by
``k * shift`` and with its prices (price, best bid and ask, 24 h and 52 w
ranges) multiplied by ``2 ** e_k``, ``e_k`` in ``-4..4`` (product 0 is the
recording itself):

- the products' ticks interleave, each at a realistic price level, and
  products sharing a partition share one clock (the shift is a fraction of a
  second), as the featurizer's read-back assumes;
- scaling by a power of two is exact in binary floating point, and every
  feature is a ratio of prices or a function of time differences, so each
  product's feature rows equal the recording's own offline rows bit for bit.
  A window that mixed two products' ticks would not: their price levels differ
  by a factor of 2 or more (or their times by the shift).

The sequence is lazy: ``N`` products of the whole recording are a few index
arrays, not ``N`` copies of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, overload

import numpy as np


class FeedTick(Protocol):
    """One tick of a feed: what :class:`cryptovol.devtools.fake_exchange.FeedTick` holds."""

    @property
    def event_us(self) -> int: ...
    @property
    def raw(self) -> dict: ...
    def __init__(self, event_us: int, raw: dict) -> None: ...

#: Real Coinbase USD pairs (names only); runs with more products add synthetic ones.
USD_PRODUCTS: tuple[str, ...] = (
    "BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "DOGE-USD", "ADA-USD", "AVAX-USD", "LINK-USD",
    "LTC-USD", "DOT-USD", "BCH-USD", "SHIB-USD", "UNI-USD", "XLM-USD", "ATOM-USD", "AAVE-USD",
    "NEAR-USD", "ETC-USD", "FIL-USD", "ICP-USD", "APT-USD", "ARB-USD", "OP-USD", "SUI-USD",
    "HBAR-USD", "ALGO-USD", "INJ-USD", "RNDR-USD", "GRT-USD", "MKR-USD", "SEI-USD", "TIA-USD",
    "CRV-USD", "SAND-USD", "MANA-USD", "AXS-USD", "EOS-USD", "XTZ-USD", "FET-USD", "LDO-USD",
    "IMX-USD", "SNX-USD", "COMP-USD", "BAT-USD", "ZEC-USD", "1INCH-USD", "ENS-USD", "CHZ-USD",
    "KSM-USD", "YFI-USD", "EGLD-USD", "FLOW-USD", "MINA-USD", "QNT-USD", "ROSE-USD", "STX-USD",
    "ZRX-USD", "ANKR-USD", "BONK-USD", "PEPE-USD",
)
PRICE_FIELDS = ("price", "best_bid", "best_ask", "low_24_h", "high_24_h", "low_52_w",
                "high_52_w")


def product_names(n: int) -> list[str]:
    """``n`` product ids: real USD pairs first, then ``SYN<k>-USD``."""
    if n < 1:
        raise ValueError("need at least one product")
    names = list(USD_PRODUCTS[:n])
    names += [f"SYN{k:03d}-USD" for k in range(len(names), n)]
    return names


def price_exponent(k: int) -> int:
    """Product ``k``'s prices are the recording's times ``2 ** price_exponent(k)``."""
    return (k + 4) % 9 - 4


def scale_price(value: object, exponent: int) -> object:
    """A recorded price (a decimal string) times ``2 ** exponent``, exactly."""
    if not exponent or value in (None, ""):
        return value
    return repr(float(value) * 2.0**exponent)  # type: ignore[arg-type]


class ProductFanOut(Sequence["FeedTick"]):
    """``base`` (one product's feed, in time order) served as ``len(products)``
    products, merged in event-time order."""

    def __init__(self, base: Sequence[FeedTick], products: Sequence[str],
                 shift_us: int = 5_000) -> None:
        self.base = base
        self.products = list(products)
        self.shift_us = shift_us
        times = np.fromiter((t.event_us for t in base), np.int64, len(base))
        k = np.arange(len(self.products), dtype=np.int64)
        merged = (times[None, :] + k[:, None] * self.shift_us).ravel()  # product-major
        self._order = np.argsort(merged, kind="stable")
        self._n = len(base)

    def __len__(self) -> int:
        return len(self._order)

    @overload
    def __getitem__(self, index: int) -> FeedTick: ...
    @overload
    def __getitem__(self, index: slice) -> list[FeedTick]: ...

    def __getitem__(self, index: int | slice) -> FeedTick | list[FeedTick]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        k, i = divmod(int(self._order[index]), self._n)
        return self.tick(k, i)

    def tick(self, k: int, i: int) -> FeedTick:
        """Recorded tick ``i`` as product ``k``."""
        tick = self.base[i]
        if k == 0 and tick.raw.get("product_id") == self.products[0]:
            return tick
        exponent = price_exponent(k)
        raw = dict(tick.raw)
        raw["product_id"] = self.products[k]
        for name in PRICE_FIELDS:
            if name in raw:
                raw[name] = scale_price(raw[name], exponent)
        return type(tick)(tick.event_us + k * self.shift_us, raw)
