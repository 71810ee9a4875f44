"""Every distribution declares what its source imports, and the library split
holds: the core imports nothing from the runtime or the dev tooling, the core
does no I/O, and no service depends on the dev tooling."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
PYPROJECTS = sorted(
    [*REPO_ROOT.glob("libs/*/pyproject.toml"), *REPO_ROOT.glob("services/*/pyproject.toml"),
     REPO_ROOT / "training" / "pyproject.toml"]
)
LIBRARY = {"cryptovol-core", "cryptovol-runtime", "cryptovol-devtools"}
# standard-library modules that talk to the outside world: never in the pure core
IO_MODULES = {"asyncio", "gzip", "http", "shutil", "signal", "socket", "subprocess", "tempfile",
              "threading", "urllib"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return canonical(match.group(1))


@cache
def project(pyproject: Path) -> dict:
    return tomllib.loads(pyproject.read_text())["project"]


def declared(pyproject: Path) -> set[str]:
    meta = project(pyproject)
    requirements = list(meta.get("dependencies", []))
    for extra in meta.get("optional-dependencies", {}).values():
        requirements += extra
    return {requirement_name(r) for r in requirements}


def imported_modules(source: Path) -> dict[str, set[Path]]:
    """Absolute imports of every module under ``source`` (dotted names), with the
    files importing them; imports inside functions and ``try`` blocks count too."""
    found: dict[str, set[Path]] = {}
    for path in source.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name, set()).add(path.relative_to(REPO_ROOT))
    return found


@cache
def _installed() -> dict[str, list[str]]:
    return packages_distributions()


def distribution_of(module: str) -> set[str]:
    """The distributions that provide an imported module (empty for the stdlib)."""
    top = module.split(".")[0]
    if top in sys.stdlib_module_names or top == "__future__":
        return set()
    if top == "cryptovol":  # the library's namespace: cryptovol.<part> is cryptovol-<part>
        return {f"cryptovol-{module.split('.')[1]}"}
    if top.startswith("cryptovol_"):
        return {canonical(top)}
    providers = _installed().get(top)
    assert providers, f"no installed distribution provides {module!r}"
    return {canonical(p) for p in providers}


def _id(pyproject: Path) -> str:
    return project(pyproject)["name"]


@pytest.mark.parametrize("pyproject", PYPROJECTS, ids=_id)
def test_every_import_is_a_declared_dependency(pyproject: Path) -> None:
    name = canonical(project(pyproject)["name"])
    allowed = declared(pyproject) | {name}
    missing = {}
    for module, files in imported_modules(pyproject.parent / "src").items():
        providers = distribution_of(module)
        if providers and not providers & allowed:
            missing[module] = sorted(map(str, files))
    assert not missing, f"{name} imports packages its pyproject.toml does not declare: {missing}"


def test_the_core_is_pure_and_imports_nothing_from_the_runtime_or_the_tools() -> None:
    imports = imported_modules(REPO_ROOT / "libs" / "core" / "src")
    outward = {m: sorted(map(str, f)) for m, f in imports.items()
               if m.startswith(("cryptovol.runtime", "cryptovol.devtools"))}
    assert not outward, f"the core imports the runtime or the dev tooling: {outward}"
    io = {m: sorted(map(str, f)) for m, f in imports.items() if m.split(".")[0] in IO_MODULES}
    assert not io, f"the core does I/O: {io}"


def test_the_runtime_does_not_import_the_dev_tooling() -> None:
    imports = imported_modules(REPO_ROOT / "libs" / "runtime" / "src")
    tools = sorted(m for m in imports if m.startswith("cryptovol.devtools"))
    assert not tools, f"the runtime imports the dev tooling: {tools}"


@pytest.mark.parametrize("pyproject", PYPROJECTS, ids=_id)
def test_only_the_dev_tooling_is_allowed_to_depend_on_itself(pyproject: Path) -> None:
    name = canonical(project(pyproject)["name"])
    if name != "cryptovol-devtools":
        assert "cryptovol-devtools" not in declared(pyproject), name
    if name not in LIBRARY:  # services and training use the library, never the reverse
        for lib in LIBRARY & declared(pyproject):
            assert lib in {"cryptovol-core", "cryptovol-runtime"}, (name, lib)


def test_each_library_part_owns_its_folder_of_the_namespace() -> None:
    for part in ("core", "runtime", "devtools"):
        src = REPO_ROOT / "libs" / part / "src"
        assert not (src / "cryptovol" / "__init__.py").exists(), "cryptovol is a namespace"
        assert sorted(p.name for p in (src / "cryptovol").iterdir()
                      if p.name != "__pycache__") == [part]
        assert project(REPO_ROOT / "libs" / part / "pyproject.toml")["name"] == f"cryptovol-{part}"
