"""Replay goes through the live normalisation and matches the offline reader exactly."""

from __future__ import annotations

import asyncio
import math
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from ingest_fakes import CollectingSink

from cryptovol.core.coinbase import parse_message
from cryptovol.core.timestamps import to_micros
from cryptovol.devtools.fake_exchange import envelope
from cryptovol.runtime.recordings import open_recordings, read_ticks
from cryptovol_ingest.archive import RawArchive
from cryptovol_ingest.handler import MessageHandler
from cryptovol_ingest.metrics import isolated_metrics
from cryptovol_ingest.replay import ArchiveFile, ReplaySource, discover

RECORDINGS = Path(__file__).resolve().parents[3] / "data" / "coinbase-ticker"
SMALL = ["ticks_BTCUSD_20251130_235611.ndjson.gz", "ticks_BTCUSD_20251130_235646.ndjson.gz"]


def replay(paths: list[Path], *, loop: bool = False, max_ticks: int | None = None,
           speed: float = math.inf) -> tuple[CollectingSink, ReplaySource]:
    sink = CollectingSink()
    handler = MessageHandler(sink, isolated_metrics(), source="replay", max_ticks=max_ticks)
    source = ReplaySource(discover(paths), handler, speed=speed, max_gap_s=0.01, loop=loop,
                          stop=asyncio.Event())
    asyncio.run(source.run())
    return sink, source


def test_replayed_ticks_equal_the_offline_reader_for_every_recording() -> None:
    sink, _ = replay([RECORDINGS])
    offline = list(read_ticks(open_recordings([RECORDINGS])))
    assert len(sink.ticks) == len(offline) > 50_000
    assert sink.ticks == offline  # same ids, times, prices, field for field
    assert sink.dead_letters == []


def test_overlapping_recordings_play_in_file_order_without_merging() -> None:
    sink, _ = replay([RECORDINGS / name for name in reversed(SMALL)])
    offline = list(read_ticks(open_recordings([RECORDINGS / n for n in SMALL])))
    assert sink.ticks == offline
    times = [t.event_us for t in sink.ticks]
    assert times != sorted(times)  # the two files overlap; ordering is left downstream


def test_loop_passes_are_shifted_so_ids_stay_unique() -> None:
    one = RECORDINGS / SMALL[1]
    n = len(list(read_ticks(open_recordings([one]))))
    sink, source = replay([one], loop=True, max_ticks=2 * n + 5)
    assert len(sink.ticks) == 2 * n + 5 and source.passes == 3
    first, second = sink.ticks[:n], sink.ticks[n:2 * n]
    assert len({t.record_id for t in sink.ticks}) == len(sink.ticks)
    assert second[0].event_us > first[-1].event_us
    shift = second[0].event_us - first[0].event_us
    assert all(b.event_us - a.event_us == shift and a.price == b.price
               for a, b in zip(first, second, strict=True))


def test_the_raw_archive_replays_through_the_live_parser(tmp_path: Path) -> None:
    base = to_micros(datetime(2025, 12, 6, 1, 0, tzinfo=UTC))
    raw_ticker = {"type": "ticker", "product_id": "BTC-USD", "price": "89000.5",
                  "best_bid": "89000", "best_ask": "89001"}
    messages = [
        envelope("subscriptions", base, 0, [{"subscriptions": {"ticker": ["BTC-USD"]}}]),
        envelope("ticker", base, 1, [{"type": "snapshot", "tickers": [raw_ticker]}]),
        b"not json at all",
        envelope("heartbeats", base, 2, [{"current_time": "x", "heartbeat_counter": 1}]),
        envelope("ticker", base + 1_000_000, 3, [{"type": "update", "tickers": [
            raw_ticker, {**raw_ticker, "price": "89002"}]}]),
    ]
    archive = RawArchive(tmp_path / "raw", rotate_bytes=1 << 20, rotate_s=3600)
    received = [base + (10 + i) * 1000 for i in range(len(messages))]
    for message, at in zip(messages, received, strict=True):
        archive.write(message, at)
    archive.close()
    [file] = discover([tmp_path / "raw"])
    assert isinstance(file, ArchiveFile)
    assert [raw for _, raw in file.lines()] == messages  # byte for byte
    sink, _ = replay([tmp_path / "raw"])
    live = [t for m, at in zip(messages, received, strict=True) if m[:1] == b"{"
            for t in parse_message(m, receive_us=at, source="replay").ticks]
    assert sink.ticks == live and len(live) == 3
    assert sink.dead_letters[0][0] == b"not json at all"


def test_mixed_recordings_and_archives_play_oldest_first(tmp_path: Path) -> None:
    shutil.copy(RECORDINGS / SMALL[1], tmp_path / SMALL[1])  # no manifest here: UTC
    archive = RawArchive(tmp_path, rotate_bytes=1 << 20, rotate_s=3600)
    long_ago = to_micros(datetime(2020, 1, 1, tzinfo=UTC))
    archive.write(envelope("heartbeats", long_ago, 0, [{"heartbeat_counter": 1}]), long_ago)
    archive.close()
    files = discover([tmp_path])
    assert [type(f).__name__ for f in files] == ["ArchiveFile", "Recording"]


def test_missing_files_are_reported() -> None:
    with pytest.raises(FileNotFoundError):
        discover([Path("/nonexistent/recordings")])
