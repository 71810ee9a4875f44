from __future__ import annotations

import gzip
import json
import logging
import urllib.error
import urllib.request
from datetime import UTC, datetime

import pytest
from prometheus_client import Counter

from cryptovol.core.timestamps import to_micros
from cryptovol.runtime.health import serve_http
from cryptovol.runtime.logs import JsonFormatter
from cryptovol.runtime.recordings import open_recordings, read_ticks


def _write(path, records):
    with gzip.open(path, "wt") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")


def _record(ts: str, price: str) -> dict:
    return {"timestamp": ts, "product_id": "BTC-USD", "price": price,
            "raw": {"type": "ticker", "product_id": "BTC-USD", "price": price}}


def test_recordings_apply_the_file_timezone_and_sort_files_by_time(tmp_path):
    _write(tmp_path / "b.ndjson.gz", [_record("2025-12-01T00:01:00.5", "100")])
    _write(tmp_path / "a.ndjson.gz", [_record("2025-12-01T04:00:00", "101")])
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"default_timezone": "UTC", "files": {"b.ndjson.gz": "America/New_York"}}))
    recordings = open_recordings([tmp_path])
    assert [r.path.name for r in recordings] == ["a.ndjson.gz", "b.ndjson.gz"]
    ticks = list(read_ticks(recordings))
    assert ticks[1].event_us == to_micros(datetime(2025, 12, 1, 5, 1, 0, 500000, tzinfo=UTC))
    assert ticks[0].event_us == to_micros(datetime(2025, 12, 1, 4, 0, tzinfo=UTC))
    assert all(t.receive_us == t.event_us for t in ticks)
    assert {t.source for t in ticks} == {"replay"}


def test_bad_lines_in_a_recording_are_skipped_not_fatal(tmp_path):
    path = tmp_path / "x.ndjson.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps(_record("2025-12-06T01:00:00", "100")) + "\n")
        f.write("{broken\n\n")
        f.write(json.dumps(_record("2025-12-06T01:00:01", "not-a-price")) + "\n")
        f.write(json.dumps(_record("2025-12-06T01:00:02", "102")) + "\n")
    prices = [t.price for t in read_ticks(open_recordings([path]))]
    assert prices == [100.0, 102.0]


def test_bundled_recordings_are_all_readable(recordings_dir):
    recordings = open_recordings([recordings_dir])
    assert len(recordings) == len(list(recordings_dir.glob("*.ndjson.gz"))) == 27
    starts = [r.first_us() for r in recordings]
    assert starts == sorted(starts)


def test_json_logs_carry_service_level_message_and_extras():
    formatter = JsonFormatter("ingest")
    record = logging.LogRecord("cryptovol.x", logging.WARNING, __file__, 1, "gap of %d", (3,), None)
    record.product_id = "BTC-USD"
    entry = json.loads(formatter.format(record))
    assert entry["service"] == "ingest" and entry["level"] == "warning"
    assert entry["msg"] == "gap of 3" and entry["product_id"] == "BTC-USD"
    assert entry["ts"].endswith("Z")


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_worker_http_server_serves_metrics_health_and_readiness():
    Counter("cryptovol_test_things", "things counted in a test").inc(3)
    healthy = {"ok": True}
    server = serve_http(0, lambda: (healthy["ok"], {"kafka_connected": healthy["ok"]}),
                        host="127.0.0.1")
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        status, body = _get(base + "/metrics")
        assert status == 200 and b"cryptovol_test_things_total 3.0" in body
        assert _get(base + "/readyz")[0] == 200
        healthy["ok"] = False
        status, body = _get(base + "/readyz")
        assert status == 503 and json.loads(body)["status"] == "degraded"
        status, body = _get(base + "/health")
        assert status == 200 and json.loads(body)["kafka_connected"] is False
        assert _get(base + "/healthz")[0] == 200
        assert _get(base + "/nope")[0] == 404
    finally:
        server.shutdown()


@pytest.mark.parametrize("broken", [True])
def test_a_failing_health_check_reports_degraded_instead_of_crashing(broken):
    def check():
        raise RuntimeError("kafka exploded")

    server = serve_http(0, check, host="127.0.0.1")
    try:
        status, body = _get(f"http://127.0.0.1:{server.server_address[1]}/readyz")
        assert status == 503 and "kafka exploded" in json.loads(body)["error"]
    finally:
        server.shutdown()
