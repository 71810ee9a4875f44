"""The featurizer's pieces: throttle, Parquet sink, offline writer, settings (the
messages are :mod:`cryptovol.core.codec`'s, tested in tests/unit/core)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from cryptovol.core.features import FEATURE_NAMES, FRAME_COLUMNS, FeatureEngine, features_frame
from cryptovol.core.ticks import Tick
from cryptovol.runtime.recordings import open_recordings, read_ticks
from cryptovol_featurizer.offline import read_offline, write_offline
from cryptovol_featurizer.settings import FeaturizerSettings
from cryptovol_featurizer.sink import ParquetSink
from cryptovol_featurizer.stage import PartitionState, Throttle


@pytest.fixture(scope="module")
def ticks(recordings_dir: Path) -> list[Tick]:
    first = sorted(recordings_dir.glob("*.ndjson.gz"))[:3]
    return list(read_ticks(open_recordings(first)))


def test_throttle_keeps_the_first_tick_of_each_interval() -> None:
    throttle = Throttle(1000)
    times = [0, 200_000, 999_999, 1_000_000, 1_500_000, 3_100_000]
    assert [throttle.emit("A", t) for t in times] == [True, False, False, True, False, True]
    assert throttle.emit("B", 200_000)  # per product
    assert all(Throttle(0).emit("A", 5) for _ in range(3))


def _emitted(ticks: list[Tick]) -> list:
    state = PartitionState(FeatureEngine(), Throttle(0))
    rows = []
    for tick in ticks:
        res = state.feed(tick)
        if res is not None:
            rows.append((tick, res))
    return rows


def test_sink_writes_new_files_only_and_matches_the_offline_table(
    ticks: list[Tick], tmp_path: Path
) -> None:
    clock = [0.0]
    sink = ParquetSink(tmp_path, max_rows=300, flush_s=5.0, clock=lambda: clock[0])
    rows = _emitted(ticks)
    sink.add(rows[:100])
    assert not sink.due()
    clock[0] = 6.0
    assert sink.due()
    first = sink.flush()
    sink.add(rows[100:])
    assert sink.due()
    second = sink.flush()
    assert len(sink) == 0 and not set(first) & set(second)
    stamps = {p: p.stat().st_mtime_ns for p in first}
    files = sorted(tmp_path.glob("product=*/date=*/part-*.parquet"))
    assert set(files) == set(first) | set(second)
    assert all(p.stat().st_mtime_ns == stamps[p] for p in first)  # untouched
    got = pd.concat([pq.read_table(p).to_pandas() for p in files]).sort_values("ts")
    want = features_frame(ticks)
    assert list(got.columns) == [c for c in FRAME_COLUMNS if c != "segment_id"] + list(
        FEATURE_NAMES)
    pd.testing.assert_frame_equal(got.reset_index(drop=True),
                                  want.drop(columns="segment_id").reset_index(drop=True),
                                  check_dtype=False)


def test_offline_writer_partitions_by_product_and_day(
    recordings_dir: Path, tmp_path: Path, ticks: list[Tick]
) -> None:
    files = sorted(recordings_dir.glob("*.ndjson.gz"))[:3]
    written = write_offline(files, tmp_path, progress=False)
    assert {p.parent.name for p in written} == {"date=2025-11-08", "date=2025-12-01"}
    assert {p.parent.parent.name for p in written} == {"product=BTC-USD"}
    frame = read_offline(tmp_path)
    want = features_frame(ticks)
    pd.testing.assert_frame_equal(frame, want, check_dtype=False)
    again = write_offline(files[:1], tmp_path, progress=False)  # a smaller rerun
    assert sorted(tmp_path.glob("features/*/*/*.parquet")) == again


def test_settings_carry_the_feature_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATURE_GAP_S", "20")
    monkeypatch.setenv("EMIT_INTERVAL_MS", "250")
    settings = FeaturizerSettings()
    assert settings.feature_config().gap_s == 20.0 and settings.emit_interval_ms == 250
    assert settings.metrics_port == 9102
    # the 30-minute context of RV_60 values (each reading 60 s), two gaps, the grace
    assert math.isclose(settings.feature_config().rebuild_lookback_s, 1800 + 60 + 40 + 1)
