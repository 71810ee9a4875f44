"""What a production image installs: each service's wheel and the wheels of the
library parts it requires, followed through their Requires-Dist (extras
included). None of them holds the local broker, the stack runner, the fake
exchange or a test oracle. The dev-tooling wheel, built the same way, does hold
them: the check looks where those files would be."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
LIBRARY = ("libs/core", "libs/runtime", "libs/devtools")
SERVICES = ("services/ingest", "services/featurizer", "services/consumer", "services/api",
            "services/evaluator", "training")
DEV_ONLY_FILES = ("cryptovol/devtools/", "broker.py", "stack.py", "fake_exchange.py",
                  "features_reference.py", "reference.py")
DEV_ONLY_COMMANDS = ("cryptovol-broker", "cryptovol-stack", "cryptovol-fake-exchange")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class Wheel:
    def __init__(self, path: Path) -> None:
        with zipfile.ZipFile(path) as archive:
            self.files = archive.namelist()
            meta_name = next(n for n in self.files if n.endswith(".dist-info/METADATA"))
            meta = Parser().parsestr(archive.read(meta_name).decode())
            points = [n for n in self.files if n.endswith(".dist-info/entry_points.txt")]
            self.entry_points = archive.read(points[0]).decode() if points else ""
        self.name = canonical(meta["Name"])
        self.requires = meta.get_all("Requires-Dist") or []

    def first_party(self, extras: set[str]) -> dict[str, set[str]]:
        """The cryptovol distributions this wheel requires, with their extras."""
        out: dict[str, set[str]] = {}
        for requirement in self.requires:
            spec, _, marker = requirement.partition(";")
            wanted_extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
            if wanted_extra and wanted_extra.group(1) not in extras:
                continue
            match = re.match(r"\s*([A-Za-z0-9._-]+)\s*(?:\[([^\]]*)\])?", spec)
            assert match, requirement
            name = canonical(match.group(1))
            if name.startswith("cryptovol"):
                named = {e.strip() for e in (match.group(2) or "").split(",") if e.strip()}
                out.setdefault(name, set()).update(named)
        return out


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Wheel]:
    out = tmp_path_factory.mktemp("wheelhouse")
    sources = tmp_path_factory.mktemp("sources")  # setuptools leaves build/ beside the sources
    for package in (*LIBRARY, *SERVICES):
        shutil.copytree(REPO_ROOT / package, sources / package,
                        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
         "--quiet", "--wheel-dir", str(out), *(f"./{p}" for p in (*LIBRARY, *SERVICES))],
        cwd=sources, check=True, capture_output=True, text=True,
    )
    built = {w.name: w for w in map(Wheel, out.glob("*.whl"))}
    assert len(built) == len(LIBRARY) + len(SERVICES), sorted(built)
    return built


def closure(wheels: dict[str, Wheel], root: str) -> set[str]:
    """``root`` and every cryptovol distribution it needs, transitively."""
    seen: dict[str, set[str]] = {}
    todo = [(root, set())]
    while todo:
        name, extras = todo.pop()
        if name in seen and extras <= seen[name]:
            continue
        seen[name] = seen.get(name, set()) | extras
        assert name in wheels, f"{root} requires {name}, which is not built from this repository"
        todo.extend(wheels[name].first_party(seen[name]).items())
    return set(seen)


def dev_only(wheel: Wheel) -> list[str]:
    files = [f for f in wheel.files if f.startswith("cryptovol/devtools/")
             or Path(f).name in DEV_ONLY_FILES]
    commands = [c for c in DEV_ONLY_COMMANDS if re.search(rf"(?m)^{c}\s*=", wheel.entry_points)]
    return files + commands


@pytest.mark.parametrize("service", SERVICES)
def test_no_service_wheel_brings_the_dev_tooling_or_test_oracles(
    wheels: dict[str, Wheel], service: str
) -> None:
    installed = closure(wheels, f"cryptovol-{Path(service).name}")
    assert "cryptovol-devtools" not in installed, installed
    assert {"cryptovol-core", "cryptovol-runtime"} <= installed
    found = {n: dev_only(wheels[n]) for n in installed if dev_only(wheels[n])}
    assert not found, f"the {service} image would contain developer-only files: {found}"
    tests = [f for n in installed for f in wheels[n].files if f.startswith("tests/")]
    assert not tests


def test_the_check_sees_the_dev_tooling_where_it_is(wheels: dict[str, Wheel]) -> None:
    devtools = wheels["cryptovol-devtools"]
    found = dev_only(devtools)
    assert {"cryptovol/devtools/broker.py", "cryptovol/devtools/stack.py",
            "cryptovol/devtools/fake_exchange.py"} <= set(found)
    assert set(DEV_ONLY_COMMANDS) <= set(found)
    assert "cryptovol-devtools" in closure(wheels, "cryptovol-devtools")
