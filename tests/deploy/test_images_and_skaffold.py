"""Service images (hadolint and the rules every Dockerfile follows) and
skaffold.yaml (validated against skaffold's published JSON schema)."""

from __future__ import annotations

import json
import re
import tomllib

import jsonschema
import pytest
import yaml
from deploytools import INSTALL_HINT, REPO_ROOT, SERVICES, TOOLS_SHARE, by_kind, render, run

DOCKERFILES = {svc: REPO_ROOT / "services" / svc / "Dockerfile" for svc in SERVICES}
DOCKERFILES["training"] = REPO_ROOT / "training" / "Dockerfile"
SKAFFOLD_SCHEMA = TOOLS_SHARE / "skaffold-v4beta13.json"
PACKAGE_DIR = {**{svc: f"services/{svc}" for svc in SERVICES}, "training": "training"}
COMMAND = {**{svc: f"cryptovol-{svc}" for svc in SERVICES}, "training": "cryptovol-train"}


def _version(component: str) -> str:
    return tomllib.loads((REPO_ROOT / PACKAGE_DIR[component] / "pyproject.toml").read_text())[
        "project"
    ]["version"]


def _stages(text: str) -> list[str]:
    """Dockerfile split into stages (the text from one FROM to the next)."""
    return re.split(r"(?m)^FROM ", text)[1:]


@pytest.mark.parametrize("component", DOCKERFILES)
def test_hadolint_clean(component: str) -> None:
    hadolint = REPO_ROOT / ".venv" / "bin" / "hadolint"
    binary = str(hadolint) if hadolint.exists() else "hadolint"
    proc = run(
        [binary, "--config", str(REPO_ROOT / ".hadolint.yaml"), str(DOCKERFILES[component])],
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("component", DOCKERFILES)
def test_dockerfile_rules(component: str) -> None:
    text = DOCKERFILES[component].read_text()
    base = re.search(r"(?m)^ARG PYTHON_IMAGE=(\S+)$", text).group(1)
    # pinned slim Python base: an exact patch release, not a floating tag
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    builder, final = _stages(text)
    assert builder.startswith("${PYTHON_IMAGE} AS builder") and final.startswith(
        "${PYTHON_IMAGE}\n"
    )
    pkg = PACKAGE_DIR[component]
    assert "--constraint constraints.txt" in builder
    assert f"./libs/core ./libs/runtime ./{pkg}" in builder
    # the final stage gets the venv only: no compilers, no package manager runs
    assert "COPY --from=builder /opt/venv /opt/venv" in final
    assert not re.search(r"apt-get|pip install|gcc|build-essential", final)
    assert "USER 10001:10001" in final and "useradd --system --uid 10001" in final
    # dumb-init as PID 1 (exec form) forwards SIGTERM to the service
    assert 'ENTRYPOINT ["dumb-init", "--"]' in final
    assert f'CMD ["{COMMAND[component]}"]' in final
    assert f"ARG VERSION={_version(component)}" in final


def test_api_image_carries_the_model_artifacts() -> None:
    final = _stages(DOCKERFILES["api"].read_text())[1]
    assert "COPY models/artifacts/ ./models/artifacts/" in final
    assert "MODELS_DIR=/app/models/artifacts" in final
    values = yaml.safe_load((REPO_ROOT / "charts" / "cryptovol" / "values.yaml").read_text())
    assert values["api"]["modelsDir"] == "/app/models/artifacts"


def test_dockerignore_keeps_what_the_images_need() -> None:
    lines = [
        ln.strip()
        for ln in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*"
    for needed in (
        "!constraints.txt",
        "!libs/core/",
        "!libs/runtime/",
        "!services/",
        "!training/",
        "!models/artifacts/",
    ):
        assert needed in lines
    assert (REPO_ROOT / "constraints.txt").is_file()


def _skaffold_schema() -> dict:
    if not SKAFFOLD_SCHEMA.is_file():
        pytest.fail(f"skaffold schema missing at {SKAFFOLD_SCHEMA}: {INSTALL_HINT}", pytrace=False)
    return json.loads(SKAFFOLD_SCHEMA.read_text())


def _skaffold() -> dict:
    return yaml.safe_load((REPO_ROOT / "skaffold.yaml").read_text())


def test_skaffold_yaml_matches_published_schema() -> None:
    schema = _skaffold_schema()
    config = _skaffold()
    assert config["apiVersion"] == "skaffold/v4beta13"
    validator = jsonschema.Draft7Validator(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(config)
    ]
    assert not errors, "\n".join(errors)
    # the schema is strict enough to notice a typo
    bad = {
        **config,
        "deploy": {"helm": {"releases": [{"name": "x", "chartPth": "charts/cryptovol"}]}},
    }
    assert list(validator.iter_errors(bad))


def test_skaffold_builds_every_service_and_wires_images_into_the_chart() -> None:
    config = _skaffold()
    artifacts = {a["image"]: a for a in config["build"]["artifacts"]}
    assert set(artifacts) == {f"cryptovol-{svc}" for svc in SERVICES}
    for svc in SERVICES:
        art = artifacts[f"cryptovol-{svc}"]
        assert art["context"] == "."
        assert (REPO_ROOT / art["docker"]["dockerfile"]) == DOCKERFILES[svc]
        assert art["docker"]["buildArgs"]["VERSION"] == _version(svc)
    (release,) = config["deploy"]["helm"]["releases"]
    assert (REPO_ROOT / release["chartPath"]).resolve() == (
        REPO_ROOT / "charts" / "cryptovol"
    ).resolve()
    templates = release["setValueTemplates"]
    for svc in SERVICES:
        var = f"cryptovol_{svc}"  # skaffold replaces '-' in image names by '_'
        assert templates[f"{svc}.image.repository"] == f"{{{{.IMAGE_REPO_{var}}}}}"
        assert templates[f"{svc}.image.tag"] == f"{{{{.IMAGE_TAG_{var}}}}}"
        assert templates[f"{svc}.image.digest"] == f"{{{{.IMAGE_DIGEST_{var}}}}}"

    # the values skaffold passes after pushing to a registry, and after a local build
    digest = "sha256:" + "0" * 64
    pushed = {}
    local = {}
    for svc in SERVICES:
        var = f"cryptovol_{svc}"
        pushed |= {
            f"IMAGE_REPO_{var}": f"reg.local/cryptovol-{svc}",
            f"IMAGE_TAG_{var}": "abc",
            f"IMAGE_DIGEST_{var}": digest,
        }
        local |= {
            f"IMAGE_REPO_{var}": f"cryptovol-{svc}",
            f"IMAGE_TAG_{var}": "deadbeef",
            f"IMAGE_DIGEST_{var}": "",
        }
    fixed = [f"{k}={v}" for k, v in release["setValues"].items()]
    for env, expected in (
        (pushed, "reg.local/cryptovol-{svc}:abc@" + digest),
        (local, "cryptovol-{svc}:deadbeef"),
    ):
        sets = [f"{key}={_fill(template, env)}" for key, template in templates.items()]
        deployments = by_kind(render(*sets, *fixed), "Deployment")
        for svc in SERVICES:
            image = deployments[f"cryptovol-{svc}"]["spec"]["template"]["spec"]["containers"][0][
                "image"
            ]
            assert image == expected.format(svc=svc)


def _fill(template: str, env: dict[str, str]) -> str:
    """Expand skaffold's {{.NAME}} template references."""
    return re.sub(r"\{\{\.(\w+)\}\}", lambda m: env[m.group(1)], template)


def test_skaffold_port_forwards_and_profiles() -> None:
    config = _skaffold()
    forwards = {
        (f["resourceName"], f["namespace"], f["port"], f["localPort"])
        for f in config["portForward"]
    }
    assert forwards == {
        ("cryptovol-api", "cryptovol", 8000, 8000),
        ("kube-prometheus-stack-grafana", "monitoring", 80, 3000),
        ("cryptovol-mlflow", "cryptovol", 5000, 5000),
    }
    services = by_kind(render(), "Service")
    assert services["cryptovol-api"]["spec"]["ports"][0]["port"] == 8000
    assert services["cryptovol-mlflow"]["spec"]["ports"][0]["port"] == 5000
    profiles = {p["name"]: p for p in config["profiles"]}
    assert set(profiles) == {"kind", "minikube", "baseline"}
    assert profiles["kind"]["activation"] == [{"kubeContext": "kind-cryptovol"}]
    # the baseline profile's patch lands on the release's setValues
    (patch,) = profiles["baseline"]["patches"]
    assert (
        patch["path"] == "/deploy/helm/releases/0/setValues/model.variant"
        and patch["value"] == "baseline"
    )
    assert "setValues" in config["deploy"]["helm"]["releases"][0]
