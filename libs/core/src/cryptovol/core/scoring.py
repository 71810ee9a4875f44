"""The model scoring contract (pure, no I/O): rows in, scores and decisions out.

One implementation for every caller (the prediction API, ``cryptovol-train
evaluate`` and training itself), so a row is prepared the same way wherever it
is scored:

- :class:`ScoringContract` holds a model's input columns in order, the value
  each takes when missing and the decision threshold. ``prepare(rows)`` turns
  feature dicts into the model's matrix; ``impute(X)`` does the same to a
  matrix already in column order (offline tables). One rule for both: a value
  that is absent, ``None`` or not finite takes its fill value.
- :class:`ZScoreRule` and :class:`PersistenceRule` are models written as a few
  numbers (no code in the artifact), scored here.
- :func:`checked_scores` refuses scores that are not probabilities.

Artifact files (loading, checksums, skops) are the runtime's business
(``cryptovol.runtime.artifacts``); this module never touches a file.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def ndtr(z: np.ndarray) -> np.ndarray:
    """The standard normal CDF, accurate in both tails (``erfc``, no scipy needed)."""
    return 0.5 * _erfc(-np.asarray(z, dtype=np.float64) / math.sqrt(2.0))


class ContractError(ValueError):
    """A contract that cannot score (no features, duplicates, non-finite numbers)."""


class OutsideDomain(ValueError):
    """Feature values the model cannot score; the message names the rows."""


@dataclass(frozen=True)
class PreparedBatch:
    X: np.ndarray  # (rows, features), float64, every value finite
    imputed: list[list[str]]  # per row, the features that took their fill value
    ignored: list[str]  # fields of the rows that are not model features, sorted
    without_inputs: list[int] = field(default_factory=list)  # rows with every feature filled

    @property
    def n_without_inputs(self) -> int:
        return len(self.without_inputs)


class ScoringContract:
    """A model's input columns, fill values and decision threshold."""

    def __init__(
        self, features: Sequence[str], imputation: Mapping[str, float], threshold: float
    ) -> None:
        self.features: tuple[str, ...] = tuple(features)
        if not self.features:
            raise ContractError("a model needs at least one feature")
        if len(set(self.features)) != len(self.features):
            raise ContractError("feature names must be unique")
        # a feature the artifact stores no value for is filled with 0.0
        self.fill = np.asarray([float(imputation.get(f, 0.0)) for f in self.features])
        if not np.isfinite(self.fill).all():
            raise ContractError("imputation values must be finite")
        self.threshold = float(threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ContractError(f"threshold must be in [0, 1], got {threshold!r}")
        self._feature_set = frozenset(self.features)
        getter = operator.itemgetter(*self.features)
        # itemgetter of one name returns a bare value, not a tuple
        self._pick: Callable[[Mapping[str, Any]], Any] = (
            getter if len(self.features) > 1 else lambda row: (getter(row),)
        )

    @property
    def imputation(self) -> dict[str, float]:
        return dict(zip(self.features, self.fill.tolist(), strict=True))

    def _values(self, row: Mapping[str, float | None]) -> Sequence[float | None]:
        try:
            return self._pick(row)  # every feature present: one C-level call
        except KeyError:
            return [row.get(f) for f in self.features]

    def prepare(self, rows: Sequence[Mapping[str, float | None]]) -> PreparedBatch:
        """Feature dicts as the model's matrix (keys that are not features are ignored)."""
        X = np.array([self._values(row) for row in rows], dtype=np.float64)
        X = X.reshape(len(rows), len(self.features))
        missing = ~np.isfinite(X)
        imputed: list[list[str]]
        if missing.any():
            X = np.where(missing, self.fill, X)
            imputed = []
            by_mask: dict[bytes, list[str]] = {}
            for r, has_missing in enumerate(missing.any(axis=1).tolist()):
                if not has_missing:
                    imputed.append([])
                    continue
                key = missing[r].tobytes()
                names = by_mask.get(key)
                if names is None:
                    names = by_mask[key] = [self.features[c] for c in np.flatnonzero(missing[r])]
                imputed.append(names)
        else:
            imputed = [[] for _ in rows]
        ignored = sorted(set().union(*rows) - self._feature_set)
        n = len(self.features)
        without = [i for i, names in enumerate(imputed) if len(names) == n]
        return PreparedBatch(X=X, imputed=imputed, ignored=ignored, without_inputs=without)

    def impute(self, X: np.ndarray) -> np.ndarray:
        """A matrix in column order with every non-finite value replaced by its fill."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.features):
            raise ValueError(f"expected an array of shape (n, {len(self.features)}), got {X.shape}")
        return np.where(np.isfinite(X), X, self.fill)

    def flags(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) >= self.threshold

    def warnings(self, prepared: PreparedBatch) -> list[str]:
        """What a caller must know about the scores of a batch (empty when nothing)."""
        rows = prepared.without_inputs
        if not rows:
            return []
        shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
        return [
            f"{len(rows)} of {len(prepared.imputed)} rows (row {shown}) carry none of the "
            f"model's features ({', '.join(self.features)}): each scores as a typical row "
            "(every feature imputed), not as itself. The original minimal row "
            "(ret_mean, ret_std, n over 60 s) cannot give them: they are relative to the last "
            "30 minutes of the market. Send the feature row the featurizer emits "
            "(docs/api.md)."
        ]


def checked_scores(scores: Any, n_rows: int) -> np.ndarray:
    """Scores as a float64 vector of ``n_rows`` probabilities; :class:`OutsideDomain`
    names the rows the model could not score (NaN: e.g. a logarithm of a negative)."""
    out = np.asarray(scores, dtype=np.float64).reshape(-1)
    if out.shape[0] != n_rows:
        raise RuntimeError(f"model returned {out.shape[0]} scores for {n_rows} rows")
    bad = np.flatnonzero(~np.isfinite(out))
    if len(bad):
        shown = ", ".join(map(str, bad[:10].tolist())) + (", ..." if len(bad) > 10 else "")
        raise OutsideDomain(f"rows {shown}: values outside the model's domain "
                            "(volatilities and counts cannot be negative)")
    return np.clip(out, 0.0, 1.0)


# --- models written as numbers -------------------------------------------------------


def _operand(value: Any) -> float | str:
    if isinstance(value, Mapping):
        return str(value["feature"])
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("rule constants must be finite")
    return number


@dataclass(frozen=True)
class ZScoreRule:
    """``Phi((x - center) / scale)`` with ``x = log(value + eps)`` or the raw value;
    ``center`` and ``scale`` are numbers or feature names."""

    feature: str
    center: float | str
    scale: float | str
    log: bool = True
    eps: float = 1e-12
    kind = "zscore"

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ZScoreRule:
        return cls(
            feature=str(raw["feature"]), center=_operand(raw["center"]),
            scale=_operand(raw["scale"]), log=bool(raw.get("log", True)),
            eps=float(raw.get("eps", 1e-12)),
        )

    def to_dict(self) -> dict[str, Any]:
        def operand(value: float | str) -> Any:
            return {"feature": value} if isinstance(value, str) else value

        return {"kind": self.kind, "feature": self.feature, "log": self.log,
                "center": operand(self.center), "scale": operand(self.scale), "eps": self.eps}

    def inputs(self) -> list[str]:
        names = [self.feature] + [v for v in (self.center, self.scale) if isinstance(v, str)]
        return list(dict.fromkeys(names))

    def _transform(self, values: np.ndarray) -> np.ndarray:
        if not self.log:
            return values
        return np.log(np.maximum(values, 0.0) + self.eps)

    def score(self, X: np.ndarray, features: Sequence[str]) -> np.ndarray:
        column = {name: i for i, name in enumerate(features)}

        def operand(value: float | str, transform: bool) -> np.ndarray | float:
            if isinstance(value, str):
                col = X[:, column[value]]
                return self._transform(col) if transform else col
            return value

        x = self._transform(X[:, column[self.feature]])
        center = operand(self.center, transform=True)
        scale = np.maximum(operand(self.scale, transform=False), 1e-12)
        z = (x - center) / scale
        return ndtr(np.nan_to_num(z, nan=0.0, posinf=40.0, neginf=-40.0))


@dataclass(frozen=True)
class PersistenceRule:
    """``r / (1 + r)`` of a ratio feature ``r`` (by default ``persistence_ratio`` =
    RV_60 / tau): 0.5 means "this minute already is at the spike threshold"."""

    feature: str = "persistence_ratio"
    kind = "persistence"

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PersistenceRule:
        return cls(feature=str(raw.get("feature", "persistence_ratio")))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "feature": self.feature}

    def inputs(self) -> list[str]:
        return [self.feature]

    def score(self, X: np.ndarray, features: Sequence[str]) -> np.ndarray:
        r = X[:, list(features).index(self.feature)]
        r = np.maximum(np.nan_to_num(r, nan=0.0, posinf=1e12), 0.0)
        return r / (1.0 + r)


Rule = ZScoreRule | PersistenceRule
RULES: dict[str, type[ZScoreRule] | type[PersistenceRule]] = {
    ZScoreRule.kind: ZScoreRule, PersistenceRule.kind: PersistenceRule,
}


def rule_from_dict(raw: Mapping[str, Any]) -> Rule:
    kind = raw.get("kind")
    if kind not in RULES:
        raise ValueError(f"unknown rule kind {kind!r} (known: {sorted(RULES)})")
    return RULES[kind].from_dict(raw)
