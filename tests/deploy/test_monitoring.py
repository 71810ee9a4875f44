"""Alerts and dashboards: promtool checks and unit tests, and every expression
uses only the metrics and labels of the contract in docs/metrics.md."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from deploytools import REPO_ROOT, RULES_FILE, by_kind, render, run, tool
from promql import (
    contract_violations,
    dashboard_exprs,
    dashboards,
    documented_metrics,
    rule_exprs,
    rule_groups,
)

PROMTOOL_TESTS = REPO_ROOT / "tests" / "deploy" / "promtool" / "cryptovol-rules.test.yaml"


def _alerts() -> list[str]:
    return [r["alert"] for g in rule_groups() for r in g["rules"] if "alert" in r]


def _recorded() -> set[str]:
    return {r["record"] for g in rule_groups() for r in g["rules"] if "record" in r}


def test_promtool_check_rules() -> None:
    out = run([tool("promtool"), "check", "rules", str(RULES_FILE)]).stdout
    assert f"SUCCESS: {sum(len(g['rules']) for g in rule_groups())} rules found" in out


def test_promtool_unit_tests_pass() -> None:
    out = run([tool("promtool"), "test", "rules", str(PROMTOOL_TESTS)], cwd=PROMTOOL_TESTS.parent)
    assert "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    tests = yaml.safe_load(PROMTOOL_TESTS.read_text())["tests"]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = set(_alerts())
    assert len(alerts) >= 10
    assert alerts - fires == set(), "alerts never shown to fire"
    assert alerts - quiet == set(), "alerts never shown to stay quiet"


def test_alerts_cover_the_operational_risks() -> None:
    exprs = {
        e.origin.removeprefix("alert "): e.expr
        for e in rule_exprs()
        if e.origin.startswith("alert ")
    }
    joined = " ".join(exprs.values())
    for needle in (
        "cryptovol:api_predict_slow",  # latency SLO burn
        "cryptovol:api_predict_errors",  # error ratio
        "cryptovol_api_model_loaded",
        "cryptovol_consumer_last_prediction_timestamp_seconds",  # stale predictions
        "cryptovol_consumer_lag",
        "cryptovol_featurizer_consumer_lag",
        "cryptovol_ingest_connected",
        "cryptovol_ingest_sequence_gaps_total",
        "cryptovol_ingest_reconnects_total",
        "cryptovol_evaluator_pr_auc",  # the served model below persistence
        "cryptovol_api_feature_psi",  # input drift
        "cryptovol_evaluator_label_coverage",
        "cryptovol_evaluator_last_graded_timestamp_seconds",
    ):
        assert needle in joined, needle
    for group in rule_groups():
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["labels"]["severity"] in {"page", "ticket"}
                assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_rendered_prometheus_rule_is_the_tested_rule_file(tmp_path: Path) -> None:
    rule = by_kind(render(), "PrometheusRule")["cryptovol"]
    assert rule["spec"]["groups"] == rule_groups()
    extracted = tmp_path / "rendered.rules.yaml"
    extracted.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    run([tool("promtool"), "check", "rules", str(extracted)])


def test_rule_expressions_follow_the_metric_contract() -> None:
    metrics = documented_metrics()
    assert len(metrics) >= 30
    problems = [p for e in rule_exprs() for p in contract_violations(e, metrics, _recorded())]
    assert not problems, "\n".join(problems)


def test_dashboard_expressions_follow_the_metric_contract() -> None:
    metrics = documented_metrics()
    problems = [p for e in dashboard_exprs() for p in contract_violations(e, metrics, _recorded())]
    assert not problems, "\n".join(problems)


def test_contract_check_notices_wrong_names_and_labels() -> None:
    from promql import Expr

    metrics = documented_metrics()
    bad = [
        Expr("x", "sum(rate(cryptovol_api_request_total[5m]))"),
        Expr("x", 'cryptovol_api_model_loaded{variant="ml"}'),
        Expr("x", "sum by (product) (rate(cryptovol_ingest_ticks_published_total[5m]))"),
        Expr("x", "cryptovol_api_model_loaded_bucket"),
    ]
    for expr in bad:
        assert contract_violations(expr, metrics, _recorded()), expr.expr


def test_dashboard_expressions_parse(tmp_path: Path) -> None:
    """promtool parses each panel query (wrapped as a recording rule)."""
    exprs = dashboard_exprs()
    rules = [{"record": f"dashboard:query_{i}:check", "expr": e.expr} for i, e in enumerate(exprs)]
    path = tmp_path / "dashboards.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    out = run([tool("promtool"), "check", "rules", str(path)]).stdout
    assert f"SUCCESS: {len(rules)} rules found" in out


@pytest.mark.parametrize(
    ("topic", "needles"),
    [
        ("request rate", ["rate(cryptovol_api_requests_total"]),
        ("error ratio", ['status=~"5.."']),
        (
            "latency quantiles vs SLO",
            [
                "histogram_quantile(0.5,",
                "histogram_quantile(0.95,",
                "histogram_quantile(0.99,",
                'le="0.25"',
            ],
        ),
        ("score distribution by variant", ["cryptovol_api_score_bucket"]),
        (
            "spike rate by variant",
            ["cryptovol_api_spikes_total", "cryptovol_consumer_spikes_total"],
        ),
        ("prediction freshness", ["cryptovol_consumer_last_prediction_timestamp_seconds"]),
        ("consumer lag", ["cryptovol_consumer_lag", "cryptovol_featurizer_consumer_lag"]),
        (
            "ingest reconnects and gaps",
            ["cryptovol_ingest_reconnects_total", "cryptovol_ingest_sequence_gaps_total"],
        ),
        (
            "live quality of champion, shadow and persistence",
            ["cryptovol_evaluator_pr_auc", "cryptovol_evaluator_f1",
             "cryptovol_evaluator_calibration_observed_rate", "cryptovol_evaluator_brier"],
        ),
        ("drift per feature", ["cryptovol_api_feature_psi", "cryptovol_api_score_psi"]),
        ("label coverage", ["cryptovol_evaluator_label_coverage"]),
        (
            "featurizer throughput",
            [
                "cryptovol_featurizer_rows_emitted_total",
                "cryptovol_featurizer_ticks_consumed_total",
            ],
        ),
    ],
)
def test_dashboards_show(topic: str, needles: list[str]) -> None:
    joined = "\n".join(e.expr for e in dashboard_exprs())
    for needle in needles:
        assert needle in joined, f"{topic}: {needle}"


def test_dashboard_json_structure() -> None:
    boards = dashboards()
    assert len({b["uid"] for b in boards.values()}) == len(boards)
    for name, board in boards.items():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), name
        variables = {v["name"] for v in board["templating"]["list"]}
        assert {"datasource", "namespace"} <= variables
        for panel in board["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"] and panel["description"], panel["title"]
            for target in panel["targets"]:
                assert 'namespace=~"$namespace"' in target["expr"], (name, panel["title"])
