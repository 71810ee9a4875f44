"""The connections `make e2e` tries on a cluster that enforces NetworkPolicies
(tests/e2e/policies.py): derived from the values' egress table, an allowed and a denied one
per component, and the table's changes show in the plan."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
sys.path.insert(0, str(REPO / "tools"))
import policies  # noqa: E402

from services import services  # noqa: E402


def _merge(base: dict, over: dict) -> dict:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def _e2e_values() -> dict:
    """The values `make e2e` installs on the bare cluster."""
    values = yaml.safe_load((REPO / "charts" / "cryptovol" / "values.yaml").read_text())
    for extra in ("k8s/bare/values.yaml", "tests/e2e/values.yaml"):
        _merge(values, yaml.safe_load((REPO / extra).read_text()))
    return values


COMPONENTS = [s.name for s in services()]


def test_every_component_has_an_allowed_and_a_denied_connection() -> None:
    checks = policies.plan(_e2e_values(), "cryptovol", COMPONENTS)
    for component in COMPONENTS:
        mine = [c for c in checks if c.source == component]
        assert any(c.allowed for c in mine), component
        assert any(not c.allowed for c in mine), component
    # and a pod outside the release is refused by every component it targets
    assert any(c.source == policies.STRANGER for c in checks)
    assert all(not c.allowed for c in checks if c.source == policies.STRANGER)


def test_the_plan_is_the_egress_table() -> None:
    values = _e2e_values()
    egress = values["networkPolicy"]["egress"]
    checks = policies.plan(values, "cryptovol", COMPONENTS)
    allowed = {(c.source, c.target) for c in checks if c.allowed}
    denied = {(c.source, c.target) for c in checks if not c.allowed}
    assert allowed == {(c, p) for c in COMPONENTS for p in egress[c]}
    assert not allowed & denied
    assert all(target not in egress[source] for source, target in denied
               if source != policies.STRANGER)
    addresses = {(c.target, c.host, c.port) for c in checks}
    assert ("kafka", "kafka.cryptovol.svc.cluster.local", 9092) in addresses
    assert ("exchange", "cryptovol-e2e-exchange", 8765) in addresses
    assert ("api", "cryptovol-api", values["api"]["port"]) in addresses


def test_a_changed_table_changes_the_plan() -> None:
    values = copy.deepcopy(_e2e_values())
    values["networkPolicy"]["egress"]["featurizer"].append("api")
    values["networkPolicy"]["egress"]["consumer"].remove("api")
    checks = {(c.source, c.target): c.allowed
              for c in policies.plan(values, "cryptovol", COMPONENTS)}
    assert checks[("featurizer", "api")] is True
    assert checks[("consumer", "api")] is False
