"""Many products from one recording: re-labelled, shifted, scaled by exact powers
of two, so every product's features equal the recording's bit for bit while a
window that mixed two products could not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cryptovol.core.coinbase import ticker_to_tick
from cryptovol.core.features import FEATURE_NAMES, features_frame
from cryptovol.devtools.fake_exchange import load_feed
from cryptovol.devtools.products import (
    USD_PRODUCTS,
    ProductFanOut,
    price_exponent,
    product_names,
    scale_price,
)

REPO = Path(__file__).resolve().parents[3]
RECORDING = REPO / "data/coinbase-ticker/ticks_BTCUSD_20251130_235720.ndjson.gz"


@pytest.fixture(scope="module")
def base():
    return load_feed([RECORDING])


def as_ticks(feed):
    return [ticker_to_tick(t.raw, event_us=t.event_us, receive_us=t.event_us) for t in feed]


def test_names_are_real_usd_pairs_first_then_synthetic_and_all_distinct():
    assert product_names(3) == ["BTC-USD", "ETH-USD", "SOL-USD"]
    names = product_names(len(USD_PRODUCTS) + 5)
    assert len(set(names)) == len(names) and names[-1] == f"SYN{len(names) - 1:03d}-USD"
    with pytest.raises(ValueError):
        product_names(0)


def test_prices_scale_exactly_and_product_zero_is_the_recording():
    assert price_exponent(0) == 0 and {price_exponent(k) for k in range(9)} == set(range(-4, 5))
    assert scale_price("89387.88", 0) == "89387.88" and scale_price(None, 3) is None
    for exponent in range(-4, 5):
        assert float(scale_price("89387.88", exponent)) == 89387.88 * 2.0**exponent


def test_the_fan_out_is_in_time_order_with_every_tick_of_every_product(base):
    feed = ProductFanOut(base, product_names(7), shift_us=40_000)
    assert len(feed) == 7 * len(base)
    times = [t.event_us for t in feed]
    assert times == sorted(times)
    by_product: dict[str, list] = {}
    for tick in feed:
        by_product.setdefault(tick.raw["product_id"], []).append(tick)
    assert sorted(by_product) == sorted(product_names(7))
    assert by_product["BTC-USD"] == list(base)  # product 0 is untouched
    sol = by_product["SOL-USD"]  # product 2: +80 ms, prices x 4
    assert [t.event_us - b.event_us for t, b in zip(sol, base, strict=True)] \
        == [80_000] * len(base)
    assert float(sol[0].raw["best_bid"]) == float(base[0].raw["best_bid"]) * 4
    assert sol[0].raw["best_bid_quantity"] == base[0].raw["best_bid_quantity"]
    assert feed[-1] == feed[len(feed) - 1] and len(feed[:3]) == 3


def test_every_product_has_the_recordings_features_bit_for_bit_unless_mixed(base):
    names = product_names(9)
    feed = ProductFanOut(base, names)
    ticks = as_ticks(feed)
    frame = features_frame(ticks)
    reference = features_frame(as_ticks(base))[list(FEATURE_NAMES)].to_numpy()
    for name in names:
        got = frame[frame["product_id"] == name][list(FEATURE_NAMES)].to_numpy()
        assert np.array_equal(got, reference, equal_nan=True), name
    # the same ticks with two products' labels merged give other features
    mixed = [t._replace(product_id="BTC-USD") if t.product_id == "ETH-USD" else t
             for t in ticks]
    merged = features_frame(mixed)
    got = merged[merged["product_id"] == "BTC-USD"][list(FEATURE_NAMES)].to_numpy()
    assert got.shape != reference.shape or not np.array_equal(got, reference, equal_nan=True)
