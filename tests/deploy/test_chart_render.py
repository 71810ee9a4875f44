"""The Helm chart, rendered by the real helm CLI: lint, per-service objects,
configuration contract, security settings and the model-rollback switch."""

from __future__ import annotations

import pytest
import yaml
from deploytools import (
    CHART_DIR,
    REPO_ROOT,
    SERVICES,
    WORKERS,
    by_kind,
    container_env,
    render,
    run,
    tool,
)


def _pod_specs(objs: list[dict]) -> dict[str, dict]:
    specs = {n: d["spec"]["template"]["spec"] for n, d in by_kind(objs, "Deployment").items()}
    specs.update({n: p["spec"] for n, p in by_kind(objs, "Pod").items()})
    return specs


@pytest.mark.parametrize(
    "sets",
    [
        (),
        ("model.variant=baseline",),
        (
            "kafka.cluster.create=true",
            "api.autoscaling.enabled=true",
            "networkPolicy.enabled=false",
        ),
        (
            "mlflow.externalTrackingUri=http://mlflow.example:5000",
            "monitoring.dashboards.enabled=false",
        ),
    ],
    ids=["defaults", "baseline", "kafka-hpa-no-netpol", "external-mlflow"],
)
def test_helm_lint_strict(sets: tuple[str, ...]) -> None:
    args = [tool("helm"), "lint", "--strict", str(CHART_DIR)]
    for s in sets:
        args += ["--set", s]
    out = run(args).stdout
    assert "0 chart(s) failed" in out, out


def test_chart_metadata_matches_service_versions() -> None:
    import tomllib

    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    for svc in SERVICES:
        meta = tomllib.loads((REPO_ROOT / "services" / svc / "pyproject.toml").read_text())
        assert meta["project"]["version"] == chart["appVersion"], (
            f"services/{svc} version differs from the chart appVersion (the default image tag)"
        )


def test_default_render_has_every_service() -> None:
    objs = render()
    deployments = by_kind(objs, "Deployment")
    assert set(deployments) == {f"cryptovol-{c}" for c in (*SERVICES, "mlflow")}
    for comp in (*SERVICES, "mlflow"):
        name = f"cryptovol-{comp}"
        assert name in by_kind(objs, "ServiceAccount")
        assert name in by_kind(objs, "Service")
        assert name in by_kind(objs, "NetworkPolicy")
    for comp in SERVICES:
        assert f"cryptovol-{comp}" in by_kind(objs, "ConfigMap")
        sm = by_kind(objs, "ServiceMonitor")[f"cryptovol-{comp}"]
        assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert set(by_kind(objs, "PodDisruptionBudget")) == {"cryptovol-api", "cryptovol-featurizer"}
    assert "cryptovol-mlflow" in by_kind(objs, "PersistentVolumeClaim")
    assert "cryptovol" in by_kind(objs, "PrometheusRule")
    topics = {t["spec"]["topicName"] for t in by_kind(objs, "KafkaTopic").values()}
    base = {"ticks.raw", "ticks.features", "predictions.log", "predictions.labelled"}
    assert topics == base | {f"{t}.dlq" for t in base}
    for topic in by_kind(objs, "KafkaTopic").values():
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "cryptovol"
    # the Kafka cluster itself comes from k8s/kafka unless asked for
    assert not by_kind(objs, "Kafka") and not by_kind(objs, "KafkaNodePool")
    assert not by_kind(objs, "HorizontalPodAutoscaler")


def test_model_variant_switch_rolls_the_api_pods() -> None:
    default, baseline = render(), render("model.variant=baseline")
    api_default = by_kind(default, "Deployment")["cryptovol-api"]
    api_baseline = by_kind(baseline, "Deployment")["cryptovol-api"]
    env_default = container_env(api_default["spec"]["template"]["spec"]["containers"][0])
    env_baseline = container_env(api_baseline["spec"]["template"]["spec"]["containers"][0])
    assert env_default["MODEL_VARIANT"] == "ml"
    assert env_baseline["MODEL_VARIANT"] == "baseline"
    # a changed pod template is what makes the Deployment roll its pods
    assert api_default["spec"]["template"] != api_baseline["spec"]["template"]
    # nothing else in the release changes
    for kind in ("Deployment", "ConfigMap", "Service", "NetworkPolicy"):
        for name, obj in by_kind(default, kind).items():
            if (kind, name) != ("Deployment", "cryptovol-api"):
                assert obj == by_kind(baseline, kind)[name], (
                    f"{kind}/{name} changed with model.variant"
                )


def test_config_change_rolls_pods_through_checksum() -> None:
    a = by_kind(render(), "Deployment")["cryptovol-featurizer"]
    b = by_kind(render("logLevel=DEBUG"), "Deployment")["cryptovol-featurizer"]
    ann_a = a["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    ann_b = b["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    assert ann_a != ann_b


def test_service_configuration_contract() -> None:
    objs = render()
    cms = by_kind(objs, "ConfigMap")
    common = {
        "KAFKA_BOOTSTRAP_SERVERS": "cryptovol-kafka-bootstrap:9092",
        "PRODUCTS": "BTC-USD,ETH-USD",
        "LOG_LEVEL": "INFO",
        "DATA_DIR": "/data",
        "MLFLOW_TRACKING_URI": "http://cryptovol-mlflow:5000",
    }
    for svc in SERVICES:
        data = cms[f"cryptovol-{svc}"]["data"]
        for key, value in common.items():
            assert data[key] == value, (svc, key)
    for svc in WORKERS:
        assert cms[f"cryptovol-{svc}"]["data"]["METRICS_PORT"] == "9100"
    assert cms["cryptovol-ingest"]["data"]["COINBASE_WS_URL"].startswith("wss://")
    assert cms["cryptovol-consumer"]["data"]["API_URL"] == "http://cryptovol-api:8000"
    assert cms["cryptovol-consumer"]["data"]["LOG_PREDICTIONS"] == "true"
    api = cms["cryptovol-api"]["data"]
    assert (api["API_HOST"], api["API_PORT"], api["MODELS_DIR"]) == (
        "0.0.0.0",
        "8000",
        "/app/models/artifacts",
    )
    env = container_env(
        by_kind(objs, "Deployment")["cryptovol-api"]["spec"]["template"]["spec"]["containers"][0]
    )
    assert env["MODEL_VERSION"] == "logistic_regression"


def test_overrides_reach_the_services() -> None:
    objs = render(
        "kafka.bootstrapServers=broker-0:9094",
        "products={BTC-USD,SOL-USD}",
        "consumer.apiUrl=http://other:8000",
        "api.env.UVICORN_WORKERS=2",
    )
    cms = by_kind(objs, "ConfigMap")
    assert cms["cryptovol-featurizer"]["data"]["KAFKA_BOOTSTRAP_SERVERS"] == "broker-0:9094"
    assert cms["cryptovol-ingest"]["data"]["PRODUCTS"] == "BTC-USD,SOL-USD"
    assert cms["cryptovol-consumer"]["data"]["API_URL"] == "http://other:8000"
    api = by_kind(objs, "Deployment")["cryptovol-api"]["spec"]["template"]["spec"]["containers"][0]
    assert container_env(api)["UVICORN_WORKERS"] == "2"


def test_ports_and_probes() -> None:
    objs = render()
    deps = by_kind(objs, "Deployment")
    api = deps["cryptovol-api"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "http", "containerPort": 8000, "protocol": "TCP"} in api["ports"]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for svc in WORKERS:
        c = deps[f"cryptovol-{svc}"]["spec"]["template"]["spec"]["containers"][0]
        assert {"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in c["ports"]
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        svc_obj = by_kind(objs, "Service")[f"cryptovol-{svc}"]
        assert svc_obj["spec"]["ports"][0]["targetPort"] == "metrics"
    sms = by_kind(objs, "ServiceMonitor")
    assert sms["cryptovol-api"]["spec"]["endpoints"][0]["port"] == "http"
    # without it Prometheus would rename the API's `endpoint` label to `exported_endpoint`
    assert sms["cryptovol-api"]["spec"]["endpoints"][0]["honorLabels"] is True
    for svc in WORKERS:
        assert sms[f"cryptovol-{svc}"]["spec"]["endpoints"][0]["port"] == "metrics"


@pytest.mark.parametrize(
    "sets", [(), ("kafka.cluster.create=true", "api.autoscaling.enabled=true")]
)
def test_every_pod_is_locked_down(sets: tuple[str, ...]) -> None:
    for name, spec in _pod_specs(render(*sets)).items():
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001, name
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        mounts_tmp = False
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], name
            mounts_tmp = mounts_tmp or any(
                m["mountPath"] == "/tmp" for m in c.get("volumeMounts", [])
            )
            if spec.get("restartPolicy") != "Never":
                assert {"livenessProbe", "readinessProbe"} <= set(c), name
        if spec.get("restartPolicy") != "Never":
            assert mounts_tmp, f"{name} has no writable /tmp under a read-only root"
            tmp = next(v for v in spec["volumes"] if v["name"] == "tmp")
            assert "emptyDir" in tmp


def test_images_follow_app_version_registry_and_digest() -> None:
    digest = "sha256:" + "ab" * 32
    objs = render(
        "image.registry=registry.local:5000/team",
        f"api.image.digest={digest}",
        "ingest.image.tag=dev1",
    )
    deps = by_kind(objs, "Deployment")
    image = lambda n: deps[n]["spec"]["template"]["spec"]["containers"][0]["image"]  # noqa: E731
    assert image("cryptovol-api") == f"registry.local:5000/team/cryptovol-api:0.1.0@{digest}"
    assert image("cryptovol-ingest") == "registry.local:5000/team/cryptovol-ingest:dev1"
    assert image("cryptovol-featurizer") == "registry.local:5000/team/cryptovol-featurizer:0.1.0"


def test_optional_objects() -> None:
    objs = render(
        "kafka.cluster.create=true", "api.autoscaling.enabled=true", "monitoring.release=prom"
    )
    hpa = by_kind(objs, "HorizontalPodAutoscaler")["cryptovol-api"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "cryptovol-api"
    assert "replicas" not in by_kind(objs, "Deployment")["cryptovol-api"]["spec"]
    kafka = by_kind(objs, "Kafka")["cryptovol"]
    assert kafka["spec"]["kafka"]["version"] == "4.3.1"
    pool = by_kind(objs, "KafkaNodePool")["dual-role"]
    assert set(pool["spec"]["roles"]) == {"controller", "broker"}
    # Strimzi copies these labels to the broker pods: the default-deny policy must not match
    deny = by_kind(objs, "NetworkPolicy")["cryptovol-default-deny"]["spec"]["podSelector"]
    for obj in (kafka, pool):
        labels = obj["metadata"]["labels"]
        assert not all(labels.get(k) == v for k, v in deny["matchLabels"].items())
    for kind in ("ServiceMonitor", "PrometheusRule"):
        for obj in by_kind(objs, kind).values():
            assert obj["metadata"]["labels"]["release"] == "prom"

    off = render(
        "networkPolicy.enabled=false",
        "monitoring.serviceMonitor.enabled=false",
        "monitoring.prometheusRule.enabled=false",
        "monitoring.dashboards.enabled=false",
        "kafka.topics.create=false",
        "mlflow.enabled=false",
        "tests.enabled=false",
    )
    kinds = {o["kind"] for o in off}
    assert not kinds & {
        "NetworkPolicy",
        "ServiceMonitor",
        "PrometheusRule",
        "KafkaTopic",
        "PersistentVolumeClaim",
        "Pod",
    }
    assert not [
        c
        for c in by_kind(off, "ConfigMap").values()
        if "grafana_dashboard" in c["metadata"]["labels"]
    ]
    assert "MLFLOW_TRACKING_URI" not in by_kind(off, "ConfigMap")["cryptovol-api"]["data"]


def test_external_mlflow_replaces_the_deployment() -> None:
    objs = render("mlflow.externalTrackingUri=http://mlflow.example:5000")
    assert "cryptovol-mlflow" not in by_kind(objs, "Deployment")
    for svc in SERVICES:
        assert (
            by_kind(objs, "ConfigMap")[f"cryptovol-{svc}"]["data"]["MLFLOW_TRACKING_URI"]
            == "http://mlflow.example:5000"
        )


def test_dashboards_are_configmaps_for_the_grafana_sidecar() -> None:
    dashboards = [
        c
        for c in by_kind(render(), "ConfigMap").values()
        if c["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    assert {c["metadata"]["name"] for c in dashboards} == {
        "cryptovol-dashboard-api",
        "cryptovol-dashboard-pipeline",
        "cryptovol-dashboard-quality",
    }
    import json

    for cm in dashboards:
        ((key, body),) = cm["data"].items()
        assert json.loads(body)["uid"] == key.removesuffix(".json")


def test_helm_test_hook_calls_health() -> None:
    pod = by_kind(render(), "Pod")["cryptovol-test-api-health"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["command"][-1]
    assert "http://cryptovol-api:8000/health" in script


def test_notes_print_port_forward_commands() -> None:
    out = run(
        [
            tool("helm"),
            "install",
            "cryptovol",
            str(CHART_DIR),
            "--dry-run=client",
            "-n",
            "cryptovol",
        ]
    ).stdout
    notes = out.split("NOTES:", 1)[1]
    assert "port-forward svc/cryptovol-api 8000:8000" in notes
    assert "port-forward svc/cryptovol-mlflow 5000:5000" in notes
    assert "port-forward svc/kube-prometheus-stack-grafana 3000:80" in notes
    assert "--set model.variant=baseline" in notes


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("model.variant=ml2",), "/model/variant"),
        (("api.replicas=2",), "replicas"),
        (("api.replicaCount=-1",), "/api/replicaCount"),
        (("products={btc}",), "/products/0"),
        (("logLevel=verbose",), "/logLevel"),
        (("kafka.cluster.version=3.9.0",), "/kafka/cluster/version"),
        (("api.image.digest=latest",), "/api/image/digest"),
        (("consumer.apiUrl=api:8000",), "/consumer/apiUrl"),
        (("monitoring.serviceMonitor.interval=fast",), "/monitoring/serviceMonitor/interval"),
        (("ingest.coinbaseWsUrl=http://x",), "/ingest/coinbaseWsUrl"),
        (
            ("networkPolicy.external.exchange.ports={https}",),
            "/networkPolicy/external/exchange/ports/0",
        ),
        (("networkPolicy.egress.api=kafka",), "/networkPolicy/egress/api"),
        (("unknownTopLevel=1",), "unknownTopLevel"),
    ],
)
def test_values_schema_rejects_bad_values(sets: tuple[str, ...], message: str) -> None:
    from deploytools import helm_template_error

    err = helm_template_error(*sets)
    assert message in err, err


def test_no_pod_gets_docker_link_variables() -> None:
    """A Service named like a setting would override it (a `kafka` Service injects
    KAFKA_PORT=tcp://...): every pod of the chart turns service links off."""
    objs = render()
    specs = [o["spec"]["template"]["spec"] for o in by_kind(objs, "Deployment").values()]
    specs += [o["spec"] for o in by_kind(objs, "Pod").values()]
    assert len(specs) >= 6
    assert all(spec.get("enableServiceLinks") is False for spec in specs)


def test_evaluator_grades_the_topics_the_pipeline_writes() -> None:
    objs = render()
    cm = by_kind(objs, "ConfigMap")["cryptovol-evaluator"]["data"]
    assert cm["TOPIC_RAW"] == "ticks.raw" and cm["TOPIC_PREDICTIONS"] == "predictions.log"
    assert cm["TOPIC_LABELLED"] == "predictions.labelled"
    assert cm["QUALITY_WINDOWS"] == "15m,1h" and cm["METRICS_PORT"] == "9100"
    deployment = by_kind(objs, "Deployment")["cryptovol-evaluator"]
    # one grader at a time: its successor reads back what it graded
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert deployment["spec"]["replicas"] == 1
    api = by_kind(objs, "Deployment")["cryptovol-api"]["spec"]["template"]["spec"]
    assert container_env(api["containers"][0])["MODEL_SHADOW"] == "random_forest"
    off = render("evaluator.enabled=false", "model.shadow=")
    assert not [o for o in off if "evaluator" in o["metadata"]["name"]]
    api_off = by_kind(off, "Deployment")["cryptovol-api"]["spec"]["template"]["spec"]
    assert container_env(api_off["containers"][0])["MODEL_SHADOW"] == ""
