"""The featurizer's pure pieces: message codec, throttle, Parquet sink, offline writer."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pandas as pd
import pyarrow.parquet as pq
import pytest

from cryptovol.core.features import FEATURE_NAMES, FRAME_COLUMNS, FeatureEngine, features_frame
from cryptovol.core.schemas import FeatureRow, RawTick, to_json_bytes
from cryptovol.runtime.recordings import open_recordings, read_ticks
from cryptovol_featurizer.codec import MalformedTick, parse_tick, row_json, tick_in
from cryptovol_featurizer.offline import read_offline, write_offline
from cryptovol_featurizer.service import PartitionState, Throttle
from cryptovol_featurizer.settings import FeaturizerSettings
from cryptovol_featurizer.sink import ParquetSink


@pytest.fixture(scope="module")
def ticks(recordings_dir: Path) -> list[RawTick]:
    first = sorted(recordings_dir.glob("*.ndjson.gz"))[:3]
    return list(read_ticks(open_recordings(first)))


def test_fast_parse_equals_the_schema(ticks: list[RawTick]) -> None:
    for tick in ticks[::50]:
        assert parse_tick(to_json_bytes(tick)) == tick_in(tick)


def test_other_valid_shapes_go_through_the_schema(ticks: list[RawTick]) -> None:
    doc = orjson.loads(to_json_bytes(ticks[0]))
    doc["price"] = str(doc["price"])  # numbers as strings: the schema accepts them
    doc["event_time"] = "2025-11-08T15:12:31.463496+00:00"
    parsed = parse_tick(orjson.dumps(doc))
    assert parsed.price == ticks[0].price and parsed.event_us == tick_in(ticks[0]).event_us


@pytest.mark.parametrize("raw", [
    None, b"", b"not json", b"[1, 2]", b'{"record_id": "x"}',
    b'{"record_id": "x", "product_id": "BTC-USD", "event_time": "yesterday", '
    b'"receive_time": "2025-01-01T00:00:00Z", "price": 1.0}',
    b'{"record_id": "x", "product_id": "BTC-USD", "event_time": "2025-01-01T00:00:00Z", '
    b'"receive_time": "2025-01-01T00:00:00Z", "price": "abc"}',
])
def test_malformed_messages_raise_one_error_type(raw: bytes | None) -> None:
    with pytest.raises(MalformedTick):
        parse_tick(raw)


def test_row_json_is_a_feature_row_equal_to_the_engine_s(ticks: list[RawTick]) -> None:
    by_model, by_step = FeatureEngine(), FeatureEngine()
    for tick in ticks[:400]:
        expected = by_model.update(tick)
        t = tick_in(tick)
        res = by_step.step(t.product_id, t.record_id, t.event_us, t.price, t.best_bid,
                           t.best_ask, t.bid_qty, t.ask_qty, t.receive_us)
        if expected is None:
            assert res is None
            continue
        assert FeatureRow.model_validate_json(row_json(t, res)) == expected


def test_throttle_keeps_the_first_tick_of_each_interval() -> None:
    throttle = Throttle(1000)
    times = [0, 200_000, 999_999, 1_000_000, 1_500_000, 3_100_000]
    assert [throttle.emit("A", t) for t in times] == [True, False, False, True, False, True]
    assert throttle.emit("B", 200_000)  # per product
    assert all(Throttle(0).emit("A", 5) for _ in range(3))


def _emitted(ticks: list[RawTick]) -> list:
    state = PartitionState(FeatureEngine(), Throttle(0))
    rows = []
    for tick in ticks:
        t = tick_in(tick)
        res = state.feed(t)
        if res is not None:
            rows.append((t, res))
    return rows


def test_sink_writes_new_files_only_and_matches_the_offline_table(
    ticks: list[RawTick], tmp_path: Path
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
    recordings_dir: Path, tmp_path: Path, ticks: list[RawTick]
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
    assert math.isclose(settings.feature_config().rebuild_lookback_s, 300 + 40 + 1)
