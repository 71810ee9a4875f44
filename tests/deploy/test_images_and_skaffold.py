"""Service images (the one Dockerfile: hadolint and the rules it follows, the services it
builds) and skaffold.yaml (validated against skaffold's published JSON schema)."""

from __future__ import annotations

import json
import os
import re
import sys
import tomllib

import jsonschema
import pytest
import yaml
from deploytools import INSTALL_HINT, REPO_ROOT, SERVICES, TOOLS_SHARE, by_kind, render, run

sys.path.insert(0, str(REPO_ROOT / "tools"))
import services as chart_services

DOCKERFILE = REPO_ROOT / "Dockerfile"
# every other image recipe of the project (bases, the bare cluster's Kafka, the e2e exchange)
CONTAINERFILES = [
    DOCKERFILE,
    REPO_ROOT / "tools" / "images" / "python-standin.Containerfile",
    REPO_ROOT / "k8s" / "bare" / "images" / "kafka.Containerfile",
    REPO_ROOT / "tests" / "e2e" / "exchange.Containerfile",
]
SKAFFOLD_SCHEMA = TOOLS_SHARE / "skaffold-v4beta13.json"


def _version(package_dir: str) -> str:
    return tomllib.loads((REPO_ROOT / package_dir / "pyproject.toml").read_text())["project"][
        "version"
    ]


def _stages(text: str) -> dict[str, str]:
    """Dockerfile stages by name: the text from one FROM to the next."""
    stages = {}
    for chunk in re.split(r"(?m)^FROM ", text)[1:]:
        name = re.match(r"\S+(?:\s+AS\s+(\S+))?", chunk).group(1)
        stages[name] = chunk
    return stages


@pytest.mark.parametrize("path", CONTAINERFILES, ids=lambda p: p.name)
def test_hadolint_clean(path) -> None:
    hadolint = REPO_ROOT / ".venv" / "bin" / "hadolint"
    binary = str(hadolint) if hadolint.exists() else "hadolint"
    proc = run([binary, "--config", str(REPO_ROOT / ".hadolint.yaml"), str(path)], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_one_dockerfile_for_every_service() -> None:
    assert not list(REPO_ROOT.glob("services/*/Dockerfile"))
    assert not (REPO_ROOT / "training" / "Dockerfile").exists()
    text = DOCKERFILE.read_text()
    # no frontend image to pull: BuildKit, podman and buildah build it as it is
    assert not re.search(r"(?m)^#\s*syntax=", text)
    base = re.search(r"(?m)^ARG PYTHON_IMAGE=(\S+)$", text).group(1)
    # pinned slim Python base: an exact patch release, not a floating tag
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    stages = _stages(text)
    assert list(stages) == ["wheels", "builder", "runtime", "api", "service"]
    # the last stage is the default target: a service needs no stage of its own
    assert list(stages)[-1] == "service"


def test_the_image_installs_the_service_from_a_wheelhouse_only() -> None:
    stages = _stages(DOCKERFILE.read_text())
    wheels, builder = stages["wheels"], stages["builder"]
    # every libs/* distribution is built by path (a same-named project on the index never
    # stands in for one), with the pinned third-party versions
    assert "COPY libs/ ./libs/" in wheels and "./libs/*/" in wheels
    assert "--constraint constraints.txt" in wheels
    # the install is offline, from that wheelhouse: the service's closure, nothing else
    install = re.search(r"pip install (.*?)(?:&&|$)", builder, re.S).group(1)
    assert "--no-index --find-links /wheels" in install and "/service/*.whl" in install
    assert "./libs" not in builder


def test_the_runtime_stages_hold_the_venv_and_nothing_to_build_with() -> None:
    stages = _stages(DOCKERFILE.read_text())
    runtime = stages["runtime"]
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime
    for name in ("runtime", "api", "service"):
        assert not re.search(r"apt-get|pip install|gcc|build-essential", stages[name]), name
    assert "USER 10001:10001" in runtime and "useradd --system --uid 10001" in runtime
    # dumb-init as PID 1 (exec form) forwards SIGTERM to the service's console script
    assert 'ENTRYPOINT ["dumb-init", "--"]' in runtime
    assert 'CMD ["cryptovol-service"]' in runtime
    assert 'ln -s "${COMMAND}" /opt/venv/bin/cryptovol-service' in stages["builder"]
    assert "ARG COMMAND=cryptovol-${SERVICE}" in stages["builder"]


def test_api_image_carries_the_model_artifacts() -> None:
    api = _stages(DOCKERFILE.read_text())["api"]
    assert api.startswith("runtime AS api")
    assert "COPY models/artifacts/ ./models/artifacts/" in api
    assert "MODELS_DIR=/app/models/artifacts" in api
    values = yaml.safe_load((REPO_ROOT / "charts" / "cryptovol" / "values.yaml").read_text())
    assert values["api"]["modelsDir"] == "/app/models/artifacts"


def test_services_come_from_the_chart_values() -> None:
    found = {s.name: s for s in chart_services.services()}
    assert set(found) == set(SERVICES)
    for name, svc in found.items():
        # each one a console script cryptovol-<name> (the Dockerfile's default COMMAND)
        project = tomllib.loads((REPO_ROOT / svc.package_dir / "pyproject.toml").read_text())
        assert f"cryptovol-{name}" in project["project"]["scripts"]
        assert svc.version == _version(svc.package_dir)
        assert svc.target == ("api" if name == "api" else "service")


def test_a_new_values_block_is_a_new_service(tmp_path) -> None:
    """A new service is its values block and its project folder: nothing else to list."""
    values = yaml.safe_load((REPO_ROOT / "charts" / "cryptovol" / "values.yaml").read_text())
    values["auditor"] = {"enabled": True, "image": {"repository": "cryptovol-auditor"}}
    (tmp_path / "charts").mkdir()
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    (tmp_path / "Dockerfile").write_text(DOCKERFILE.read_text())
    for name in (*SERVICES, "auditor"):
        (tmp_path / "services" / name).mkdir(parents=True)
        (tmp_path / "services" / name / "pyproject.toml").write_text(
            f'[project]\nname = "cryptovol-{name}"\nversion = "0.2.0"\n')
    found = {s.name: s for s in chart_services.services(tmp_path / "values.yaml", tmp_path)}
    assert found["auditor"].image == "cryptovol-auditor:0.2.0"
    assert found["auditor"].target == "service" and found["api"].target == "api"
    # a values block without an image, or an image without a project, is not a service
    assert "mlflow" not in found and "monitoring" not in found


def test_dockerignore_keeps_what_the_images_need() -> None:
    lines = [
        ln.strip()
        for ln in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*"
    for needed in ("!constraints.txt", "!libs/", "!services/", "!training/", "!models/artifacts/"):
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
    for svc in chart_services.services():
        art = artifacts[svc.repository]
        assert art["context"] == "."
        assert (REPO_ROOT / art["docker"]["dockerfile"]) == DOCKERFILE
        assert art["docker"]["target"] == svc.target
        assert art["docker"]["buildArgs"] == {"SERVICE": svc.name, "VERSION": svc.version}
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
    assert set(profiles) == {"kind", "minikube", "bare", "fake-exchange", "baseline"}
    assert profiles["kind"]["activation"] == [{"kubeContext": "kind-cryptovol"}]
    # the baseline profile's patch lands on the release's setValues
    (patch,) = profiles["baseline"]["patches"]
    assert (
        patch["path"] == "/deploy/helm/releases/0/setValues/model.variant"
        and patch["value"] == "baseline"
    )
    assert "setValues" in config["deploy"]["helm"]["releases"][0]


def test_skaffold_bare_profile_builds_every_service_into_the_bare_node() -> None:
    bare = {p["name"]: p for p in _skaffold()["profiles"]}["bare"]
    # the context of the bare cluster's kubeconfig (k8s/bare/pki.sh)
    assert "- name: cryptovol-bare" in (REPO_ROOT / "k8s" / "bare" / "pki.sh").read_text()
    assert bare["activation"] == [{"kubeContext": "cryptovol-bare"}]
    artifacts = {a["image"]: a for a in bare["build"]["artifacts"]}
    assert set(artifacts) == {s.repository for s in chart_services.services()}
    for svc in chart_services.services():
        custom = artifacts[svc.repository]["custom"]
        script = REPO_ROOT / custom["buildCommand"]
        assert script.is_file() and os.access(script, os.X_OK)
        assert {"Dockerfile", "libs", svc.package_dir} <= set(custom["dependencies"]["paths"])
    patches = {p["path"]: p["value"] for p in bare["patches"]}
    (values,) = patches["/deploy/helm/releases/0/valuesFiles"]
    assert (REPO_ROOT / values).is_file()
