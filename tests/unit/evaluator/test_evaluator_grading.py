"""The evaluator's join: every prediction graded once, with the label training
computes for its row (one label implementation), whatever the order in which
ticks and predictions arrive; duplicates, missing ticks and restarts counted."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from cryptovol.core.features import FeatureEngine, features_frame
from cryptovol.core.labels import compute_labels
from cryptovol.core.quality import average_precision
from cryptovol.core.schemas import PredictionRecord
from cryptovol.core.timestamps import from_micros
from cryptovol.runtime.recordings import open_recordings, read_ticks
from cryptovol_evaluator.grading import Grader
from cryptovol_evaluator.quality import Windows, parse_windows, row_of

FILES = "ticks_BTCUSD_20251206_0[12]*.ndjson.gz"


@pytest.fixture(scope="module")
def ticks(recordings_dir):
    return list(read_ticks(open_recordings(sorted(recordings_dir.glob(FILES)))))


@pytest.fixture(scope="module")
def offline(ticks):
    frame = features_frame(ticks)
    labels = compute_labels(frame)
    return frame.join(labels)


def predictions(ticks) -> list[PredictionRecord]:
    """A prediction of every row past warm-up, scored by a fixed rule."""
    engine, out = FeatureEngine(), []
    for tick in ticks:
        res = engine.step(tick)
        if res is None or res.warmup:
            continue
        rv = res.values[1]
        score = 0.0 if rv != rv else min(1.0, rv * 1000)
        out.append(PredictionRecord(
            record_id=tick.record_id, product_id=tick.product_id,
            event_time=from_micros(res.time_us), predicted_time=from_micros(res.time_us),
            score=score, spike=score >= 0.5, threshold=0.5, model_variant="ml",
            model_version="test", api_latency_ms=1.0, e2e_latency_ms=1.0))
    return out


def grade(ticks, preds, order: str, seed: int = 0):
    grader, graded = Grader(), []
    if order == "predictions first":
        for p in preds:
            graded += grader.prediction(p) or []
        for t in ticks:
            graded += grader.tick(t)
    elif order == "ticks first":
        for t in ticks:
            graded += grader.tick(t)
        for p in preds:
            graded += grader.prediction(p) or []
    else:  # interleaved at random, each stream in its own order
        rng, i, j = random.Random(seed), 0, 0
        while i < len(ticks) or j < len(preds):
            if j >= len(preds) or (i < len(ticks) and rng.random() < 0.5):
                graded += grader.tick(ticks[i])
                i += 1
            else:
                graded += grader.prediction(preds[j]) or []
                j += 1
    graded += grader.close()
    return grader, graded


@pytest.mark.parametrize("order", ["predictions first", "interleaved"])
def test_every_prediction_graded_once_with_the_training_label(ticks, offline, order):
    preds = predictions(ticks)
    _, graded = grade(ticks, preds, order)
    assert sorted(g.prediction.record_id for g in graded) == sorted(p.record_id for p in preds)
    by_id = offline.set_index("record_id")
    labelled = [g for g in graded if g.has_label]
    assert len(labelled) > 1000
    expected = by_id.loc[[p.record_id for p in preds]]
    assert len(labelled) == int(expected["has_label"].sum())
    for g in labelled:
        row = by_id.loc[g.prediction.record_id]
        assert g.label.spike == bool(row["spike"])
        assert math.isclose(g.label.tau, row["tau"], rel_tol=0, abs_tol=0)
    y = np.array([g.label.spike for g in labelled], dtype=int)
    p = np.array([g.prediction.score for g in labelled])
    exp = expected[expected["has_label"]]
    scores = {x.record_id: x.score for x in preds}
    assert average_precision(y, p) == pytest.approx(average_precision(
        exp["spike"].to_numpy(int), np.array([scores[r] for r in exp.index])), abs=1e-12)


def test_labels_wait_in_prediction_time_so_a_tick_stream_far_ahead_loses_nothing(ticks):
    preds = predictions(ticks)
    _, reference = grade(ticks, preds, "predictions first")
    grader, graded = grade(ticks, preds, "ticks first")
    assert sorted((g.prediction.record_id, g.reason) for g in graded) == sorted(
        (g.prediction.record_id, g.reason) for g in reference)
    assert grader.outcomes["no_tick"] == 0
    assert grader.let_go > 0  # labels of the warm-up rows, which were never predicted


def test_duplicates_are_counted_and_never_graded_twice(ticks):
    preds = predictions(ticks)[:3000]
    grader, graded = Grader(), []
    for p in preds + preds[:500]:
        graded += grader.prediction(p) or []
    for t in ticks + ticks[:200]:
        graded += grader.tick(t)
    for p in preds[-200:]:
        assert grader.prediction(p) is None
    graded += grader.close()
    assert len(graded) == len({g.prediction.record_id for g in graded}) == len(preds)
    assert grader.outcomes["duplicate"] == 700
    assert grader.ticks["duplicate"] + grader.ticks["late"] == 200


def test_a_prediction_without_its_tick_is_graded_no_tick(ticks):
    preds = predictions(ticks)
    ghost = preds[100].model_copy(update={"record_id": "BTC-USD:0:9"})
    grader, graded = Grader(), []
    graded += grader.prediction(ghost) or []
    for t in ticks:
        graded += grader.tick(t)
    assert [g.reason for g in graded if g.prediction.record_id == ghost.record_id] == ["no_tick"]


def test_windows_compute_the_same_pr_auc_as_the_core(ticks, offline):
    preds = predictions(ticks)
    _, graded = grade(ticks, preds, "predictions first")
    windows = Windows(parse_windows("15m,1h,30d"))
    windows.add(0, [row_of(g) for g in graded])
    quality = {(q.scorer.role, q.window): q for q in windows.compute()}
    everything = quality[("served", "30d")]
    labelled = [g for g in graded if g.has_label]
    y = np.array([g.label.spike for g in labelled], dtype=int)
    assert everything.metrics["pr_auc"] == average_precision(
        y, np.array([g.prediction.score for g in labelled]))
    assert everything.labelled == len(labelled) and everything.rows == len(graded)
    assert quality[("served", "15m")].rows < quality[("served", "1h")].rows <= everything.rows
    assert 0 < quality[("reference", "30d")].metrics["pr_auc"] < 1


def test_window_specs():
    assert [w.seconds for w in parse_windows("1h,15m")] == [900, 3600]
    for bad in ("", "15", "-1m", "5x"):
        with pytest.raises(ValueError):
            parse_windows(bad)
