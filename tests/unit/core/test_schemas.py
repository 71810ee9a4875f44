"""The message contracts: normalisation of exchange tickers, validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from cryptovol.core.coinbase import ticker_to_tick
from cryptovol.core.schemas import FeatureRow, PredictionRecord, RawTick
from cryptovol.core.ticks import EARLIEST_EVENT_TIME, MAX_CLOCK_AHEAD, tick_record_id
from cryptovol.core.timestamps import to_micros

T0 = datetime(2025, 12, 6, 1, 12, 47, 761914, tzinfo=UTC)
T0_US = to_micros(T0)
TICKER = {"type": "ticker", "product_id": "BTC-USD", "price": "89387.88", "best_bid": "89388.37",
          "best_ask": "89390", "best_bid_quantity": "0.01949308", "best_ask_quantity": "0.019",
          "volume_24_h": "8344.1", "low_24_h": "88099.05", "high_24_h": "92716.42",
          "price_percent_chg_24_h": "-3.29"}


def test_ticker_normalisation_keeps_every_number_and_the_times():
    tick = ticker_to_tick(TICKER, event_us=T0_US, receive_us=T0_US + 40_000,
                          sequence_num=7, event_type="snapshot", index=2)
    assert tick.price == 89387.88 and tick.best_ask == 89390.0
    assert tick.best_bid_quantity == pytest.approx(0.01949308)
    assert tick.volume_24h == 8344.1 and tick.price_percent_chg_24h == -3.29
    assert (tick.sequence_num, tick.event_type) == (7, "snapshot")
    assert (tick.event_us, tick.receive_us) == (T0_US, T0_US + 40_000)
    assert tick.record_id == tick_record_id("BTC-USD", T0_US, 2)


@pytest.mark.parametrize("price", [None, "", "0", "-1", "abc"])
def test_ticker_without_a_usable_price_is_rejected(price):
    with pytest.raises(ValueError):
        ticker_to_tick({**TICKER, "price": price}, event_us=T0_US, receive_us=T0_US)


def test_feature_and_prediction_records_validate():
    row = FeatureRow(record_id="r", product_id="BTC-USD", event_time=T0, receive_time=T0,
                     warmup=False, features={"rv_60s": 0.001, "ret_mean": None})
    assert FeatureRow.model_validate_json(row.model_dump_json()) == row
    with pytest.raises(ValidationError):
        PredictionRecord(record_id="r", product_id="BTC-USD", event_time=T0, predicted_time=T0,
                         score=0.4, spike=False, threshold=0.5, model_variant="nonsense",
                         model_version="v1", api_latency_ms=1.0, e2e_latency_ms=2.0)


@pytest.mark.parametrize("price", ["NaN", "Infinity", "1e400"])
def test_ticker_with_a_price_that_is_not_finite_is_rejected(price):
    with pytest.raises(ValueError, match="positive finite price"):
        ticker_to_tick({**TICKER, "price": price}, event_us=T0_US, receive_us=T0_US)


@pytest.mark.parametrize("product", [None, "", 7])
def test_ticker_without_a_product_id_is_rejected(product):
    with pytest.raises(ValueError, match="product id"):
        ticker_to_tick({**TICKER, "product_id": product}, event_us=T0_US, receive_us=T0_US)


@pytest.mark.parametrize(("event_time", "why"), [
    (datetime(2999, 1, 1, tzinfo=UTC), "after receive_time"),
    (T0 + MAX_CLOCK_AHEAD + timedelta(seconds=1), "after receive_time"),
    (datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC), "before 2015"),
])
def test_event_times_no_exchange_clock_can_give_are_rejected(event_time, why):
    with pytest.raises(ValueError, match=why):
        ticker_to_tick(TICKER, event_us=to_micros(event_time), receive_us=T0_US)
    message = {"record_id": "r", "product_id": "BTC-USD", "event_time": event_time,
               "receive_time": T0, "price": 1.0}
    with pytest.raises(ValidationError, match=why):
        RawTick.model_validate(message)
    # within the clock's allowance, and anything since 2015 (replays), is fine
    ticker_to_tick(TICKER, event_us=to_micros(T0 + MAX_CLOCK_AHEAD), receive_us=T0_US)
    ticker_to_tick(TICKER, event_us=to_micros(EARLIEST_EVENT_TIME), receive_us=T0_US)


def test_records_of_another_schema_version_are_refused():
    tick = {"record_id": "r", "product_id": "BTC-USD", "event_time": T0, "receive_time": T0,
            "price": 1.0}
    assert RawTick.model_validate(tick).schema_version == 1  # absent: the current one
    with pytest.raises(ValidationError, match="schema_version 2 is not supported"):
        RawTick.model_validate(tick | {"schema_version": 2})
    row = {"record_id": "r", "product_id": "BTC-USD", "event_time": T0, "receive_time": T0,
           "warmup": False, "features": {"n": 1.0}}
    with pytest.raises(ValidationError, match="schema_version 0 is not supported"):
        FeatureRow.model_validate(row | {"schema_version": 0})
    with pytest.raises(ValidationError):
        RawTick.model_validate(tick | {"product_id": ""})
