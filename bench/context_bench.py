"""What the 30-minute context of RV_60 costs per tick, beside the windows it joined.

On the bundled recordings, in one process:

- ``engine``: ``FeatureEngine.step`` per tick, every feature (windows + context);
- ``context``: the same ticks' context work alone (``RvContext``: expire, add,
  quantile, mean and spread of ln RV_60), replayed from the RV_60 values the
  engine produced; the windows' own cost is the difference;
- ``scaling``: the context's cost per tick as the 30-minute window holds more
  values (4, 20 and 50 ticks a second): a sorted list and exact sums, so it
  grows like log n, not n.

Writes bench/results/context.json.

    python bench/context_bench.py           # about 30 s
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np

from cryptovol.core.features import FEATURE_NAMES, FeatureEngine
from cryptovol.core.features.context import CONTEXT_S, RvContext
from cryptovol.runtime.recordings import open_recordings, read_ticks

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "context.json"
DATA = REPO / "data" / "coinbase-ticker"
RV60 = FEATURE_NAMES.index("rv_60s")
REPEATS = 3


def best_of(fn, repeats: int = REPEATS) -> float:  # type: ignore[no-untyped-def]
    """The fastest of ``repeats`` CPU-time runs (the least disturbed by neighbours)."""
    best = math.inf
    for _ in range(repeats):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best


def replay_context(stream: list[tuple[int, float | None]]) -> None:
    ctx = RvContext()
    for t, rv in stream:
        ctx.expire(t)
        if rv is not None:
            ctx.add(t, rv)
        if len(ctx):
            ctx.quantile()
            ctx.log_mean()
            ctx.log_std()


def bench_engine(ticks: list) -> dict:
    args = list(ticks)
    stream: list[tuple[int, float | None]] = []  # what entered the context, tick by tick
    engine = FeatureEngine()
    segment: dict[str, tuple[int, int]] = {}  # product -> (segment, its start)
    for a in args:
        res = engine.step(a)
        if res is None:
            continue
        if segment.get(a.product_id, (None,))[0] != res.segment:
            segment[a.product_id] = (res.segment, res.time_us)
        inside = res.time_us - segment[a.product_id][1] >= 60_000_000  # 60 s window in the segment
        stream.append((res.time_us, res.values[RV60] if inside else None))

    def run_engine() -> None:
        fresh = FeatureEngine()
        for a in args:
            fresh.step(a)

    total = best_of(run_engine)
    context = best_of(lambda: replay_context(stream))
    n = len(args)
    return {
        "ticks": n,
        "engine_us_per_tick": round(total / n * 1e6, 3),
        "engine_ticks_per_cpu_s": round(n / total),
        "context_us_per_tick": round(context / n * 1e6, 3),
        "windows_us_per_tick": round((total - context) / n * 1e6, 3),
        "context_share": round(context / total, 3),
    }


def bench_scaling(ticks_per_s: tuple[int, ...] = (4, 20, 50), minutes: int = 40) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for rate in ticks_per_s:
        n = rate * 60 * minutes
        times = (np.arange(n) * (1_000_000 // rate)).tolist()
        values = np.exp(rng.normal(-9, 0.5, n)).tolist()
        stream = list(zip(times, values, strict=True))
        cpu = best_of(lambda s=stream: replay_context(s), repeats=2)
        out.append({"ticks_per_s": rate, "values_in_window": rate * CONTEXT_S,
                    "context_us_per_tick": round(cpu / n * 1e6, 3)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    ticks = list(read_ticks(open_recordings([DATA])))
    started = time.time()
    engine = bench_engine(ticks)
    print(f"engine {engine['engine_us_per_tick']} us/tick, of which context "
          f"{engine['context_us_per_tick']} us ({engine['context_share']:.0%})", flush=True)
    scaling = bench_scaling()
    for row in scaling:
        print(f"context alone at {row['ticks_per_s']} ticks/s ({row['values_in_window']} values):"
              f" {row['context_us_per_tick']} us/tick", flush=True)
    result = {
        "benchmark": "context",
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "duration_s": round(time.time() - started, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg": [round(x, 2) for x in os.getloadavg()]},
        "method": "CPU time (process_time), best of 3, bundled recordings in one process",
        "engine": engine,
        "scaling": scaling,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")


if __name__ == "__main__":
    main()
