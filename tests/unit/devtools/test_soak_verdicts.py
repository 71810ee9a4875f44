"""The soak run's verdicts on made-up series: flat passes, growth fails."""

from __future__ import annotations

import os

from cryptovol.devtools.procstat import sample, slope
from cryptovol.devtools.soak import Limits, Series, verdicts


def series(per_min: dict[str, float], minutes: int = 40) -> Series:
    s = Series()
    for m in range(minutes * 6):
        t = m * 10.0
        s.add(t, **{name: 100 + rate * t / 60 + (m % 3) for name, rate in per_min.items()})
    return s


def test_slope_is_least_squares():
    assert slope([0, 1, 2, 3], [1, 3, 5, 7]) == 2.0
    assert slope([1], [5]) == 0.0 and slope([2, 2], [1, 5]) == 0.0


def test_this_process_can_be_sampled_and_a_gone_one_cannot():
    me = sample(os.getpid())
    assert me is not None and me.rss_bytes > 1_000_000 and me.open_fds >= 3 and me.threads >= 1
    assert sample(2**22 + 12345) is None


def test_flat_series_pass_and_growing_ones_fail_with_their_slope():
    flat = series({"rss_mib": 0.0, "open_fds": 0.0, "threads": 0.0})
    leaking = series({"rss_mib": 1.0, "open_fds": 0.5, "threads": 0.0})  # per minute
    lags = series({"featurizer": 0.0, "consumer": 600.0})  # the consumer falls behind
    checks = verdicts({"api": flat, "consumer": leaking}, lags, input_rate=200.0,
                      warmup_s=300, drained_s=12.0, ledger_ok=True, limits=Limits())
    assert checks["api.rss_mib"]["ok"] and checks["api.open_fds"]["ok"]
    assert not checks["consumer.rss_mib"]["ok"]
    assert abs(checks["consumer.rss_mib"]["slope"] - 60.0) < 1  # MiB an hour
    assert not checks["consumer.open_fds"]["ok"] and checks["consumer.threads"]["ok"]
    assert checks["featurizer.lag"]["ok"] and not checks["consumer.lag"]["ok"]
    assert checks["lag_drained"]["ok"] and checks["ledger_balanced"]["ok"]
    undrained = verdicts({}, lags, 200.0, 300, None, False, Limits())
    assert not undrained["lag_drained"]["ok"] and not undrained["ledger_balanced"]["ok"]
