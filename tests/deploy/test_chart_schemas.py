"""Every rendered object validates strictly: Kubernetes objects against the
schemas of each supported Kubernetes version, Strimzi and Prometheus Operator
objects against their CRD schemas (../shared/crds). The same holds for the
manifests kept in k8s/."""

from __future__ import annotations

import jsonschema
import kubernetes_validate
import pytest
import yaml
from deploytools import K8S_DIR, KUBERNETES_VERSIONS, crd_schemas, k8s_errors, render, strict_schema

CRD_GROUPS = ("kafka.strimzi.io/", "monitoring.coreos.com/")
VALUE_SETS = {
    "defaults": (),
    "baseline": ("model.variant=baseline",),
    "everything-on": (
        "kafka.cluster.create=true",
        "api.autoscaling.enabled=true",
        "ingest.pdb.enabled=true",
        "consumer.pdb.enabled=true",
        "image.pullSecrets[0].name=regcred",
        "api.nodeSelector.disk=ssd",
        "api.tolerations[0].key=dedicated",
        "api.tolerations[0].operator=Exists",
        "api.tolerations[0].effect=NoSchedule",
        "networkPolicy.apiIngressFrom[0].namespaceSelector.matchLabels.team=quant",
    ),
    "minimal": ("networkPolicy.enabled=false", "mlflow.enabled=false", "kafka.topics.create=false"),
}


def _is_crd_object(obj: dict) -> bool:
    return obj["apiVersion"].startswith(CRD_GROUPS)


def _k8s_manifests() -> list[dict]:
    objs = []
    for path in sorted(K8S_DIR.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "apiVersion" in doc and "kind" in doc and "metadata" in doc:
                objs.append(doc)
    return objs


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("values", VALUE_SETS, ids=list(VALUE_SETS))
def test_core_objects_validate_strictly(values: str, version: str) -> None:
    objs = [o for o in render(*VALUE_SETS[values]) if not _is_crd_object(o)]
    assert len(objs) > 10
    errors = [err for obj in objs for err in k8s_errors(obj, version)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_k8s_dir_core_manifests_validate_strictly(version: str) -> None:
    objs = [
        o
        for o in _k8s_manifests()
        if not _is_crd_object(o) and not o["apiVersion"].startswith("kind.x-k8s.io")
    ]
    assert objs
    errors = [err for obj in objs for err in k8s_errors(obj, version)]
    assert not errors, "\n".join(errors)


def _validate_crd_object(obj: dict, schemas: dict) -> list[str]:
    key = (obj["apiVersion"], obj["kind"])
    assert key in schemas, f"no CRD schema for {key}"
    validator = jsonschema.Draft7Validator(strict_schema(schemas[key]))
    where = f"{obj['kind']}/{obj['metadata']['name']}"
    return [
        f"{where} at {'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(obj)
    ]


@pytest.mark.parametrize("values", VALUE_SETS, ids=list(VALUE_SETS))
def test_custom_resources_validate_against_crds(values: str) -> None:
    schemas = crd_schemas()
    objs = [o for o in render(*VALUE_SETS[values]) if _is_crd_object(o)]
    errors = [err for obj in objs for err in _validate_crd_object(obj, schemas)]
    assert not errors, "\n".join(errors)


def test_every_crd_kind_is_exercised() -> None:
    schemas = crd_schemas()
    kinds = {
        (o["apiVersion"], o["kind"])
        for o in render(*VALUE_SETS["everything-on"])
        if _is_crd_object(o)
    }
    kinds |= {(o["apiVersion"], o["kind"]) for o in _k8s_manifests() if _is_crd_object(o)}
    assert kinds == {
        ("kafka.strimzi.io/v1", "Kafka"),
        ("kafka.strimzi.io/v1", "KafkaNodePool"),
        ("kafka.strimzi.io/v1", "KafkaTopic"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
    }
    assert kinds <= set(schemas)


def test_k8s_dir_custom_resources_validate_against_crds() -> None:
    schemas = crd_schemas()
    objs = [o for o in _k8s_manifests() if _is_crd_object(o)]
    assert {o["kind"] for o in objs} >= {"Kafka", "KafkaNodePool"}
    errors = [err for obj in objs for err in _validate_crd_object(obj, schemas)]
    assert not errors, "\n".join(errors)


def test_strict_crd_validation_catches_unknown_fields() -> None:
    """The strict CRD check is not vacuous: a misspelt field is reported."""
    schemas = crd_schemas()
    topic = next(o for o in render() if o["kind"] == "KafkaTopic")
    bad = {**topic, "spec": {**topic["spec"], "partition": 3}}
    assert any("partition" in e for e in _validate_crd_object(bad, schemas))
    sm = next(o for o in render() if o["kind"] == "ServiceMonitor")
    bad = {**sm, "spec": {**sm["spec"], "endpoints": [{"port": "http", "intervall": "5s"}]}}
    assert any("intervall" in e for e in _validate_crd_object(bad, schemas))


def test_strict_core_validation_catches_unknown_fields() -> None:
    dep = next(o for o in render() if o["kind"] == "Deployment")
    bad = {**dep, "spec": {**dep["spec"], "replica": 2}}
    assert any("replica" in e for e in k8s_errors(bad, KUBERNETES_VERSIONS[-1]))
    # the package's own entry point agrees with the cached validators
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSIONS[-1], strict=True)
    kubernetes_validate.validate(dep, KUBERNETES_VERSIONS[-1], strict=True)
