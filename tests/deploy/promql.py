"""The metric contract (docs/metrics.md) and the PromQL expressions the project
ships (alert/recording rules, dashboard panels), read for the deploy tests."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from deploytools import DASHBOARDS_DIR, REPO_ROOT, RULES_FILE

METRICS_DOC = REPO_ROOT / "docs" / "metrics.md"
# labels Prometheus attaches to every scraped series (kube-prometheus-stack adds the rest)
TARGET_LABELS = {"namespace", "instance", "job", "pod", "service", "container", "endpoint"}
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
# Grafana variables, replaced by what they select locally ("all namespaces")
GRAFANA_VARS = {"$__rate_interval": "1m", "$namespace": ".*"}

_SELECTOR = re.compile(r"\b(cryptovol_[a-z0-9_]+)\b(\{[^}]*\})?")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_RECORDED = re.compile(r"\b(cryptovol:[a-z0-9_:]+)\b(\{[^}]*\})?")


@dataclass(frozen=True)
class Metric:
    name: str
    type: str
    labels: frozenset[str]


@dataclass(frozen=True)
class Expr:
    origin: str  # "alert X", "record X", "dashboard D / panel P [A]"
    expr: str


@dataclass(frozen=True)
class Selector:
    metric: str  # the series name as written (e.g. ..._bucket)
    base: str  # the documented metric
    matchers: tuple[tuple[str, str, str], ...]


def documented_metrics(path: Path = METRICS_DOC) -> dict[str, Metric]:
    """Rows of the metric tables: | `name` | type | `label`, ... | meaning |."""
    out: dict[str, Metric] = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`cryptovol_"):
            continue
        name = cells[0].strip("`")
        labels = frozenset(re.findall(r"`([a-z][a-z0-9_]*)`", cells[2]))
        out[name] = Metric(name, cells[1], labels)
    return out


def rule_groups() -> list[dict]:
    return yaml.safe_load(RULES_FILE.read_text())["groups"]


def rule_exprs() -> list[Expr]:
    out = []
    for group in rule_groups():
        for rule in group["rules"]:
            kind = "alert" if "alert" in rule else "record"
            out.append(Expr(f"{kind} {rule.get('alert') or rule.get('record')}", rule["expr"]))
    return out


def dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS_DIR.glob("*.json"))}


def substitute_grafana_vars(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    return expr


def dashboard_exprs() -> list[Expr]:
    out = []
    for name, board in dashboards().items():
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                origin = f"dashboard {name} / {panel['title']} [{target['refId']}]"
                out.append(Expr(origin, substitute_grafana_vars(target["expr"])))
    return out


def selectors(expr: str, metrics: dict[str, Metric]) -> list[Selector]:
    out = []
    for name, braces in _SELECTOR.findall(expr):
        base = name
        if name not in metrics:
            for suffix in HISTOGRAM_SUFFIXES:
                if name.endswith(suffix) and name[: -len(suffix)] in metrics:
                    base = name[: -len(suffix)]
        out.append(Selector(name, base, tuple(_MATCHER.findall(braces or ""))))
    return out


def recorded_series(expr: str) -> list[str]:
    return [name for name, _ in _RECORDED.findall(expr)]


def grouping_labels(expr: str) -> set[str]:
    return {
        lbl.strip() for group in _GROUPING.findall(expr) for lbl in group.split(",") if lbl.strip()
    }


def contract_violations(item: Expr, metrics: dict[str, Metric], recorded: set[str]) -> list[str]:
    """Names and labels in an expression that the metric contract does not provide."""
    problems = []
    sels = selectors(item.expr, metrics)
    allowed = set(TARGET_LABELS)
    for sel in sels:
        metric = metrics.get(sel.base)
        if metric is None:
            problems.append(f"{item.origin}: unknown metric {sel.metric}")
            continue
        if sel.metric != sel.base and metric.type != "histogram":
            problems.append(f"{item.origin}: {sel.metric} but {sel.base} is a {metric.type}")
        labels = set(metric.labels) | TARGET_LABELS
        if sel.metric.endswith("_bucket"):
            labels.add("le")
        allowed |= labels
        for label, _op, _value in sel.matchers:
            if label not in labels:
                problems.append(f"{item.origin}: {sel.metric} has no label {label!r}")
    for name in recorded_series(item.expr):
        if name not in recorded:
            problems.append(f"{item.origin}: no recording rule {name}")
    if recorded_series(item.expr):
        allowed |= {"namespace"}
    for label in grouping_labels(item.expr) - allowed:
        problems.append(f"{item.origin}: groups by {label!r}, which none of its metrics carries")
    return problems
