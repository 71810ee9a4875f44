"""Start-up compilation of tree forests into flat arrays scored with numpy.

scikit-learn's ``RandomForestClassifier.predict_proba`` walks its trees one by
one (and dispatches them to a thread pool), which costs milliseconds per call
whatever the batch size. Here every tree of a binary forest is laid into one
padded node table at start-up and all trees are walked at once, one level per
step, for the whole batch. The result equals ``predict_proba(X)[:, 1]`` (same
float32 comparisons as scikit-learn; checked at start-up before it is used).

The walk moves every (tree, row) pair each step, so its cost grows with the
batch faster than scikit-learn's per-tree loops: past ``COMPILED_MAX_ROWS``
rows the model's own (single-threaded) ``predict_proba`` is quicker.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cryptovol.runtime.logs import get_logger

log = get_logger(__name__)

_FOREST_TYPES = ("RandomForestClassifier", "ExtraTreesClassifier")
COMPILED_MAX_ROWS = 512


class CompiledForest:
    def __init__(self, forest: Any) -> None:
        trees = [est.tree_ for est in forest.estimators_]
        self.n_trees = len(trees)
        width = max(t.node_count for t in trees)
        self.depth = max(t.max_depth for t in trees)
        # children[2 * node + go_right]; leaves point at themselves, so extra
        # steps keep a row where it is
        children = np.zeros((self.n_trees, width, 2), dtype=np.int32)
        feature = np.zeros((self.n_trees, width), dtype=np.int32)
        threshold = np.full((self.n_trees, width), np.inf)
        positive = np.zeros((self.n_trees, width))
        for t, tree in enumerate(trees):
            n = tree.node_count
            own = np.arange(n)
            leaf = tree.children_left[:n] < 0
            children[t, :n, 0] = np.where(leaf, own, tree.children_left[:n]) + t * width
            children[t, :n, 1] = np.where(leaf, own, tree.children_right[:n]) + t * width
            feature[t, :n] = np.where(leaf, 0, tree.feature[:n])
            threshold[t, :n] = np.where(leaf, np.inf, tree.threshold[:n])
            value = tree.value[:n, 0, :]
            total = value.sum(axis=1)
            total[total == 0.0] = 1.0
            positive[t, :n] = value[:, 1] / total
        self._children = children.ravel()
        self._feature = feature.ravel()
        self._threshold = threshold.ravel()
        self._positive = positive.ravel()
        self._roots = (np.arange(self.n_trees, dtype=np.int32) * width)[:, None]

    def __call__(self, X: np.ndarray) -> np.ndarray:
        n = X.shape[0]
        # scikit-learn compares float32 inputs against float64 thresholds
        by_feature = np.ascontiguousarray(X.astype(np.float32).astype(np.float64).T).ravel()
        columns = np.arange(n, dtype=np.int32)[None, :]
        node = np.repeat(self._roots, n, axis=1)  # (trees, rows): all at the root
        for _ in range(self.depth):
            x = by_feature[self._feature[node] * n + columns]
            node = self._children[node * 2 + (x > self._threshold[node])]
        return self._positive[node].sum(axis=0) / self.n_trees


def compile_scorer(model: Any) -> CompiledForest | None:
    """A compiled scorer for a binary forest, or None for anything else."""
    if type(model).__name__ not in _FOREST_TYPES:
        return None
    if getattr(model, "n_outputs_", 1) != 1 or len(getattr(model, "classes_", [])) != 2:
        return None
    return CompiledForest(model)


def tune_for_serving(model: Any) -> None:
    """One process serves many small batches: thread pools per call only add latency."""
    if hasattr(model, "n_jobs"):
        model.set_params(n_jobs=1)
    steps = getattr(model, "steps", None)
    if steps:
        for _, step in steps:
            tune_for_serving(step)
