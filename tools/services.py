"""The services the chart deploys, read from one place: charts/cryptovol/values.yaml.

A service is a top-level values block with an `image.repository` whose Python project is
services/<name>/. Image builds, the bare cluster's image loading and the e2e all take
their list from here, so a new service is one values block (and its chart templates).

    python tools/services.py            # one line per service: name version repository target
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
VALUES = REPO_ROOT / "charts" / "cryptovol" / "values.yaml"
DOCKERFILE = REPO_ROOT / "Dockerfile"


@dataclass(frozen=True)
class Service:
    name: str
    version: str  # the project's version: the image tag and the chart's appVersion
    repository: str  # image repository in the chart's values
    target: str  # Dockerfile stage: the service's own stage if it has one, else "service"

    @property
    def package_dir(self) -> str:
        return f"services/{self.name}"

    @property
    def image(self) -> str:
        return f"{self.repository}:{self.version}"


def _stages(dockerfile: Path) -> set[str]:
    return set(re.findall(r"(?im)^FROM\s+\S+\s+AS\s+(\S+)\s*$", dockerfile.read_text()))


def services(values: Path = VALUES, root: Path = REPO_ROOT) -> list[Service]:
    data = yaml.safe_load(values.read_text())
    stages = _stages(root / "Dockerfile")
    found = []
    for name, block in data.items():
        repository = (block or {}).get("image", {}).get("repository") if isinstance(
            block, dict) else None
        project = root / "services" / name / "pyproject.toml"
        if not repository or not project.is_file():
            continue
        version = tomllib.loads(project.read_text())["project"]["version"]
        found.append(Service(name, version, repository, name if name in stages else "service"))
    return found


def main() -> int:
    for svc in services():
        print(svc.name, svc.version, svc.repository, svc.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
