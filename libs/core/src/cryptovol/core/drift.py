"""Reference distributions and the population stability index (pure, no I/O).

Training stores, in each artifact's metadata (``reference``), a small binned
distribution of every model input and of the model's score on the rows it was
fitted on. A live check compares what the service sees now with it:

    ref = artifact.metadata.reference["features"]["rel_rv_60s"]
    psi(ref, recent_values)        # 0 = same distribution; > 0.25 is a large shift

A distribution is ``{"edges": [...], "fractions": [...], "missing": m, "n": n}``:
``edges`` are the inner cut points (deciles of the reference, duplicates
dropped), ``fractions`` the share of finite values in each of the
``len(edges) + 1`` bins (value ``v`` is in bin ``searchsorted(edges, v,
side="right")``), ``missing`` the share of values that were not finite.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DEFAULT_BINS = 10
#: Floor of a bin's share in the PSI (an empty bin would make it infinite).
PSI_FLOOR = 1e-4
#: Rule of thumb: < 0.1 no shift, 0.1-0.25 moderate, > 0.25 large.
PSI_MODERATE, PSI_LARGE = 0.1, 0.25


def histogram(values: Any, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """The reference distribution of ``values`` in ``bins`` quantile bins."""
    x = np.asarray(values, dtype=np.float64).ravel()
    finite = x[np.isfinite(x)]
    n = len(x)
    if len(finite):
        cuts = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])
        edges = np.unique(cuts)
    else:
        edges = np.empty(0)
    return {
        "edges": [float(e) for e in edges],
        "fractions": [float(f) for f in _fractions(edges, finite)],
        "missing": float((n - len(finite)) / n) if n else 0.0,
        "n": int(n),
    }


def _fractions(edges: np.ndarray, finite: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=len(edges) + 1)
    return counts / len(finite) if len(finite) else counts.astype(np.float64)


def distribution_of(reference: Mapping[str, Any], values: Any) -> dict[str, Any]:
    """``values`` binned on the reference's edges (same shape as a reference)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    finite = x[np.isfinite(x)]
    edges = np.asarray(reference["edges"], dtype=np.float64)
    return {
        "edges": reference["edges"],
        "fractions": [float(f) for f in _fractions(edges, finite)],
        "missing": float((len(x) - len(finite)) / len(x)) if len(x) else 0.0,
        "n": len(x),
    }


def psi(reference: Mapping[str, Any], values: Any) -> float:
    """Population stability index of ``values`` against ``reference``:
    ``sum((a - e) * ln(a / e))`` over the bins and the missing share, with
    ``e`` the reference's shares and ``a`` the observed ones (each floored at
    ``PSI_FLOOR``). NaN when there are no values."""
    observed = distribution_of(reference, values)
    if not observed["n"]:
        return float("nan")
    e = np.asarray([*reference["fractions"], reference.get("missing", 0.0)], dtype=np.float64)
    a = np.asarray([*observed["fractions"], observed["missing"]], dtype=np.float64)
    e, a = np.maximum(e, PSI_FLOOR), np.maximum(a, PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def reference_distributions(
    X: np.ndarray, features: Sequence[str], scores: Any, bins: int = DEFAULT_BINS
) -> dict[str, Any]:
    """What an artifact stores: one distribution per input column and one of the score."""
    X = np.asarray(X, dtype=np.float64)
    return {
        "bins": bins,
        "psi_floor": PSI_FLOOR,
        "features": {name: histogram(X[:, j], bins) for j, name in enumerate(features)},
        "score": histogram(scores, bins),
    }
