"""The rendered NetworkPolicies allow exactly the flows of the data flow.

A small evaluator applies the policies (podSelector/namespaceSelector/ipBlock
peers, numeric and named ports) to a set of endpoints and compares every
allowed connection with the expected list, and with the flows the values'
one table (networkPolicy.egress / external) implies."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product

import pytest
import yaml
from deploytools import CHART_DIR, REPO_ROOT, by_kind, helm_template_error, render

NAMESPACE = "cryptovol"


@dataclass(frozen=True)
class Endpoint:
    name: str
    namespace: str | None  # None: outside the cluster
    labels: dict = field(default_factory=dict, hash=False, compare=False)
    ports: dict = field(default_factory=dict, hash=False, compare=False)  # named ports


def _chart_pod(component: str, ports: dict | None = None) -> Endpoint:
    labels = {
        "app.kubernetes.io/name": "cryptovol",
        "app.kubernetes.io/instance": "cryptovol",
        "app.kubernetes.io/component": component,
    }
    return Endpoint(component, NAMESPACE, labels, ports or {})


ENDPOINTS = [
    _chart_pod("api", {"http": 8000}),
    _chart_pod("ingest", {"metrics": 9100}),
    _chart_pod("featurizer", {"metrics": 9100}),
    _chart_pod("consumer", {"metrics": 9100}),
    _chart_pod("evaluator", {"metrics": 9100}),
    _chart_pod("mlflow", {"http": 5000}),
    _chart_pod("test"),
    Endpoint("kafka", NAMESPACE, {"strimzi.io/cluster": "cryptovol", "strimzi.io/kind": "Kafka"}),
    # the bare cluster's broker (k8s/bare/addons/kafka.yaml)
    Endpoint("bare-kafka", NAMESPACE, {"app.kubernetes.io/name": "kafka"}),
    Endpoint("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"}),
    Endpoint("dns", "kube-system", {"k8s-app": "kube-dns"}),
    Endpoint("stranger", NAMESPACE, {"app": "something-else"}),
    Endpoint("other-namespace", "default", {"app": "client"}),
    Endpoint("internet", None),
]
PORTS = (8000, 9100, 5000, 9092, 443, 53)

EXPECTED = {
    ("ingest", "kafka", 9092),
    ("ingest", "internet", 443),
    ("featurizer", "kafka", 9092),
    ("consumer", "kafka", 9092),
    ("consumer", "api", 8000),
    ("evaluator", "kafka", 9092),
    # the API's /health probes Kafka; it never calls MLflow
    ("api", "kafka", 9092),
    ("test", "api", 8000),
    ("prometheus", "api", 8000),
    ("prometheus", "ingest", 9100),
    ("prometheus", "featurizer", 9100),
    ("prometheus", "consumer", 9100),
    ("prometheus", "evaluator", 9100),
} | {(c, "dns", 53) for c in ("api", "ingest", "featurizer", "consumer", "evaluator", "mlflow",
                              "test")}


def _selects(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, f"evaluator does not handle {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _peer_matches(peer: dict, policy_ns: str, ep: Endpoint) -> bool:
    if "ipBlock" in peer:
        return ep.namespace is None  # only addresses outside the cluster
    if ep.namespace is None:
        return False
    if "namespaceSelector" in peer:
        ns_labels = {"kubernetes.io/metadata.name": ep.namespace}
        if not _selects(peer["namespaceSelector"], ns_labels):
            return False
    elif ep.namespace != policy_ns:
        return False
    return _selects(peer.get("podSelector", {}), ep.labels)


def _port_matches(rule: dict, port: int, target: Endpoint) -> bool:
    if not rule.get("ports"):
        return True
    for p in rule["ports"]:
        number = target.ports.get(p["port"]) if isinstance(p["port"], str) else p["port"]
        if number == port:
            return True
    return False


def _rules(policies: list[dict], ep: Endpoint, direction: str) -> list[dict] | None:
    """Rules of the policies that select `ep` for a direction; None: not isolated."""
    selecting = [
        p
        for p in policies
        if ep.namespace == NAMESPACE
        and _selects(p["spec"]["podSelector"], ep.labels)
        and direction.capitalize() in p["spec"]["policyTypes"]
    ]
    if not selecting:
        return None
    return [r for p in selecting for r in (p["spec"].get(direction) or [])]


def _allowed(policies: list[dict], src: Endpoint, dst: Endpoint, port: int) -> bool:
    egress = _rules(policies, src, "egress")
    if egress is not None and not any(
        any(_peer_matches(peer, NAMESPACE, dst) for peer in r.get("to", []))
        and _port_matches(r, port, dst)
        for r in egress
    ):
        return False
    ingress = _rules(policies, dst, "ingress")
    return ingress is None or any(
        any(_peer_matches(peer, NAMESPACE, src) for peer in r.get("from", []))
        and _port_matches(r, port, dst)
        for r in ingress
    )


def _flows(policies: list[dict]) -> set[tuple[str, str, int]]:
    chart = {"api", "ingest", "featurizer", "consumer", "evaluator", "mlflow", "test"}
    flows = set()
    for src, dst, port in product(ENDPOINTS, ENDPOINTS, PORTS):
        if src is dst or (src.name not in chart and dst.name not in chart):
            continue  # only connections touching the release's pods are ours to police
        if _allowed(policies, src, dst, port):
            flows.add((src.name, dst.name, port))
    return flows


def test_only_data_flow_connections_are_allowed() -> None:
    policies = list(by_kind(render(), "NetworkPolicy").values())
    assert _flows(policies) == EXPECTED


def test_without_mlflow_nothing_else_changes() -> None:
    policies = list(by_kind(render("mlflow.enabled=false"), "NetworkPolicy").values())
    # (no mlflow pod exists then; its default-deny DNS rule is harmless)
    assert _flows(policies) == EXPECTED


def test_extra_api_clients_can_be_allowed() -> None:
    policies = list(
        by_kind(
            render(
                "networkPolicy.ingressFrom.api[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=default",
            ),
            "NetworkPolicy",
        ).values()
    )
    assert _flows(policies) == EXPECTED | {("other-namespace", "api", 8000)}


# ---- the one table in the values -------------------------------------------------------
SCRAPED = {"api": 8000, "ingest": 9100, "featurizer": 9100, "consumer": 9100, "evaluator": 9100}
EXTERNAL_ENDPOINT = {"kafka": "kafka", "exchange": "internet"}


def _implied(values: dict, external_endpoint: dict[str, str] = EXTERNAL_ENDPOINT) -> set:
    """The flows the values' table declares: each egress edge (to a component on its port, to
    an external peer on its ports), Prometheus to every scraped component, DNS for all."""
    np = values["networkPolicy"]
    flows = {("prometheus", comp, port) for comp, port in SCRAPED.items()}
    flows |= {(c, "dns", 53) for c in ("api", "ingest", "featurizer", "consumer", "evaluator",
                                       "mlflow", "test")}
    for comp, peers in np["egress"].items():
        for peer in peers:
            if peer in np["external"]:
                ports = np["external"][peer]["ports"]
                flows |= {(comp, external_endpoint[peer], port) for port in ports}
            else:
                flows.add((comp, peer, values[peer]["port"]))
    return flows


def _values(*overrides: dict) -> dict:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    for override in overrides:
        _merge(values, override)
    return values


def _merge(base: dict, override: dict) -> None:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def test_the_default_policies_are_the_values_table() -> None:
    policies = list(by_kind(render(), "NetworkPolicy").values())
    assert _flows(policies) == _implied(_values()) == EXPECTED


@pytest.mark.parametrize(
    "egress",
    [
        # a new stage that reads Kafka and calls the API (the shape of an evaluator)
        {"featurizer": ["kafka", "api"]},
        # the consumer loses its API edge: the API's ingress closes with it
        {"consumer": ["kafka"]},
        # the API opens an edge to MLflow: MLflow's ingress opens for it
        {"api": ["kafka", "mlflow"]},
    ],
    ids=["featurizer-to-api", "no-consumer-to-api", "api-to-mlflow"],
)
def test_changing_the_table_changes_both_ends(egress: dict, tmp_path) -> None:
    override = {"networkPolicy": {"egress": egress}}
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(override))
    policies = list(by_kind(render(files=(str(values_file),)), "NetworkPolicy").values())
    assert _flows(policies) == _implied(_values(override))


def test_bare_cluster_values_point_kafka_at_its_broker() -> None:
    bare = REPO_ROOT / "k8s" / "bare" / "values.yaml"
    policies = list(by_kind(render(files=(str(bare),)), "NetworkPolicy").values())
    values = _values(yaml.safe_load(bare.read_text()))
    implied = _implied(values, {**EXTERNAL_ENDPOINT, "kafka": "bare-kafka"})
    # MLflow is off there: its policy is not rendered, but the table is the same
    assert _flows(policies) == implied
    assert ("ingest", "bare-kafka", 9092) in implied and ("ingest", "kafka", 9092) not in implied


def test_a_peer_that_is_neither_component_nor_external_is_an_error() -> None:
    err = helm_template_error("networkPolicy.egress.ingest={kafka,exchnage}")
    assert "exchnage" in err and "networkPolicy.external" in err


def test_evaluator_sees_an_open_cluster_without_policies() -> None:
    flows = _flows([])
    assert ("stranger", "api", 8000) in flows and ("featurizer", "api", 8000) in flows
