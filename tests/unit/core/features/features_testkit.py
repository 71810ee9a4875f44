"""Tick-stream generators and comparison helpers for the feature tests."""

from __future__ import annotations

import math
import random

from features_reference import RefRow
from hypothesis import strategies as st

from cryptovol.core.features import CONTEXT_FEATURES, FEATURE_NAMES, FeatureEngine, StepResult
from cryptovol.core.ticks import Tick

T0 = 1_764_000_000_000_000  # an epoch in microseconds
# Context features are functions of many RV values, each of which may differ from
# the reference's in its last bit: a spread of logarithms amplifies that.
_TOLERANCE = {name: (1e-9, 1e-12) for name in CONTEXT_FEATURES}


def tick(product_id: str, record_id: str, t: int, price: float, bid: float | None = None,
         ask: float | None = None, bid_qty: float | None = None, ask_qty: float | None = None,
         received: int | None = None) -> Tick:
    """A tick at event time ``t``, received at ``received`` (by default: at ``t``)."""
    return Tick(record_id, product_id, t, t if received is None else received, price, bid, ask,
                bid_qty, ask_qty)



def run_engine(engine: FeatureEngine, ticks: list[Tick]) -> list[tuple[Tick, StepResult]]:
    out = []
    for tk in ticks:
        res = engine.step(tk)
        if res is not None:
            out.append((tk, res))
    return out


def assert_matches_reference(got: list[tuple[Tick, StepResult]], want: list[RefRow]) -> None:
    assert [tk.record_id for tk, _ in got] == [r.record_id for r in want]
    for (_tk, res), ref in zip(got, want, strict=True):
        assert res.time_us == ref.t
        assert res.warmup == ref.warmup
        assert res.segment == ref.segment
        for name, value in zip(FEATURE_NAMES, res.values, strict=True):
            expected = ref.features[name]
            if math.isnan(expected):
                assert math.isnan(value), (name, value, ref)
            else:
                # exact sums round once, fsum-of-rounded-terms may differ in the last bit
                rel, absolute = _TOLERANCE.get(name, (1e-12, 1e-15))
                assert math.isclose(value, expected, rel_tol=rel, abs_tol=absolute), (
                    name, value, expected, ref.record_id)


@st.composite
def tick_streams(
    draw: st.DrawFn, max_ticks: int = 200, products: int = 2, calm: bool = False
) -> list[Tick]:
    """Streams with irregular spacing, gaps, out-of-order and late ticks,
    clock jumps, redeliveries and duplicates, missing quotes and flat prices.
    The kinds of steps come from hypothesis, their sizes from a seeded RNG
    (keeps long streams cheap to generate)."""
    special = ["burst", "ooo", "late", "redeliver", "dup"]
    if calm:  # long enough to warm up
        kinds = ["step"] * 8 + ["pause"] * 8 + special
    else:  # breaks segments often
        kinds = ["step"] * 10 + ["pause"] * 4 + special + ["gap", "jump"]
    plan = draw(st.lists(st.sampled_from(kinds), min_size=max_ticks // 2 if calm else 10,
                         max_size=max_ticks))
    rnd = random.Random(draw(st.integers(0, 2**32)))
    names = [f"P{k}-USD" for k in range(products)]
    t = {p: T0 for p in names}
    rx = {p: T0 for p in names}
    price = {p: rnd.uniform(10.0, 100_000.0) for p in names}
    ticks: list[Tick] = []
    for kind in plan:
        p = rnd.choice(names)
        if kind == "dup" and ticks:
            ticks.append(rnd.choice(ticks[-10:]))
            continue
        if kind == "redeliver" and ticks:  # an old tick, received long ago
            old = rnd.choice(ticks)
            ticks.append(old._replace(record_id=old.record_id + "r",
                                      best_bid=None, best_ask=None, best_bid_quantity=None,
                                      best_ask_quantity=None))
            continue
        dt = {
            "step": rnd.randint(0, 4_000_000),
            "pause": rnd.choice([10_000_000, rnd.randint(6_000_000, 10_000_000)]),  # 10 s: no gap
            "burst": rnd.randint(0, 50_000),
            "gap": rnd.choice([10_000_001, rnd.randint(10_000_001, 900_000_000)]),
            "ooo": -rnd.randint(1, 1_000_000),
            "late": -rnd.randint(1_000_001, 40_000_000),
            "jump": -rnd.randint(300_000_001, 3_600_000_000),
        }.get(kind, 0)
        rx[p] += max(dt, 1)
        if kind in ("ooo", "late"):  # one stray tick; the product's clock stays
            tick_time = t[p] + dt
        else:
            t[p] += dt
            tick_time = t[p]
        price[p] *= math.exp(rnd.choice([0.0, 0.0, 1e-5, -1e-5, 3e-4, -3e-4, 0.02, -0.02]))
        quotes = rnd.random() < 0.8
        bid = price[p] * (1 - rnd.uniform(0, 1e-3)) if quotes else None
        ask = price[p] * (1 + rnd.uniform(0, 1e-3)) if quotes else None
        bq = rnd.choice([None, 0.0, rnd.uniform(0, 5), rnd.uniform(0, 5)])
        aq = rnd.choice([None, 0.0, rnd.uniform(0, 5), rnd.uniform(0, 5)])
        ticks.append(
            tick(p, f"{p}:{tick_time}:{len(ticks)}", tick_time, price[p], bid, ask, bq, aq, rx[p]))
    return ticks
