from __future__ import annotations

import math
from pathlib import Path

import pytest

from cryptovol_ingest.main import parse_args
from cryptovol_ingest.settings import IngestSettings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SOURCE", "METRICS_PORT", "COINBASE_WS_URL", "DATA_DIR", "SAVE_RAW"):
        monkeypatch.delenv(name, raising=False)
    s = IngestSettings()
    assert s.coinbase_ws_url == "wss://advanced-trade-ws.coinbase.com"
    assert (s.source, s.metrics_port, s.service_name) == ("live", 9101, "ingest")
    assert s.spool_path == Path("data/spool") and s.raw_path == Path("data/raw")
    assert not s.save_raw


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE", "replay")
    monkeypatch.setenv("REPLAY_FILES", "a.ndjson.gz, data/raw")
    monkeypatch.setenv("REPLAY_SPEED", "max")
    monkeypatch.setenv("SAVE_RAW", "true")
    monkeypatch.setenv("DATA_DIR", "/tmp/x")
    s = IngestSettings()
    assert s.source == "replay" and math.isinf(s.replay_speed) and s.save_raw
    assert s.replay_files == [Path("a.ndjson.gz"), Path("data/raw")]
    assert s.spool_path == Path("/tmp/x/spool")


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE", "live")
    monkeypatch.setenv("REPLAY_SPEED", "2")
    overrides = parse_args(["--source", "replay", "--files", "x.gz", "y.gz", "--speed", "10",
                            "--loop", "--max-ticks", "5", "--save-disk", "--products",
                            "BTC-USD,ETH-USD"])
    s = IngestSettings(**overrides)
    assert s.source == "replay" and s.replay_speed == 10 and s.replay_loop
    assert s.replay_files == [Path("x.gz"), Path("y.gz")] and s.max_ticks == 5 and s.save_raw
    assert s.products == ["BTC-USD", "ETH-USD"]
    assert parse_args([]) == {}  # no flag, no override


def test_invalid_speed_is_rejected() -> None:
    with pytest.raises(ValueError):
        IngestSettings(replay_speed="-1")
