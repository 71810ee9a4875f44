"""``cryptovol-soak`` (``make soak``): the whole local pipeline for a long time at
a replay speed well above the live rate, sampled.

Every ``--every-s`` seconds, per process (each service, and the broker for
reference): resident memory, open file descriptors and threads (from
``/proc``); per stage: consumer lag (end offsets minus the group's committed
offsets). At the end the feed is stopped, the stages drain and the ledger
settles; the receive-to-prediction latency of every tick is binned by minute.

The run fails when, over its steady part (after ``--warmup-min``):

- a service's resident memory grows faster than ``--rss-slope-mib-per-h``
  (default 20 MiB an hour), or its descriptors or threads grow beyond noise
  (a slope above 6 an hour). The broker's JVM is shown, not judged: its heap
  grows towards ``-Xmx`` by design;
- a stage's lag grows (slope above 1 % of the input rate), or it does not
  drain to 0 within ``--drain-s`` once the feed stops;
- the ledger does not balance.

Writes the series and the verdict as JSON and the series as a PNG plot.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from cryptovol.devtools.chaos import EVERY_ROW_SCORED
from cryptovol.devtools.ledger.accounts import LedgerReport, percentiles
from cryptovol.devtools.ledger.report import as_json, as_text
from cryptovol.devtools.ledger.topics import committed_offsets, end_offsets
from cryptovol.devtools.pipeline import LocalPipeline, PipelineConfig
from cryptovol.devtools.procstat import sample, slope

MIB = 1024 * 1024


@dataclass
class Limits:
    rss_mib_per_h: float = 20.0
    handles_per_h: float = 6.0  # descriptors, threads
    lag_fraction_of_rate: float = 0.01
    drain_s: float = 300.0


@dataclass
class Series:
    t_s: list[float] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, t: float, **values: float) -> None:
        self.t_s.append(round(t, 1))
        for name, value in values.items():
            self.values.setdefault(name, []).append(value)


def stage_lags(pipeline: LocalPipeline) -> dict[str, float]:
    """Records each stage's group has still to commit on its input topic."""
    settings = pipeline.ledger_settings()
    bootstrap = pipeline.bootstrap
    ends = end_offsets(bootstrap, [settings.topic_raw, settings.topic_features])
    out = {}
    for stage, group, topic in (("featurizer", settings.featurizer_group, settings.topic_raw),
                                ("consumer", settings.consumer_group, settings.topic_features)):
        done = committed_offsets(bootstrap, group, topic)
        out[stage] = float(sum(max(0, end - done.get(p, 0)) for p, end in ends[topic].items()))
    return out


def processes(pipeline: LocalPipeline) -> dict[str, int]:
    pids = {name: s.proc.pid for name, s in pipeline.services.items()
            if s.proc is not None and s.alive}
    if pipeline.broker.process is not None:
        pids["broker"] = pipeline.broker.process.pid
    return pids


def latency_by_minute(report: LedgerReport, start_us: int) -> Series:
    bins: dict[int, list[float]] = {}
    for pairs in report.flow.values():
        for received, predicted in pairs:
            bins.setdefault(int((predicted - start_us) // 60e6), []).append(
                (predicted - received) / 1e3)
    series = Series()
    for minute in sorted(bins):
        p = percentiles(bins[minute])
        series.add(minute * 60.0 + 30.0, p50=p["p50"], p95=p["p95"], p99=p["p99"],
                   n=float(len(bins[minute])))
    return series


def verdicts(procs: dict[str, Series], lags: Series, input_rate: float, warmup_s: float,
             drained_s: float | None, ledger_ok: bool, limits: Limits) -> dict[str, object]:
    def steady(series: Series, name: str) -> tuple[list[float], list[float]]:
        pairs = [(t, v) for t, v in zip(series.t_s, series.values.get(name, []), strict=False)
                 if t >= warmup_s and not math.isnan(v)]
        return [t for t, _ in pairs], [v for _, v in pairs]

    checks: dict[str, dict[str, object]] = {}
    for proc, series in procs.items():
        if proc == "broker":
            continue
        for name, unit, limit in (("rss_mib", "MiB/h", limits.rss_mib_per_h),
                                  ("open_fds", "/h", limits.handles_per_h),
                                  ("threads", "/h", limits.handles_per_h)):
            xs, ys = steady(series, name)
            per_h = slope(xs, ys) * 3600
            checks[f"{proc}.{name}"] = {"slope": round(per_h, 3), "unit": unit, "limit": limit,
                                        "first": ys[0] if ys else None,
                                        "last": ys[-1] if ys else None,
                                        "max": max(ys) if ys else None,
                                        "ok": bool(ys) and per_h <= limit}
    for stage in ("featurizer", "consumer"):
        xs, ys = steady(lags, stage)
        per_s = slope(xs, ys)
        limit = limits.lag_fraction_of_rate * input_rate
        checks[f"{stage}.lag"] = {"slope": round(per_s, 3), "unit": "records/s",
                                  "limit": round(limit, 3), "max": max(ys) if ys else None,
                                  "ok": bool(ys) and per_s <= limit}
    checks["lag_drained"] = {"seconds": drained_s, "limit": limits.drain_s,
                             "ok": drained_s is not None}
    checks["ledger_balanced"] = {"ok": ledger_ok}
    return checks


def wait_lag_zero(pipeline: LocalPipeline, timeout_s: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if not any(stage_lags(pipeline).values()):
            return round(time.monotonic() - started, 1)
        time.sleep(2.0)
    return None


def run_soak(config: PipelineConfig, minutes: float, every_s: float, warmup_min: float,
             limits: Limits, say=print) -> dict[str, object]:
    procs: dict[str, Series] = {}
    lags = Series()
    with LocalPipeline(config) as pipeline:
        started, start_us = time.monotonic(), int(time.time() * 1e6)
        say(f"soaking for {minutes:g} min: {len(pipeline.products)} products at "
            f"{config.speed:g}x, sampling every {every_s:g} s")
        next_at, last_say = started, started
        while time.monotonic() - started < minutes * 60:
            t = time.monotonic() - started
            for name, pid in processes(pipeline).items():
                got = sample(pid)
                if got is not None:
                    procs.setdefault(name, Series()).add(
                        t, rss_mib=got.rss_bytes / MIB, open_fds=float(got.open_fds),
                        threads=float(got.threads))
            try:
                lags.add(t, **stage_lags(pipeline))
            except Exception as exc:  # a sample missed is not a failure
                say(f"lag not sampled: {exc!r}")
            if time.monotonic() - last_say > 300:
                last_say = time.monotonic()
                rss = {n: round(s.values["rss_mib"][-1]) for n, s in procs.items()}
                lag = {k: v[-1] for k, v in lags.values.items()}
                say(f"t={t / 60:4.0f} min  rss MiB {rss}  lag {lag}")
            next_at += every_s
            time.sleep(max(0.0, next_at - time.monotonic()))
        feed_s = time.monotonic() - started
        ingest = pipeline.services["ingest"]
        ingest.stop()  # the feed stops; what it received is acknowledged first
        drained_s = wait_lag_zero(pipeline, limits.drain_s)
        say(f"feed stopped after {feed_s / 60:.1f} min; stages drained in {drained_s} s")
        report = pipeline.ledger(wait_s=limits.drain_s)
        unhealthy = {n: c for n, c in pipeline.unhealthy().items() if n != "ingest"}
    say(as_text(report))
    total = report.totals.produced
    input_rate = total / feed_s if feed_s else 0.0
    checks = verdicts(procs, lags, input_rate, warmup_min * 60, drained_s, report.balanced,
                      limits)
    checks["services_healthy_at_the_end"] = {"unhealthy": unhealthy, "ok": not unhealthy}
    latency = latency_by_minute(report, start_us)
    return {
        "passed": all(c["ok"] for c in checks.values()),
        "when": datetime.now(UTC).isoformat(),
        "config": {"products": pipeline.products, "speed": config.speed,
                   "partitions": config.partitions,
                   "featurizer_replicas": config.featurizer_replicas,
                   "minutes": minutes, "every_s": every_s, "warmup_min": warmup_min},
        "limits": vars(limits),
        "ticks": total,
        "input_ticks_per_s": round(input_rate, 1),
        "checks": checks,
        "series": {"processes": {n: {"t_s": s.t_s, **s.values} for n, s in procs.items()},
                   "lag": {"t_s": lags.t_s, **lags.values},
                   "latency_ms_by_minute": {"t_s": latency.t_s, **latency.values}},
        "ledger": as_json(report),
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = result["series"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    (rss, handles), (lag, latency) = axes
    for name, s in sorted(series["processes"].items()):
        minutes = [t / 60 for t in s["t_s"]]
        rss.plot(minutes, s["rss_mib"], label=name, lw=1.2)
        handles.plot(minutes, s["open_fds"], label=f"{name} fds", lw=1.2)
        handles.plot(minutes, s["threads"], ls=":", lw=1.2, label=f"{name} threads")
    rss.set_ylabel("resident memory (MiB)")
    rss.legend(fontsize=7, ncol=2)
    handles.set_ylabel("open descriptors (—), threads (···)")
    handles.legend(fontsize=6, ncol=2)
    minutes = [t / 60 for t in series["lag"]["t_s"]]
    for stage in ("featurizer", "consumer"):
        lag.plot(minutes, series["lag"].get(stage, []), label=stage, lw=1.2)
    lag.set_ylabel("consumer lag (records)")
    lag.set_xlabel("minutes")
    lag.legend(fontsize=7)
    lat = series["latency_ms_by_minute"]
    minutes = [t / 60 for t in lat["t_s"]]
    for q in ("p50", "p95", "p99"):
        latency.plot(minutes, lat.get(q, []), label=q, lw=1.2)
    latency.set_ylabel("receive → prediction (ms)")
    latency.set_xlabel("minutes")
    latency.set_yscale("log")
    latency.legend(fontsize=7)
    verdict = "PASSED" if result["passed"] else "FAILED"
    cfg = result["config"]
    fig.suptitle(f"soak {verdict}: {len(cfg['products'])} products at {cfg['speed']:g}x for "
                 f"{cfg['minutes']:g} min, {result['input_ticks_per_s']:g} ticks/s", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cryptovol-soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=40.0)
    parser.add_argument("--products", type=int, default=4)
    parser.add_argument("--speed", type=float, default=20.0, help="multiple of real time")
    parser.add_argument("--every-s", type=float, default=10.0, help="sampling period")
    parser.add_argument("--warmup-min", type=float, default=5.0,
                        help="minutes before the steady part the slopes are taken over")
    parser.add_argument("--rss-slope-mib-per-h", type=float, default=Limits.rss_mib_per_h)
    parser.add_argument("--drain-s", type=float, default=Limits.drain_s)
    parser.add_argument("--repo", type=Path, default=Path.cwd())
    parser.add_argument("--workdir", type=Path, default=Path(".state/soak-run"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/soak.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/soak.png"))
    args = parser.parse_args(argv)
    shutil.rmtree(args.workdir, ignore_errors=True)
    config = PipelineConfig(workdir=args.workdir.resolve(), repo=args.repo.resolve(),
                            products=args.products, speed=args.speed, loop=True,
                            files=[args.repo / "data" / "coinbase-ticker"],
                            service_env=EVERY_ROW_SCORED)
    limits = Limits(rss_mib_per_h=args.rss_slope_mib_per_h, drain_s=args.drain_s)
    result = run_soak(config, args.minutes, args.every_s, args.warmup_min, limits,
                      say=lambda m: print(m, flush=True))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    plot(result, args.plot)
    for name, check in result["checks"].items():  # type: ignore[union-attr]
        details = {k: v for k, v in check.items() if k != "ok"}
        print(f"  {'ok ' if check['ok'] else 'FAIL'} {name} {details}")
    print(f"soak {'PASSED' if result['passed'] else 'FAILED'}; {args.out}, {args.plot}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
