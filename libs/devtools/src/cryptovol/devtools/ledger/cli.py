"""``cryptovol-ledger``: account for every record id of a running (or stopped)
stack, per product: produced, featured, predicted, dead-lettered (with reason),
duplicated, pending, missing. Exit code 0 when the ledger balances, 1 when it is
red, 2 when it cannot run (no broker, ...).

Reads the same environment variables as the services (``KAFKA_BOOTSTRAP_SERVERS``,
``TOPIC_RAW``, ``TOPIC_FEATURES``, ``TOPIC_PREDICTIONS``, ``PREDICTION_LOG_DIR``,
``PREDICT_WARMUP``, ``EMIT_INTERVAL_MS``, ``FEATURE_GAP_S``, ``FEATURE_GRACE_S``,
``FEATURE_JUMP_S``); flags override. See docs/runbook.md ("The ledger").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson
from kafka.errors import KafkaError
from pydantic import Field
from tqdm import tqdm

from cryptovol.core.features import FeatureConfig
from cryptovol.devtools.ledger.accounts import Ledger, LedgerReport
from cryptovol.devtools.ledger.report import as_json, as_text
from cryptovol.devtools.ledger.topics import (
    committed_offsets,
    end_offsets,
    prediction_files,
    read_lines,
    read_topic,
)
from cryptovol.runtime.kafka import DLQ_SUFFIX, broker_reachable
from cryptovol.runtime.settings import ServiceSettings


class LedgerSettings(ServiceSettings):
    service_name: str = "ledger"
    featurizer_group: str = "cryptovol-featurizer"
    consumer_group: str = "cryptovol-consumer"
    prediction_log_dir: Path | None = Path("logs/predictions")
    predict_warmup: bool = False
    emit_interval_ms: int = Field(0, ge=0)
    feature_gap_s: float = Field(10.0, gt=0)
    feature_grace_s: float = Field(1.0, ge=0)
    feature_jump_s: float = Field(300.0, gt=0)

    def feature_config(self) -> FeatureConfig:
        return FeatureConfig(gap_s=self.feature_gap_s, grace_s=self.feature_grace_s,
                             jump_s=self.feature_jump_s)


def _caught_up(done: dict[int, int], ends: dict[int, int]) -> bool:
    return all(done.get(p, 0) >= end for p, end in ends.items() if end > 0)


def wait_drained(settings: LedgerSettings, timeout_s: float, say=print) -> bool:
    """Wait until the featurizer and consumer groups have committed everything on
    their input topics; False after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    bootstrap = settings.bootstrap
    while True:
        fz = committed_offsets(bootstrap, settings.featurizer_group, settings.topic_raw)
        cons = committed_offsets(bootstrap, settings.consumer_group, settings.topic_features)
        ends = end_offsets(bootstrap, [settings.topic_raw, settings.topic_features])
        if _caught_up(fz, ends[settings.topic_raw]) and \
                _caught_up(cons, ends[settings.topic_features]):
            return True
        if time.monotonic() > deadline:
            say(f"not drained after {timeout_s:.0f} s; records still in flight count as pending")
            return False
        time.sleep(1.0)


def collect(settings: LedgerSettings, *, drained: bool = False, progress: bool = False,
            products: frozenset[str] | None = None) -> LedgerReport:
    """Read every topic (and the fallback files) and settle the ledger (of
    ``products`` only, when given)."""
    bootstrap = settings.bootstrap
    raw, features = settings.topic_raw, settings.topic_features
    fz_committed = committed_offsets(bootstrap, settings.featurizer_group, raw)
    cons_committed = committed_offsets(bootstrap, settings.consumer_group, features)
    topics = [raw, raw + DLQ_SUFFIX, features, features + DLQ_SUFFIX, settings.topic_predictions]
    ends = end_offsets(bootstrap, topics)
    ledger = Ledger(settings.feature_config(), predict_warmup=settings.predict_warmup,
                    emit_interval_ms=settings.emit_interval_ms, products=products)
    steps = [(raw, ledger.add_raw), (raw + DLQ_SUFFIX, ledger.add_raw_dead_letter),
             (features, ledger.add_feature),
             (features + DLQ_SUFFIX, ledger.add_feature_dead_letter),
             (settings.topic_predictions, lambda r: ledger.add_prediction(r.value or b""))]
    for topic, add in steps:
        total = sum(ends[topic].values())
        with tqdm(total=total, unit="rec", desc=f"{topic:<22}", disable=not progress,
                  leave=False) as bar:
            for record in read_topic(bootstrap, topic, ends[topic], progress=bar.update):
                add(record)
    for path in prediction_files(settings.prediction_log_dir):
        for line in read_lines(path):
            ledger.add_prediction(line, where=str(path))
    return ledger.report(fz_committed, cons_committed, drained=drained)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cryptovol-ledger", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (KAFKA_BOOTSTRAP_SERVERS)")
    parser.add_argument("--featurizer-group", help="the featurizer's consumer group")
    parser.add_argument("--consumer-group", help="the consumer's consumer group")
    parser.add_argument("--prediction-log-dir", type=Path,
                        help="the consumer's fallback files (PREDICTION_LOG_DIR)")
    parser.add_argument("--drained", action="store_true",
                        help="the stack is stopped or idle: a record still in flight is missing")
    parser.add_argument("--wait-s", type=float, default=0.0,
                        help="first wait up to this long for the stages to catch up")
    parser.add_argument("--products", help="comma-separated products to account for "
                        "(default: every product on the topics)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    flags = {"kafka_bootstrap_servers": args.bootstrap, "featurizer_group": args.featurizer_group,
             "consumer_group": args.consumer_group,
             "prediction_log_dir": args.prediction_log_dir}
    settings = LedgerSettings(**{k: v for k, v in flags.items() if v is not None})
    if not broker_reachable(settings.bootstrap, timeout_s=5.0):
        print(f"cryptovol-ledger: no Kafka broker answers at {settings.bootstrap} "
              "(set KAFKA_BOOTSTRAP_SERVERS or --bootstrap)", file=sys.stderr)
        return 2
    try:
        if args.wait_s > 0:
            wait_drained(settings, args.wait_s, say=lambda m: print(m, file=sys.stderr))
        only = frozenset(p.strip() for p in args.products.split(",") if p.strip()) \
            if args.products else None
        report = collect(settings, drained=args.drained, progress=not args.quiet, products=only)
    except (KafkaError, TimeoutError, OSError) as exc:
        print(f"cryptovol-ledger: could not read the topics: {exc!r}", file=sys.stderr)
        return 2
    print(as_text(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(as_json(report), option=orjson.OPT_INDENT_2))
    return 0 if report.balanced else 1


if __name__ == "__main__":
    raise SystemExit(main())
