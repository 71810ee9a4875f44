"""Rollback: MODEL_VARIANT=baseline switches the served model, its version and
its scores; each model flags rows with its own threshold, on real features."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from live_api import REPO_ROOT, api_process

from cryptovol.core.features import FEATURE_NAMES, features_frame
from cryptovol.devtools.net import free_port
from cryptovol.runtime.recordings import open_recordings, read_ticks


@pytest.fixture(scope="module")
def real_rows() -> list[dict[str, float | None]]:
    """Feature rows of the bundled recordings (warm rows only), evenly sampled."""
    frame = features_frame(read_ticks(open_recordings([REPO_ROOT / "data" / "coinbase-ticker"])))
    warm = frame[~frame["warmup"]]
    sample = warm.iloc[np.linspace(0, len(warm) - 1, 4000).astype(int)]
    values = sample[list(FEATURE_NAMES)].to_numpy()
    return [
        {
            name: (None if np.isnan(v) else float(v))
            for name, v in zip(FEATURE_NAMES, row, strict=True)
        }
        for row in values
    ]


def _score_all(base: str, rows: list[dict]) -> tuple[np.ndarray, np.ndarray, float]:
    scores: list[float] = []
    flags: list[bool] = []
    threshold = float("nan")
    with httpx.Client(timeout=30) as http:
        for i in range(0, len(rows), 1000):
            r = http.post(f"{base}/predict", json={"rows": rows[i : i + 1000]})
            assert r.status_code == 200, r.text
            body = r.json()
            scores += body["scores"]
            flags += body["spikes"]
            threshold = body["threshold"]
    return np.array(scores), np.array(flags), threshold


def test_switching_to_baseline(artifacts_dir: Path, real_rows: list[dict]) -> None:
    common = {"MODELS_DIR": str(artifacts_dir), "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    results = {}
    for variant in ("ml", "baseline"):
        env = {**common, "MODEL_VARIANT": variant, "MODEL_VERSION": "random_forest"}
        with api_process(free_port(), env, ready_path="/readyz") as base:
            version = httpx.get(f"{base}/version").json()
            scores, flags, threshold = _score_all(base, real_rows)
        results[variant] = (version, scores, flags, threshold)

    ml_version, ml_scores, ml_flags, ml_threshold = results["ml"]
    base_version, base_scores, base_flags, base_threshold = results["baseline"]
    assert ml_version["model_variant"] == "ml" and base_version["model_variant"] == "baseline"
    assert ml_version["model_name"] == "random_forest" and base_version["model_name"] == "baseline"
    assert ml_version["sha256"] != base_version["sha256"]
    assert ml_version["model_version"] != base_version["model_version"]
    assert not np.allclose(ml_scores, base_scores)
    # every flag comes from the model's own threshold
    np.testing.assert_array_equal(ml_flags, ml_scores >= ml_threshold)
    np.testing.assert_array_equal(base_flags, base_scores >= base_threshold)
    # the baseline flags a plausible share of rows, not nearly all of them
    share = base_flags.mean()
    assert 0.005 <= share <= 0.5, f"baseline flags {share:.1%} of rows"
    assert ml_flags.mean() <= 0.5, f"ml flags {ml_flags.mean():.1%} of rows"
