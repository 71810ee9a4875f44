from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from cryptovol.recordings import open_recordings, read_ticks
from cryptovol.schemas import RawTick, to_json_bytes
from cryptovol_ingest.encoding import tick_json

RECORDINGS = Path(__file__).resolve().parents[3] / "data" / "coinbase-ticker"


def test_fast_encoding_equals_the_schema_encoding_for_recorded_ticks() -> None:
    files = [RECORDINGS / f"ticks_BTCUSD_{name}.ndjson.gz"
             for name in ("20251130_235611", "20251201_164446_10min", "20251206_054035")]
    ticks = list(read_ticks(open_recordings(files)))
    assert len(ticks) > 5000
    assert all(tick_json(t) == to_json_bytes(t) for t in ticks)


def test_fast_encoding_handles_odd_values() -> None:
    odd = RawTick(record_id="X:1:0", product_id="X", price=1e-9, best_bid=None,
                  event_time=datetime(2025, 1, 1, tzinfo=timezone(timedelta(hours=-5))),
                  receive_time=datetime(2025, 1, 1, 5, 0, 0, 1, tzinfo=UTC),
                  sequence_num=0, volume_24h=float("inf"))
    assert tick_json(odd) == to_json_bytes(odd)
    assert RawTick.model_validate_json(tick_json(odd)).event_time == odd.event_time
