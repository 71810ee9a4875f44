"""``cryptovol-chaos`` (``make chaos``): the whole local pipeline under a fault
schedule, then the ledger.

Several products are replayed through the fake exchange while every service is
SIGKILLed and restarted in turn (each featurizer replica, the consumer, the
API, the ingest), the broker is SIGKILLed and restarted once and the exchange
goes silent once. When the feed has been ingested and the stages have caught
up, the run passes if:

- the ledger balances: 0 missing for every product, copies only of the same
  record id with the same content;
- every product's streamed features equal an undisturbed offline run
  (:func:`cryptovol.core.features.features_frame`, the training path) of the
  ticks that reached ``ticks.raw``, bit for bit;
- every service is healthy at the end and every fault was recovered from.

Ticks the exchange sent that never reached ``ticks.raw`` (in the ingest's
socket buffers when it was SIGKILLed: a live feed cannot be replayed) are
counted and reported. Everything runs on 127.0.0.1 and stops by itself; the
report (JSON) names each fault, when it happened and how long recovery took.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import orjson

from cryptovol.devtools.ledger.offline import compare_with_offline
from cryptovol.devtools.ledger.report import as_json, as_text, latency_summary
from cryptovol.devtools.ledger.topics import end_offsets, read_topic
from cryptovol.devtools.pipeline import LocalPipeline, PipelineConfig

#: The consumer scores warm-up rows too, so every tick is followed to a prediction.
EVERY_ROW_SCORED = {"consumer": {"PREDICT_WARMUP": "true"}}
#: The longest recordings: about 55 minutes of market data in three files.
CHAOS_FILES = ("ticks_BTCUSD_20251201_000100.ndjson.gz", "ticks_BTCUSD_20251205_204355.ndjson.gz",
               "ticks_BTCUSD_20251206_011247.ndjson.gz")


@dataclass(frozen=True)
class Fault:
    at_s: float  # after the feed started
    action: Literal["kill", "broker", "stall"]
    target: str = ""  # the service, for "kill"
    down_s: float = 2.0  # dead (kill, broker) or silent (stall) this long

    @property
    def name(self) -> str:
        return {"kill": f"SIGKILL {self.target}", "broker": "SIGKILL the broker",
                "stall": "stall the exchange"}[self.action]


def default_schedule(featurizers: list[str], spacing_s: float = 18.0) -> list[Fault]:
    kills = [featurizers[0], "consumer", "api", *featurizers[1:], "ingest"]
    faults = [Fault(spacing_s * (i + 1), "kill", name) for i, name in enumerate(kills)]
    n = len(faults)
    faults.append(Fault(spacing_s * (n + 1), "broker", down_s=5.0))
    faults.append(Fault(spacing_s * (n + 2) + 10, "stall", down_s=15.0))
    return faults


@dataclass
class FaultResult:
    fault: Fault
    started: str  # UTC
    wall_us: int
    ready_s: float | None = None  # the killed process (or broker) answers again
    resumed_s: float | None = None  # every product has a tick received after it predicted
    error: str | None = None


def apply(pipeline: LocalPipeline, fault: Fault) -> FaultResult:
    now = time.time()
    result = FaultResult(fault, datetime.fromtimestamp(now, UTC).isoformat(), int(now * 1e6))
    try:
        if fault.action == "kill":
            result.ready_s = round(pipeline.restart(fault.target, down_s=fault.down_s), 2)
        elif fault.action == "broker":
            result.ready_s = round(pipeline.restart_broker(down_s=fault.down_s), 2)
        else:
            pipeline.stall_exchange(fault.down_s)
    except Exception as exc:  # reported, and the run fails
        result.error = repr(exc)
    return result


def _sent_but_not_published(pipeline: LocalPipeline) -> list[str]:
    assert pipeline.exchange is not None
    topic = pipeline.settings().topic_raw
    ends = end_offsets(pipeline.bootstrap, [topic])[topic]
    published = set()
    for record in read_topic(pipeline.bootstrap, topic, ends):
        try:
            published.add(orjson.loads(record.value or b"")["record_id"])
        except (ValueError, KeyError, TypeError):
            continue
    return [rid for rid in pipeline.exchange.exchange.sent_ids if rid not in published]


def run_chaos(config: PipelineConfig, schedule: list[Fault] | None = None,
              say=print) -> dict[str, object]:
    started = time.monotonic()
    results: list[FaultResult] = []
    with LocalPipeline(config) as pipeline:
        say(f"pipeline up in {time.monotonic() - started:.0f} s: {len(pipeline.products)} "
            f"products, {len(pipeline.featurizers())} featurizer replicas, broker "
            f"{pipeline.bootstrap}")
        schedule = schedule or default_schedule([s.name for s in pipeline.featurizers()])
        feed_started = time.monotonic()
        for fault in schedule:
            delay = feed_started + fault.at_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            say(f"t={time.monotonic() - feed_started:5.0f} s  {fault.name}")
            results.append(apply(pipeline, fault))
            if results[-1].error:
                say(f"  failed: {results[-1].error}")
        ingested = pipeline.wait_ingested(timeout_s=900)
        feed_s = time.monotonic() - feed_started
        say(f"feed ingested: {ingested} after {feed_s:.0f} s; settling the ledger")
        report = pipeline.ledger(wait_s=300)
        for result in results:
            resumed = report.resumed_at(result.wall_us)
            result.resumed_s = None if resumed is None else round(
                (resumed - result.wall_us) / 1e6, 2)
        comparison = compare_with_offline(pipeline.bootstrap, pipeline.settings().topic_raw,
                                          pipeline.settings().topic_features,
                                          pipeline.ledger_settings().feature_config())
        lost = _sent_but_not_published(pipeline)
        unhealthy = pipeline.unhealthy()
        assert pipeline.exchange is not None
        sent = pipeline.exchange.exchange.ticks_sent
        restarts = {name: s.starts - 1 for name, s in pipeline.services.items()}
    # leaving the block stopped every process and checked that none is left
    checks = {
        "ledger_balanced": report.balanced,
        "features_identical_to_offline": all(c.identical for c in comparison.values()),
        "every_service_healthy_at_the_end": not unhealthy,
        "every_fault_recovered": all(r.error is None and r.resumed_s is not None
                                     for r in results),
        "feed_fully_ingested": ingested,
    }
    say(as_text(report))
    totals = report.totals
    return {
        "passed": all(checks.values()),
        "checks": checks,
        "when": datetime.now(UTC).isoformat(),
        "config": {"products": pipeline.products, "speed": config.speed,
                   "partitions": config.partitions,
                   "featurizer_replicas": config.featurizer_replicas,
                   "files": [Path(f).name for f in config.files]},
        "faults": [{**asdict(r.fault), "name": r.fault.name, "started": r.started,
                    "ready_s": r.ready_s, "resumed_s": r.resumed_s, "error": r.error}
                   for r in results],
        "restarts": restarts,
        "exchange_ticks_sent": sent,
        "sent_but_never_in_ticks_raw": {"count": len(lost), "examples": lost[:10]},
        "feed_wall_s": round(feed_s, 1),
        "throughput_ticks_per_s": round(totals.produced / feed_s, 1) if feed_s else None,
        "duplicates": {"ticks.raw": totals.raw_duplicates,
                       "ticks.features": totals.feature_duplicates,
                       "predictions.log": totals.prediction_duplicates},
        "offline_comparison": {p: c.as_dict() for p, c in comparison.items()},
        "unhealthy_at_the_end": unhealthy,
        "latency_ms": latency_summary(report),
        "ledger": as_json(report),
        "total_s": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cryptovol-chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=4)
    parser.add_argument("--speed", type=float, default=20.0, help="multiple of real time")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--featurizers", type=int, default=2, help="featurizer replicas")
    parser.add_argument("--spacing-s", type=float, default=18.0, help="seconds between faults")
    parser.add_argument("--repo", type=Path, default=Path.cwd())
    parser.add_argument("--workdir", type=Path, default=Path(".state/chaos-run"),
                        help="broker data and service logs (emptied first, kept after)")
    parser.add_argument("--out", type=Path, default=Path(".state/chaos.json"))
    args = parser.parse_args(argv)
    shutil.rmtree(args.workdir, ignore_errors=True)
    files = [args.repo / "data" / "coinbase-ticker" / name for name in CHAOS_FILES]
    config = PipelineConfig(workdir=args.workdir.resolve(), repo=args.repo.resolve(),
                            products=args.products, files=files, speed=args.speed,
                            partitions=args.partitions, featurizer_replicas=args.featurizers,
                            service_env=EVERY_ROW_SCORED)
    names = ["featurizer"] if args.featurizers == 1 else [
        f"featurizer-{k + 1}" for k in range(args.featurizers)]
    result = run_chaos(config, default_schedule(names, args.spacing_s),
                       say=lambda m: print(m, flush=True))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print("\n".join(f"  {'ok ' if ok else 'FAIL'} {name}"
                    for name, ok in result["checks"].items()))  # type: ignore[union-attr]
    for fault in result["faults"]:  # type: ignore[union-attr]
        print(f"  {fault['name']:<24} ready {fault['ready_s']} s, flow resumed "
              f"{fault['resumed_s']} s")
    print(f"chaos {'PASSED' if result['passed'] else 'FAILED'}; report in {args.out}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
