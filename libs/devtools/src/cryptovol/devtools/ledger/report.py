"""The ledger's report: a JSON document and a text table for people (pure)."""

from __future__ import annotations

from cryptovol.devtools.ledger.accounts import LedgerReport, ProductAccount, percentiles

COLUMNS = (
    ("produced", "produced"), ("raw dup", "raw_duplicates"), ("raw dlq", "raw_dead_lettered"),
    ("dropped", "dropped"), ("featured", "featured"), ("feat dup", "feature_duplicates"),
    ("warm-up", "warmup"), ("feat dlq", "features_dead_lettered"), ("predicted", "predicted"),
    ("pred dup", "prediction_duplicates"), ("pending", "pending"), ("missing", "missing"),
)


def latency_summary(report: LedgerReport) -> dict[str, object]:
    everything = [v for values in report.latencies_ms.values() for v in values]
    return {
        "what": "receive time at the ingest -> predicted_time at the consumer, first copy "
                "of each prediction, milliseconds",
        "all": {"n": len(everything), **percentiles(everything)},
        "per_product": {p: {"n": len(v), **percentiles(v)}
                        for p, v in sorted(report.latencies_ms.items())},
        "by_stage": {"what": "ingest: receive -> sent to ticks.raw; featurizer: -> row sent to "
                             "ticks.features; consumer: -> prediction (Kafka create times)",
                     **{stage: percentiles(v) for stage, v in report.stage_latencies_ms.items()}},
    }


def as_json(report: LedgerReport) -> dict[str, object]:
    return {
        "balanced": report.balanced,
        "drained": report.drained,
        "totals": report.totals.as_dict(),
        "products": {name: a.as_dict() for name, a in report.products.items()},
        "problems": report.problems,
        "examples": report.examples,
        "dead_letter_reasons": report.dead_letter_reasons,
        "exchange_messages_dead_lettered": report.exchange_dead_letters,
        "latency_ms": latency_summary(report),
    }


def _cell(account: ProductAccount, attribute: str) -> str:
    value = getattr(account, attribute)
    if attribute == "dropped":
        value = sum(value.values())
    return f"{value:,}"


def as_text(report: LedgerReport) -> str:
    rows = [(name, account) for name, account in report.products.items()]
    rows.append(("TOTAL", report.totals))
    width = max([len("product")] + [len(name) for name, _ in rows])
    header = f"{'product':<{width}} " + " ".join(f"{title:>10}" for title, _ in COLUMNS)
    lines = [header, "-" * len(header)]
    for name, account in rows:
        if name == "TOTAL":
            lines.append("-" * len(header))
        lines.append(f"{name:<{width}} " + " ".join(f"{_cell(account, attr):>10}"
                                                    for _, attr in COLUMNS))
    total = report.totals
    if total.dropped:
        lines.append("dropped by the feature engine's rules: " + ", ".join(
            f"{reason} {n:,}" for reason, n in sorted(total.dropped.items())))
    for topic, reasons in sorted(report.dead_letter_reasons.items()):
        lines.append(f"{topic}: " + ", ".join(f"{reason} {n:,}"
                                              for reason, n in sorted(reasons.items())))
    if report.exchange_dead_letters:
        lines.append(f"exchange messages the ingest dead-lettered (no record id): "
                     f"{report.exchange_dead_letters:,}")
    summary = latency_summary(report)
    latency = summary["all"]
    if latency["n"]:  # type: ignore[index]
        lines.append("receive -> prediction latency: " + ", ".join(
            f"{k} {v:,.1f} ms" for k, v in latency.items() if k != "n"))  # type: ignore[union-attr]
        for stage, values in summary["by_stage"].items():  # type: ignore[union-attr]
            if stage != "what":
                lines.append(f"  {stage:<10} " + ", ".join(f"{k} {v:,.1f} ms"
                                                          for k, v in values.items()))
    bad = {name: n for name, n in report.problems.items() if n}
    for name, n in sorted(bad.items()):
        examples = ", ".join(report.examples.get(name, []))
        lines.append(f"  !! {name}: {n:,}" + (f" (e.g. {examples})" if examples else ""))
    pending = f", {total.pending:,} still in flight" if total.pending else ""
    if report.balanced:
        lines.append(f"LEDGER BALANCED: {total.produced:,} ticks, 0 missing{pending}")
    else:
        lines.append(f"LEDGER RED: {total.missing:,} missing, "
                     f"{sum(bad.values()):,} problems in all{pending}")
    return "\n".join(lines)
