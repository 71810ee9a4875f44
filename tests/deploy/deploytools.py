"""Helpers shared by the deploy tests: locating the pinned tools, rendering the
chart with the real helm CLI, and reading the CRD schemas."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "cryptovol"
RULES_FILE = CHART_DIR / "files" / "rules" / "cryptovol-rules.yaml"
DASHBOARDS_DIR = CHART_DIR / "files" / "dashboards"
K8S_DIR = REPO_ROOT / "k8s"
CACHE = Path(os.environ.get("CRYPTOVOL_CACHE", Path.home() / ".cache" / "cryptovol"))
TOOLS_BIN = Path(os.environ.get("CRYPTOVOL_TOOLS_BIN", CACHE / "bin"))
# generated/fetched from package registries by tools/install-crds.sh (part of `make install`)
CRD_DIRS = (CACHE / "crds" / "strimzi-1.2.0", CACHE / "crds" / "prometheus-operator-v0.93.1")
TOOLS_SHARE = TOOLS_BIN.parent / "share"
INSTALL_HINT = "run `bash tools/install-deploy-tools.sh` (part of `make install`)"

# Kubernetes minor versions the chart is validated against (Chart.yaml kubeVersion >=1.33).
KUBERNETES_VERSIONS = ("1.33.0", "1.34.0", "1.35.0", "1.36.0", "1.37.0")
SERVICES = ("api", "ingest", "featurizer", "consumer", "evaluator")
WORKERS = ("ingest", "featurizer", "consumer", "evaluator")


def tool(name: str) -> str:
    """Path of a deploy tool: the project's tool folder first, then PATH.
    A missing tool fails the test: `make test` must exercise it."""
    candidate = TOOLS_BIN / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    pytest.fail(f"`{name}` not found in {TOOLS_BIN} or PATH: {INSTALL_HINT}", pytrace=False)


def run(
    args: list[str], *, check: bool = True, timeout: float = 120, **kw: Any
) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        command = " ".join(args)
        raise AssertionError(
            f"{command} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


@functools.lru_cache(maxsize=64)
def _render(sets: tuple[str, ...], release: str, namespace: str, files: tuple[str, ...]) -> str:
    args = [tool("helm"), "template", release, str(CHART_DIR), "--namespace", namespace]
    for f in files:
        args += ["-f", f]
    for s in sets:
        args += ["--set", s]
    return run(args).stdout


def render(*sets: str, release: str = "cryptovol", namespace: str = "cryptovol",
           files: tuple[str, ...] = ()) -> list[dict]:
    """Render the chart with `helm template` (values `files`, then `sets`) and return its
    objects (cached per argument set)."""
    docs = yaml.safe_load_all(_render(tuple(sets), release, namespace, tuple(files)))
    return [d for d in docs if d]


def helm_template_error(*sets: str) -> str:
    """Render with values that should be rejected; return helm's error output."""
    args = [tool("helm"), "template", "x", str(CHART_DIR)]
    for s in sets:
        args += ["--set", s]
    proc = run(args, check=False)
    assert proc.returncode != 0, f"helm accepted {sets}"
    return proc.stderr


def by_kind(objs: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def container_env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> openAPIV3Schema of the Strimzi and prometheus-operator CRDs.
    A missing CRD folder fails the test: the schemas are part of what `make install` sets up."""
    missing = [str(d) for d in CRD_DIRS if not (d / ".complete").is_file()]
    if missing:
        pytest.fail(
            f"CRDs missing in {', '.join(missing)}: run `bash tools/install-crds.sh` "
            f"({INSTALL_HINT})",
            pytrace=False,
        )
    return _crd_schemas()


class _CrdLoader(yaml.SafeLoader):
    """SafeLoader that reads a bare `=` as the string it is (YAML 1.1's `value` tag; the
    Prometheus CRD has one among its enum values)."""


_CrdLoader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: node.value)


@functools.lru_cache(maxsize=1)
def _crd_schemas() -> dict[tuple[str, str], dict]:
    out: dict[tuple[str, str], dict] = {}
    for path in sorted(p for d in CRD_DIRS for p in d.glob("*.yaml")):
        for doc in yaml.load_all(path.read_text(), Loader=_CrdLoader):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group = doc["spec"]["group"]
            kind = doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                out[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return out


def strict_schema(schema: Any) -> Any:
    """Forbid unknown fields the way the API server's strict field validation does:
    every object schema with `properties` rejects other keys unless the schema
    preserves unknown fields."""
    if isinstance(schema, list):
        return [strict_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict_schema(v) for k, v in schema.items()}
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.lru_cache(maxsize=8)
def _k8s_definitions(version: str) -> Any:
    from kubernetes_validate import utils as kv
    from referencing import Registry, Resource

    defs = kv.schema_contents(
        f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version
    )
    return Resource.from_contents(defs) @ Registry()


@functools.lru_cache(maxsize=512)
def _k8s_validator(version: str, api_version: str, kind: str) -> Any:
    """Strict validator from the schemas that ship with `kubernetes-validate`, resolved
    the way kubernetes_validate.validate does, built once per (version, kind)."""
    import re

    import jsonschema
    from kubernetes_validate import utils as kv
    from referencing import Resource

    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    name = f"kubernetes-json-schema/v{version}-local-strict/{kind.lower()}-{group}.json"
    try:
        schema = kv.schema_contents(name, version)
    except FileNotFoundError:
        return None
    registry = Resource.from_contents(schema) @ _k8s_definitions(version)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def k8s_errors(obj: dict, version: str) -> list[str]:
    """Strict schema errors of a Kubernetes object for one Kubernetes version."""
    validator = _k8s_validator(version, obj["apiVersion"], obj["kind"])
    where = f"{obj['kind']}/{obj.get('metadata', {}).get('name')} (Kubernetes {version})"
    if validator is None:
        return [f"{where}: no schema for {obj['apiVersion']} {obj['kind']}"]
    return [
        f"{where} at {'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(obj)
    ]
