from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson

from cryptovol.core.timestamps import to_micros
from cryptovol_ingest.archive import RawArchive, archive_line

AT = to_micros(datetime(2025, 12, 6, 1, 12, 47, 123456, tzinfo=UTC))
S = 1_000_000


def test_messages_are_kept_untouched() -> None:
    raw = b'{"channel":"ticker",  "events":[]}'
    line = archive_line(raw, AT)
    assert line == b'{"received_at":"2025-12-06T01:12:47.123456Z","message":' + raw + b"}\n"
    assert orjson.loads(line)["message"] == {"channel": "ticker", "events": []}
    odd = archive_line(b"not json\nat all", AT)
    assert orjson.loads(odd) == {"received_at": "2025-12-06T01:12:47.123456Z",
                                 "text": "not json\nat all"}


def test_rotation_by_size_and_by_time(tmp_path: Path) -> None:
    now = [0.0]
    archive = RawArchive(tmp_path, rotate_bytes=1024, rotate_s=60, clock=lambda: now[0])
    for i in range(40):  # ~100 bytes a line: rotates by size
        archive.write(b'{"n":%d,"pad":"%s"}' % (i, b"x" * 40), AT + i * S)
    by_size = len(list(tmp_path.glob("*.ndjson")))
    assert by_size >= 3
    now[0] = 61.0  # an hour passes: rotates by time
    archive.write(b'{"n":99}', AT + 3600 * S)
    archive.close()
    files = sorted(tmp_path.glob("*.ndjson"))
    assert len(files) == by_size + 1
    lines = [line for f in files for line in f.read_bytes().splitlines()]
    assert len(lines) == 41
    assert files[-1].name.startswith("coinbase-20251206T021247")
