"""Which connections `make e2e` tries to prove the NetworkPolicies enforced, from the same
table the chart renders them from (`networkPolicy.egress` of the release's values).

Per component of the release: every peer it lists is reached (allowed), and every other
target is not (denied), in both directions' sense: the source's egress lacks it, or the
target's ingress does. A target only counts for a denied connection when some allowed check
reaches it too, so a refusal shows a policy, never a port nobody listens on. Last, a pod
outside the release (the stranger) must not reach any component another component reaches.
Pure: values in, checks out; tests/e2e/run.py executes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

STRANGER = "stranger"


@dataclass(frozen=True)
class Check:
    source: str  # a component of the release, or STRANGER
    target: str  # a component or an entry of networkPolicy.external
    host: str
    port: int
    allowed: bool


def external_addresses(values: dict) -> dict[str, tuple[str, int]]:
    """Where the external peers the e2e knows are reached: Kafka's bootstrap server and the
    exchange ingest subscribes to."""
    bootstrap = values["kafka"].get("bootstrapServers") or (
        f"{values['kafka']['clusterName']}-kafka-bootstrap:9092")
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    found = {"kafka": (host, int(port))}
    exchange = urlparse(values.get("ingest", {}).get("coinbaseWsUrl", ""))
    if exchange.hostname and exchange.port:
        found["exchange"] = (exchange.hostname, exchange.port)
    return found


def plan(values: dict, release: str, components: list[str]) -> list[Check]:
    """The checks for the release's `components` (those with a Deployment) under `values`
    (the release's computed values)."""
    egress: dict[str, list[str]] = values["networkPolicy"]["egress"]
    external = external_addresses(values)

    def address(peer: str) -> tuple[str, int] | None:
        if peer in values["networkPolicy"]["external"]:
            return external.get(peer)
        port = (values.get(peer) or {}).get("port")
        return (f"{release}-{peer}", int(port)) if port and peer in components else None

    allowed = [Check(c, p, *addr, allowed=True) for c in components
               for p in egress.get(c, []) if (addr := address(p))]
    reached = {check.target for check in allowed}
    denied = [Check(c, t, *addr, allowed=False) for c in components for t in sorted(reached)
              if t != c and t not in egress.get(c, []) and (addr := address(t))]
    stranger = [Check(STRANGER, t, *addr, allowed=False) for t in sorted(reached)
                if t in components and (addr := address(t))]
    return allowed + denied + stranger
