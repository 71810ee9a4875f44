"""Long runs: exact running sums do not drift, where float running sums do."""

from __future__ import annotations

import itertools
import math

import pytest
from features_reference import _features
from features_testkit import T0, tick

from cryptovol.core.features import FEATURE_NAMES, FeatureEngine
from cryptovol.core.ticks import Tick

RV30 = FEATURE_NAMES.index("rv_30s")


def adversarial_prices(n: int) -> list[float]:
    """Quiet stretches, flat stretches, and a +-25 % jump every 6,000 ticks:
    the pattern that makes add-then-subtract float sums leave residue."""
    prices, p = [], 50_000.0
    for k in range(n):
        phase = k % 6000
        if phase == 0:
            p *= 1.25 if (k // 6000) % 2 else 0.8
        elif phase < 3000:
            p *= 1.0 + (1e-7 if k % 3 else -1e-7)
        prices.append(p)  # flat for the second half of each cycle
    return prices


def _tick(k: int, p: float, spacing_us: int) -> Tick:
    return tick("BTC-USD", str(k), T0 + k * spacing_us, p, p * 0.99999, p * 1.00001, 1.0, 2.0)


def check_long_run(n: int, spacing_us: int, checkpoints: set[int]) -> None:
    """Feed ``n`` ticks; at each checkpoint compare every feature with a fresh
    ``fsum`` over the ticks the windows can see."""
    engine = FeatureEngine()
    prices = adversarial_prices(n)
    per_window = 300_000_000 // spacing_us
    step = engine.step
    for k, p in enumerate(prices):
        res = step(_tick(k, p, spacing_us))
        if k not in checkpoints:
            continue
        lo = max(0, k - per_window - 2)
        want = _features([(tk, tk.event_us) for tk in
                          (_tick(j, prices[j], spacing_us) for j in range(lo, k + 1))])
        for name, value in zip(FEATURE_NAMES, res.values, strict=True):
            if name not in want:
                continue  # the 30-minute context: tests/unit/features/test_features_context.py
            if name in ("n", "n_300s", "n_60s", "n_30s") or math.isnan(want[name]):
                continue  # counts of a tail start differ only when the tail is the segment
            assert math.isclose(value, want[name], rel_tol=1e-12, abs_tol=1e-18), (k, name)
        # flat for 30 s after the jump left the window: exactly zero, not residue
        if k % 6000 > 3000 + 300:
            assert res.values[RV30] == 0.0


def test_no_drift_over_a_hundred_thousand_ticks() -> None:
    check_long_run(100_000, 100_000, set(range(3500, 100_000, 2999)))


@pytest.mark.slow
def test_no_drift_over_two_million_ticks() -> None:
    n = 2_000_000
    check_long_run(n, 100_000, set(range(n - 30_000, n, 4999)))


def test_a_float_running_sum_would_drift_on_the_same_data() -> None:
    """The same add/subtract schedule with plain floats leaves residue where the
    true sum is exactly zero, which is why the engine keeps integer sums."""
    prices = adversarial_prices(20_000)
    returns = [0.0] + [math.log(b / a) for a, b in itertools.pairwise(prices)]
    window, running, worst = 300, 0.0, 0.0
    for k, r in enumerate(returns):
        running += r * r
        if k >= window:
            running -= returns[k - window] ** 2
        if all(x == 0.0 for x in returns[max(0, k - window + 1): k + 1]):
            worst = max(worst, abs(running))
    assert worst > 0.0  # the float sum did not come back to zero
