"""Raw archive: every WebSocket message exactly as received, as NDJSON under
``data/raw/``, one file per rotation period or size.

Each line is ``{"received_at": "<RFC 3339>", "message": <the message>}``; the message
bytes are spliced in untouched. A message that is not single-line JSON is kept as a
string instead: ``{"received_at": ..., "text": "<the message>"}``. Replay reads these
files back through the same parser as the live client.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import orjson

from cryptovol.core.timestamps import format_micros, from_micros
from cryptovol.runtime.logs import get_logger

log = get_logger(__name__)

FLUSH_INTERVAL_S = 1.0


def archive_line(raw: bytes, received_us: int) -> bytes:
    stamp = format_micros(received_us).encode()
    if b"\n" not in raw and b"\r" not in raw:
        try:
            orjson.loads(raw)
            return b'{"received_at":"%s","message":%s}\n' % (stamp, raw)
        except orjson.JSONDecodeError:
            pass
    return orjson.dumps({"received_at": stamp.decode(),
                         "text": raw.decode("utf-8", "replace")}) + b"\n"


class RawArchive:
    def __init__(self, directory: Path, *, rotate_bytes: int, rotate_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = Path(directory)
        self.rotate_bytes = rotate_bytes
        self.rotate_s = rotate_s
        self._clock = clock
        self._file = None
        self._size = 0
        self._opened = 0.0
        self._last_flush = 0.0
        self.path: Path | None = None
        self.directory.mkdir(parents=True, exist_ok=True)

    def _open(self, received_us: int) -> None:
        self.close()
        base = "coinbase-" + from_micros(received_us).strftime("%Y%m%dT%H%M%S%fZ")
        path = self.directory / f"{base}.ndjson"
        n = 1
        while path.exists():
            path, n = self.directory / f"{base}-{n}.ndjson", n + 1
        self.path = path
        self._file = path.open("ab", buffering=256 * 1024)
        self._size = 0
        self._opened = self._last_flush = self._clock()
        log.info("raw archive file opened", extra={"path": str(path)})

    def write(self, raw: bytes, received_us: int) -> None:
        now = self._clock()
        if (self._file is None or self._size >= self.rotate_bytes
                or now - self._opened >= self.rotate_s):
            self._open(received_us)
        line = archive_line(raw, received_us)
        self._file.write(line)  # type: ignore[union-attr]
        self._size += len(line)
        if now - self._last_flush >= FLUSH_INTERVAL_S:
            self._file.flush()  # type: ignore[union-attr]
            self._last_flush = now

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
