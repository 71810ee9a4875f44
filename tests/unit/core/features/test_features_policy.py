"""Late, out-of-order, duplicate ticks, gaps and clock jumps; rebuilding state
from a bounded read-back."""

from __future__ import annotations

from features_testkit import T0, tick, tick_streams
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryptovol.core.features import FEATURE_NAMES, FeatureConfig, FeatureEngine
from cryptovol.core.features.engine import (
    DUPLICATE,
    FIRST,
    GAP,
    JUMP,
    LATE,
    MALFORMED,
    OK,
    OUT_OF_ORDER,
)
from cryptovol.core.ticks import Tick

S = 1_000_000  # one second in microseconds


def feed(engine: FeatureEngine, t: int, rid: str, price: float = 100.0, rx: int | None = None):
    res = engine.step(tick("BTC-USD", rid, t, price, received=rx))
    return res, engine.last_outcome


def test_exact_duplicates_are_dropped_by_record_id() -> None:
    engine = FeatureEngine()
    assert feed(engine, T0, "a")[1] == FIRST
    assert feed(engine, T0 + S, "b")[1] == OK
    assert feed(engine, T0 + S, "b") == (None, DUPLICATE)
    assert feed(engine, T0, "a") == (None, DUPLICATE)


def test_slightly_out_of_order_tick_is_clamped_not_dropped() -> None:
    engine = FeatureEngine()
    feed(engine, T0, "a")
    feed(engine, T0 + 5 * S, "b")
    res, outcome = feed(engine, T0 + 4_500_000, "c", price=101.0)
    assert outcome == OUT_OF_ORDER
    assert res is not None and res.time_us == T0 + 5 * S
    assert dict(zip(FEATURE_NAMES, res.values, strict=True))["dt_prev"] == 0.0


def test_tick_older_than_the_grace_is_late() -> None:
    engine = FeatureEngine(FeatureConfig(grace_s=1.0))
    feed(engine, T0, "a")
    feed(engine, T0 + 5 * S, "b")
    assert feed(engine, T0 + 3 * S, "c") == (None, LATE)
    assert feed(engine, T0 + 5 * S + 1, "d")[1] == OK


def test_gap_starts_a_new_segment_and_warm_up_again() -> None:
    engine = FeatureEngine(FeatureConfig(gap_s=10.0))
    t = T0
    for k in range(190):  # 1890 s, ticks 10 s apart: exactly the gap limit, no gap
        res, _ = feed(engine, t, f"a{k}")
        t += 10 * S
    assert res is not None and res.segment == 0
    assert res.warmup  # 300 s window full, but the 30-minute context holds 180 values < 300
    res, outcome = feed(engine, t - 10 * S + 10 * S + 1, "gap")
    assert outcome == GAP and res is not None and res.warmup and res.segment == 1
    values = dict(zip(FEATURE_NAMES, res.values, strict=True))
    assert values["n_300s"] == 1.0
    assert values["rv60_count_30m"] == 179.0  # the context spans the gap (t = 110 .. 1890 s)


def test_backwards_clock_jump_resets_but_a_redelivered_old_tick_does_not() -> None:
    engine = FeatureEngine(FeatureConfig(jump_s=300.0))
    for k in range(5):
        feed(engine, T0 + k * S, f"a{k}")
    # received long ago: an old tick delivered again
    assert feed(engine, T0 - 3600 * S, "old", rx=T0 - 3600 * S) == (None, LATE)
    # received now with an event time an hour back: the clock jumped
    res, outcome = feed(engine, T0 - 3600 * S, "jump", rx=T0 + 5 * S)
    assert outcome == JUMP and res is not None and res.segment == 1 and res.warmup
    assert feed(engine, T0 - 3599 * S, "after")[1] == OK


def test_bad_prices_are_dropped_not_raised() -> None:
    engine = FeatureEngine()
    for price in (0.0, -1.0, float("nan"), float("inf")):
        assert engine.step(tick("X", "r", T0, price)) is None
        assert engine.last_outcome == MALFORMED
    res = engine.step(tick("X", "q", T0, 100.0, bid=float("inf"), ask=float("nan"),
                           bid_qty=float("inf"), ask_qty=1.0))
    f = dict(zip(FEATURE_NAMES, res.values, strict=True))  # type: ignore[union-attr]
    assert f["spread_bps_30s"] != f["spread_bps_30s"] and f["imbalance_30s"] != f["imbalance_30s"]


def test_products_are_independent() -> None:
    engine = FeatureEngine()
    engine.step(tick("A", "a", T0, 100.0))
    res = engine.step(tick("B", "b", T0 + 60 * S, 200.0))
    assert engine.last_outcome == FIRST and res is not None and res.segment == 0
    assert engine.step(tick("A", "a2", T0 + S, 101.0)) is not None
    assert engine.last_outcome == OK


def _rows_from(ticks: list[Tick], start: int) -> dict[int, tuple]:
    """Run a fresh engine over ``ticks[start:]``; rows by stream position."""
    engine = FeatureEngine()
    rows = {}
    for k in range(start, len(ticks)):
        res = engine.step(ticks[k])
        if res is not None:
            rows[k] = (res.time_us, res.warmup, res.values)
    return rows


def _same(a: tuple, b: tuple) -> bool:
    # NaN-aware bitwise equality of (time, warmup, values)
    return a[:2] == b[:2] and all(x == y or (x != x and y != y)
                                  for x, y in zip(a[2], b[2], strict=True))


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(ticks=tick_streams(max_ticks=240, calm=True), cut=st.floats(0.2, 1.0),
       wild=tick_streams(max_ticks=60))
def test_state_rebuilt_from_a_bounded_read_back_is_bit_identical(
    ticks: list[Tick], cut: float, wild: list[Tick]
) -> None:
    """What a restarted consumer does: start a fresh engine ``rebuild_lookback_s``
    of event time before the first uncommitted tick of each product; from that
    tick on, the same ticks are accepted and every row equals an uninterrupted
    run's, bit for bit."""
    ticks = ticks + [t._replace(record_id=t.record_id + "w",
                                event_us=t.event_us - T0 + ticks[-1].event_us) for t in wild]
    c = min(int(len(ticks) * cut), len(ticks) - 1)
    lookback = round(FeatureConfig().rebuild_lookback_s * S)
    start = c
    for product in {tk.product_id for tk in ticks[c:]}:  # each product keeps its own clock
        first = next(tk.event_us for tk in ticks[c:] if tk.product_id == product)
        start = min(start, next(k for k, tk in enumerate(ticks)
                                if tk.product_id == product and tk.event_us >= first - lookback))
    full = _rows_from(ticks, 0)
    rebuilt = _rows_from(ticks, start)
    after = [k for k in full if k >= c]
    assert after == [k for k in rebuilt if k >= c]
    for k in after:
        assert _same(full[k], rebuilt[k]), k


def test_a_short_read_back_would_not_be_identical() -> None:
    """The read-back length matters: 60 s is not enough for the 300 s window."""
    ticks = [tick("X", f"r{k}", T0 + k * 500_000, 100.0 * (1.0001 ** (k % 7)))
             for k in range(1500)]
    c = 1400
    full = _rows_from(ticks, 0)
    short = _rows_from(ticks, c - 120)  # 60 s back
    assert not _same(full[c], short[c])
    ok = _rows_from(ticks, max(0, c - 2 * round(FeatureConfig().rebuild_lookback_s)))
    assert _same(full[c], ok[c])
