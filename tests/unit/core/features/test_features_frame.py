"""The offline feature table on the bundled recordings."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryptovol.core.codec import decode_row, encode_row
from cryptovol.core.features import FEATURE_NAMES, FRAME_COLUMNS, FeatureEngine, features_frame
from cryptovol.core.ticks import Tick
from cryptovol.runtime.recordings import open_recordings, read_ticks

OVERLAP = ("ticks_BTCUSD_20251130_235611.ndjson.gz", "ticks_BTCUSD_20251130_235646.ndjson.gz")


@pytest.fixture(scope="module")
def early_ticks(recordings_dir: Path) -> list[Tick]:
    """The first recordings (the two overlapping files and their neighbours)."""
    names = sorted(p.name for p in recordings_dir.glob("*.ndjson.gz"))[:6]
    return list(read_ticks(open_recordings([recordings_dir / n for n in names])))


def test_columns_types_and_order(early_ticks: list[Tick]) -> None:
    frame = features_frame(early_ticks)
    assert tuple(frame.columns) == FRAME_COLUMNS + FEATURE_NAMES
    assert str(frame["event_time"].dt.tz) == "UTC"
    assert frame["warmup"].dtype == bool and frame["segment_id"].dtype == np.int64
    assert all(frame[name].dtype == np.float64 for name in FEATURE_NAMES)
    assert frame["record_id"].is_unique
    np.testing.assert_array_equal(frame["ts"].to_numpy(),
                                  frame["event_time"].astype("int64").to_numpy() / 1e6)


def test_overlapping_recordings_are_resolved_deterministically(
    early_ticks: list[Tick], recordings_dir: Path
) -> None:
    frame = features_frame(early_ticks)
    again = features_frame(early_ticks)
    pd.testing.assert_frame_equal(frame, again)
    assert frame["ts"].is_monotonic_increasing
    # the second recorder's file lies inside the first's time range: its ticks
    # arrive late (or as exact duplicates) and are dropped
    second = {t.record_id for t in read_ticks(open_recordings([recordings_dir / OVERLAP[1]]))}
    first = {t.record_id for t in read_ticks(open_recordings([recordings_dir / OVERLAP[0]]))}
    dropped = {t.record_id for t in early_ticks} - set(frame["record_id"])
    assert dropped and dropped <= second
    assert first <= set(frame["record_id"])


def test_segments_follow_recording_gaps(early_ticks: list[Tick]) -> None:
    frame = features_frame(early_ticks)
    gaps = np.diff(frame["ts"].to_numpy()) > 10.0
    np.testing.assert_array_equal(np.diff(frame["segment_id"].to_numpy()) == 1, gaps)
    for _, seg in frame.groupby("segment_id"):
        age = seg["ts"] - seg["ts"].iloc[0]
        assert seg["warmup"].to_numpy()[(age < 300).to_numpy()].all()
    # ... and while the 30-minute context is short: these files never hold 29 minutes
    assert frame["ts"].max() - frame["ts"].min() > 1800  # (across days)
    assert frame["warmup"].all()


def test_frame_equals_streaming_rows_bit_for_bit(early_ticks: list[Tick]) -> None:
    frame = features_frame(early_ticks).set_index("record_id")
    engine = FeatureEngine()  # the rows the featurizer produces, read back as the consumer does
    rows = [decode_row(encode_row(t, res)) for t in early_ticks
            if (res := engine.step(t)) is not None]
    assert [r.record_id for r in rows] == list(frame.index)
    for row in rows[::37]:
        expected = frame.loc[row.record_id]
        assert row.warmup == expected["warmup"]
        for name in FEATURE_NAMES:
            got = row.features[name]
            want = expected[name]
            assert (got is None and math.isnan(want)) or got == want, name
