"""A deliberately naive implementation of every feature, for testing the engine.

Each row is recomputed from scratch over the product's accepted ticks with
``math.fsum``; nothing incremental, nothing shared with the engine except the
feature names and the config. Quadratic in the number of ticks: tests only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from cryptovol.core.features.config import FeatureConfig
from cryptovol.core.features.context import (
    CONTEXT_MIN_HISTORY_S,
    CONTEXT_MIN_VALUES,
    CONTEXT_QUANTILE,
    CONTEXT_S,
    LOGSTD_FLOOR,
    RV_FLOOR,
)
from cryptovol.core.features.names import FEATURE_NAMES, RET_WINDOW_S, WINDOWS_S
from cryptovol.core.ticks import Tick


@dataclass
class RefRow:
    record_id: str
    product_id: str
    t: int
    warmup: bool
    segment: int
    features: dict[str, float]


def _spread(tk: Tick) -> float | None:
    bid, ask = tk.best_bid, tk.best_ask
    if bid is None or ask is None or not (0 < bid < math.inf and 0 < ask < math.inf):
        return None
    mid = (ask + bid) / 2
    return (ask - bid) / mid * 1e4


def _imbalance(tk: Tick) -> float | None:
    b, a = tk.best_bid_quantity, tk.best_ask_quantity
    if b is None or a is None or b < 0 or a < 0 or not 0 < a + b < math.inf:
        return None
    return (b - a) / (b + a)


def accept(
    ticks: Iterable[Tick], config: FeatureConfig | None = None
) -> list[tuple[Tick, int, int]]:
    """The acceptance policy, spelled out: (tick, time used, segment) per accepted tick."""
    cfg = config or FeatureConfig()
    gap, grace, jump = cfg.gap_us, cfg.grace_us, cfg.jump_us
    out: list[tuple[Tick, int, int]] = []
    last: dict[str, int] = {}
    last_rx: dict[str, int] = {}
    seg: dict[str, int] = {}
    ids: dict[str, set[str]] = {}
    for tk in ticks:
        if not 0 < tk.price < math.inf:
            continue
        p = tk.product_id
        t = tk.event_us
        if p not in last:
            seg[p] = 0
            ids[p] = set()
        elif t < last[p] - grace:
            fresh = tk.receive_us >= last_rx[p]
            if t < last[p] - jump and fresh:
                seg[p] += 1
                ids[p] = set()
            else:
                continue  # late (or a duplicate of an old tick)
        elif tk.record_id in ids[p]:
            continue
        elif t < last[p]:
            t = last[p]
        elif t - last[p] > gap:
            seg[p] += 1
            ids[p] = set()
        last[p] = t
        last_rx[p] = tk.receive_us
        ids[p].add(tk.record_id)
        out.append((tk, t, seg[p]))
    return out


def reference_rows(ticks: Iterable[Tick], config: FeatureConfig | None = None) -> list[RefRow]:
    accepted = accept(ticks, config)
    history: dict[tuple[str, int], list[tuple[Tick, int]]] = {}
    # per product since its last clock jump: (time, rv_60s) of ticks whose 60 s
    # window lies inside their segment
    measured: dict[str, list[tuple[int, float]]] = {}
    last: dict[str, int] = {}
    rows = []
    for tk, t, segment in accepted:
        seq = history.setdefault((tk.product_id, segment), [])
        seq.append((tk, t))
        if t < last.get(tk.product_id, t):  # only a clock jump moves time back
            measured[tk.product_id] = []
        last[tk.product_id] = t
        f = _features(seq)
        values = measured.setdefault(tk.product_id, [])
        if t - seq[0][1] >= RET_WINDOW_S * 10**6:
            values.append((t, f["rv_60s"]))
        window = [(u, v) for u, v in values if u > t - CONTEXT_S * 10**6]
        f.update(_context(f, [v for _, v in window]))
        warm = (len(window) >= CONTEXT_MIN_VALUES
                and t - window[0][0] >= CONTEXT_MIN_HISTORY_S * 10**6)
        warmup = t - seq[0][1] < WINDOWS_S[-1] * 10**6 or not warm
        rows.append(RefRow(tk.record_id, tk.product_id, t, warmup, segment,
                           {name: f[name] for name in FEATURE_NAMES}))
    return rows


def _floored_log(x: float) -> float:
    return math.log(max(x, RV_FLOOR))


def _context(f: dict[str, float], values: list[float]) -> dict[str, float]:
    """The 30-minute context features of a row from its window of RV_60 values."""
    nan = math.nan
    out = dict.fromkeys(("rv60_q90_30m", "rv60_logmean_30m", "rv60_logstd_30m", "rel_rv_30s",
                         "rel_rv_60s", "rel_rv_300s", "rv60_z_30m", "q90_excess_30m",
                         "persistence_ratio"), nan)
    n = len(values)
    out["rv60_count_30m"] = float(n)
    if not n:
        return out
    ordered = sorted(values)
    pos = CONTEXT_QUANTILE * (n - 1)
    lo = math.floor(pos)
    tau = ordered[lo] if lo + 1 >= n else ordered[lo] + (ordered[lo + 1] - ordered[lo]) * (pos - lo)
    logs = [_floored_log(v) for v in values]
    mean = math.fsum(logs) / n
    log_tau = _floored_log(tau)
    out.update({
        "rv60_q90_30m": tau, "rv60_logmean_30m": mean,
        "rel_rv_30s": _floored_log(f["rv_30s"] * math.sqrt(2)) - log_tau,
        "rel_rv_60s": _floored_log(f["rv_60s"]) - log_tau,
        "rel_rv_300s": _floored_log(f["rv_300s"] / math.sqrt(5)) - log_tau,
        "q90_excess_30m": log_tau - mean,
        "persistence_ratio": f["rv_60s"] / max(tau, RV_FLOOR),
    })
    if n > 1:
        std = math.sqrt(math.fsum((x - mean) ** 2 for x in logs) / (n - 1))
        out["rv60_logstd_30m"] = std
        if std > LOGSTD_FLOOR:
            out["rv60_z_30m"] = (_floored_log(f["rv_60s"]) - mean) / std
    return out


def _features(seq: list[tuple[Tick, int]]) -> dict[str, float]:
    """Every windowed feature of the last tick of ``seq`` (one product's segment so far)."""
    prices = [tk.price for tk, _ in seq]
    times = [t for _, t in seq]
    returns = [math.nan] + [math.log(prices[j] / prices[j - 1]) for j in range(1, len(seq))]
    i = len(seq) - 1
    t = times[i]
    f: dict[str, float] = {}
    for w in WINDOWS_S:
        idx = [j for j in range(len(seq)) if times[j] > t - w * 10**6]
        rets = [returns[j] for j in idx if j >= 1]
        pairs = [abs(returns[j]) * abs(returns[j - 1]) for j in idx if j >= 2]
        before = [j for j in range(len(seq)) if times[j] <= t - w * 10**6]
        ref = prices[before[-1]] if before else prices[0]
        window_prices = [prices[j] for j in idx]
        spreads = [s for j in idx if (s := _spread(seq[j][0])) is not None]
        imbs = [m for j in idx if (m := _imbalance(seq[j][0])) is not None]
        f[f"rv_{w}s"] = math.sqrt(math.fsum(r * r for r in rets))
        f[f"bpv_{w}s"] = math.sqrt(math.pi / 2 * math.fsum(pairs))
        f[f"logret_{w}s"] = math.log(prices[i] / ref)
        f[f"parkinson_{w}s"] = (
            math.log(max(window_prices) / min(window_prices)) / (2 * math.sqrt(math.log(2)))
        )
        f[f"n_{w}s"] = float(len(idx))
        f[f"spread_bps_{w}s"] = math.fsum(spreads) / len(spreads) if spreads else math.nan
        f[f"imbalance_{w}s"] = math.fsum(imbs) / len(imbs) if imbs else math.nan
        if w == RET_WINDOW_S:
            n = len(rets)
            f["n"] = float(n)
            f["ret_mean"] = math.fsum(rets) / n if n else math.nan
            if n > 1:
                mean = math.fsum(rets) / n
                f["ret_std"] = math.sqrt(math.fsum((r - mean) ** 2 for r in rets) / (n - 1))
            else:
                f["ret_std"] = math.nan
    for a in (30, 60):
        long_rv = f["rv_300s"]
        f[f"vol_ratio_{a}_300"] = (
            f[f"rv_{a}s"] / long_rv * math.sqrt(300 / a) if long_rv > 0 else math.nan
        )
    f["dt_prev"] = (times[i] - times[i - 1]) / 1e6 if i else math.nan
    return f
