"""API configuration from environment variables (names as in DESIGN §4)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from cryptovol.runtime.settings import ServiceSettings


class ApiSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="", extra="ignore", case_sensitive=False, protected_namespaces=()
    )

    service_name: str = "api"
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=0, le=65535)
    # Kept as plain strings: a wrong value is reported as "model unavailable"
    # (503, readiness fails) rather than crashing the process.
    model_variant: str = Field("ml", description="ml | baseline")
    model_version: str = Field("logistic_regression", description="artifact folder used when ml")
    model_shadow: str = Field(
        "", description="comma-separated artifact folders scored beside the served model on "
        "every request, recorded and graded but never the answer (e.g. random_forest,baseline)")
    models_dir: Path = Path("models/artifacts")
    max_rows: int = Field(1000, ge=1, description="rows accepted in one /predict request")
    # 1,000 featurizer rows of 37 named features are about 1.5 MB of JSON
    max_body_bytes: int = Field(4_000_000, ge=1024, description="largest /predict body")
    kafka_check_interval_s: float = Field(15.0, gt=0)
    kafka_check_timeout_s: float = Field(2.0, gt=0)
    model_threads: int = Field(1, ge=1, description="BLAS/OpenMP threads for model calls")
    git_sha: str = Field("", description="build commit; empty means ask git at start-up")

    @property
    def shadow_names(self) -> list[str]:
        """The shadow artifacts, in order, without repeats."""
        names = (n.strip() for n in self.model_shadow.split(","))
        return list(dict.fromkeys(n for n in names if n))
