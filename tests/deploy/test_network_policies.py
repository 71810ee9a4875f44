"""The rendered NetworkPolicies allow exactly the flows of the data flow.

A small evaluator applies the policies (podSelector/namespaceSelector/ipBlock
peers, numeric and named ports) to a set of endpoints and compares every
allowed connection with the expected list."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product

from deploytools import by_kind, render

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
    _chart_pod("mlflow", {"http": 5000}),
    _chart_pod("test"),
    Endpoint("kafka", NAMESPACE, {"strimzi.io/cluster": "cryptovol", "strimzi.io/kind": "Kafka"}),
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
    ("api", "mlflow", 5000),
    ("test", "api", 8000),
    ("prometheus", "api", 8000),
    ("prometheus", "ingest", 9100),
    ("prometheus", "featurizer", 9100),
    ("prometheus", "consumer", 9100),
} | {(c, "dns", 53) for c in ("api", "ingest", "featurizer", "consumer", "mlflow", "test")}


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
    chart = {"api", "ingest", "featurizer", "consumer", "mlflow", "test"}
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


def test_without_mlflow_the_api_has_no_egress_but_dns() -> None:
    policies = list(by_kind(render("mlflow.enabled=false"), "NetworkPolicy").values())
    # (no mlflow pod exists then; its default-deny DNS rule is harmless)
    assert _flows(policies) == EXPECTED - {("api", "mlflow", 5000)}


def test_extra_api_clients_can_be_allowed() -> None:
    policies = list(
        by_kind(
            render(
                "networkPolicy.apiIngressFrom[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=default",
            ),
            "NetworkPolicy",
        ).values()
    )
    assert _flows(policies) == EXPECTED | {("other-namespace", "api", 8000)}


def test_evaluator_sees_an_open_cluster_without_policies() -> None:
    flows = _flows([])
    assert ("stranger", "api", 8000) in flows and ("featurizer", "api", 8000) in flows
