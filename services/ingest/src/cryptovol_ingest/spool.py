"""Append-only, bounded, on-disk spool of records waiting for Kafka.

Every tick is appended here before it is handed to the producer, so the spool is
the single ordered log between the exchange and Kafka: when Kafka is unavailable the
log simply grows, and sending resumes from the first unsent record when it returns.

Layout: ``<dir>/<segment id>.seg`` files of lines ``<received epoch>\\t<key>\\t<value>\\n``
(values are single-line JSON) and ``<dir>/cursor.json`` with the position up to which
Kafka has acknowledged everything. A segment is deleted once the cursor has moved past
it. Durability: appends reach the OS page cache at every :meth:`flush` (a process crash
loses nothing that was flushed); ``fsync`` runs at most every ``fsync_interval_s``, at
segment rotation and at close (a power loss can cost up to that interval).

The spool never drops what it accepted: when an append would exceed ``max_bytes``
the new record is refused (drop-newest) and the caller counts it.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import orjson

from cryptovol.runtime.logs import get_logger

log = get_logger(__name__)

CURSOR_FILE = "cursor.json"
SEGMENT_SUFFIX = ".seg"


class Position(NamedTuple):
    segment: int
    offset: int


@dataclass(slots=True)
class SpoolRecord:
    end: Position  # where the next record starts
    received: float  # wall-clock epoch seconds of local receipt
    key: bytes
    value: bytes


def encode(received: float, key: bytes, value: bytes) -> bytes:
    if b"\n" in value or b"\t" in key or b"\n" in key:
        raise ValueError("spool keys and values must be single-line")
    return b"%.6f\t%s\t%s\n" % (received, key, value)


def decode(line: bytes) -> tuple[float, bytes, bytes]:
    received, key, value = line.rstrip(b"\n").split(b"\t", 2)
    return float(received), key, value


class Spool:
    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int = 16 * 1024 * 1024,
        fsync_interval_s: float = 1.0,
        memory_records: int = 50_000,
        cursor_interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync_interval_s = fsync_interval_s
        self.memory_records = memory_records
        self.cursor_interval_s = cursor_interval_s
        self._clock = clock
        self.directory.mkdir(parents=True, exist_ok=True)
        self._sizes: dict[int, int] = {}  # segment id -> bytes, for every segment on disk
        self.appended = 0  # records in the spool when opened plus appended since
        self.read_count = 0
        self.committed = 0
        self._commit = Position(0, 0)
        self._last_cursor_write = 0.0
        self._last_fsync = clock()
        self._mem: deque[SpoolRecord] = deque()
        self._mem_ok = True  # the memory copy holds exactly the unsent records
        self._reader = None
        self._reader_segment = -1
        self._recover()

    # -- recovery -----------------------------------------------------------------------------

    def _segment_path(self, segment: int) -> Path:
        return self.directory / f"{segment:012d}{SEGMENT_SUFFIX}"

    def _recover(self) -> None:
        segments = sorted(int(p.stem) for p in self.directory.glob(f"*{SEGMENT_SUFFIX}"))
        cursor_path = self.directory / CURSOR_FILE
        commit = Position(segments[0] if segments else 0, 0)
        if cursor_path.exists():
            try:
                doc = orjson.loads(cursor_path.read_bytes())
                commit = Position(int(doc["segment"]), int(doc["offset"]))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                log.error("spool cursor unreadable; resending the whole spool",
                          extra={"path": str(cursor_path)})
        for segment in segments:
            path = self._segment_path(segment)
            if segment < commit.segment:
                path.unlink()
                continue
            self._sizes[segment] = self._truncate_torn_tail(path)
        if commit.segment not in self._sizes:
            commit = Position(min(self._sizes, default=max(segments, default=-1) + 1), 0)
        self._commit = commit
        self._read = commit
        pending = self._count_from(commit)
        self.appended = pending
        self._mem_ok = pending == 0
        self._write_segment = max(self._sizes, default=commit.segment - 1) + 1
        self._open_writer()
        if pending:
            log.warning("spool holds unsent ticks from an earlier run; they will be sent first",
                        extra={"ticks": pending, "dir": str(self.directory)})

    @staticmethod
    def _truncate_torn_tail(path: Path) -> int:
        size = path.stat().st_size
        if size == 0:
            return 0
        with path.open("rb+") as f:
            f.seek(max(0, size - 1))
            if f.read(1) == b"\n":
                return size
            data = path.read_bytes()
            keep = data.rfind(b"\n") + 1
            f.truncate(keep)
            log.warning("spool segment ended in a torn record; truncated",
                        extra={"path": str(path), "bytes_dropped": size - keep})
            return keep

    def _count_from(self, start: Position) -> int:
        count = 0
        for segment in sorted(self._sizes):
            if segment < start.segment:
                continue
            with self._segment_path(segment).open("rb") as f:
                if segment == start.segment:
                    f.seek(start.offset)
                count += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        return count

    def _open_writer(self) -> None:
        self._sizes[self._write_segment] = 0
        self._writer = self._segment_path(self._write_segment).open("ab", buffering=1 << 20)
        self._write_offset = 0

    # -- writing ------------------------------------------------------------------------------

    @property
    def bytes_on_disk(self) -> int:
        return sum(self._sizes.values())

    def append(self, records: Iterable[tuple[float, bytes, bytes]]) -> int:
        """Append records in order; return how many were accepted (the rest hit the bound)."""
        accepted = 0
        total = self.bytes_on_disk
        for received, key, value in records:
            line = encode(received, key, value)
            if total + len(line) > self.max_bytes:
                continue
            self._writer.write(line)
            self._write_offset += len(line)
            self._sizes[self._write_segment] = self._write_offset
            total += len(line)
            accepted += 1
            self.appended += 1
            if self._mem_ok:
                if len(self._mem) < self.memory_records:
                    self._mem.append(SpoolRecord(
                        Position(self._write_segment, self._write_offset), received, key, value))
                else:  # too many unsent records to mirror in memory: read them back from disk
                    self._mem_ok = False
                    self._mem.clear()
            if self._write_offset >= self.segment_bytes:
                self._rotate()
        return accepted

    def _rotate(self) -> None:
        self._writer.flush()
        os.fsync(self._writer.fileno())
        self._writer.close()
        self._write_segment += 1
        self._open_writer()

    def flush(self) -> None:
        """Hand appended bytes to the OS; fsync when the interval has passed."""
        self._writer.flush()
        now = self._clock()
        if now - self._last_fsync >= self.fsync_interval_s:
            os.fsync(self._writer.fileno())
            self._last_fsync = now

    # -- reading and acknowledging -------------------------------------------------------------

    @property
    def unsent(self) -> int:
        return self.appended - self.read_count

    @property
    def unacked(self) -> int:
        return self.appended - self.committed

    def read(self, max_records: int) -> list[SpoolRecord]:
        """The next unsent records, in order (at most ``max_records``)."""
        if max_records <= 0 or self.unsent == 0:
            return []
        if self._mem_ok:
            out = [self._mem.popleft() for _ in range(min(max_records, len(self._mem)))]
        else:
            out = self._read_disk(max_records)
        if out:
            self._read = out[-1].end
            self.read_count += len(out)
        if self.unsent == 0 and not self._mem_ok:
            self._mem_ok = True  # caught up: mirror new appends in memory again
            self._close_reader()
        return out

    def _read_disk(self, max_records: int) -> list[SpoolRecord]:
        self._writer.flush()
        out: list[SpoolRecord] = []
        position = self._read
        while len(out) < max_records:
            if position.segment not in self._sizes:
                break
            if position.offset >= self._sizes[position.segment]:
                later = [s for s in self._sizes if s > position.segment]
                if not later:
                    break
                position = Position(min(later), 0)
                continue
            if self._reader_segment != position.segment:
                self._close_reader()
                self._reader = self._segment_path(position.segment).open("rb")
                self._reader_segment = position.segment
            reader = self._reader
            reader.seek(position.offset)
            while len(out) < max_records:
                line = reader.readline()
                if not line.endswith(b"\n"):
                    break
                offset = position.offset + len(line)
                position = Position(position.segment, offset)
                received, key, value = decode(line)
                out.append(SpoolRecord(position, received, key, value))
        return out

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._reader, self._reader_segment = None, -1

    def commit(self, end: Position, records: int = 1, *, force: bool = False) -> None:
        """Kafka acknowledged ``records`` more records, the last of them ending at ``end``
        (a resent older record never moves the cursor back)."""
        self._commit = max(self._commit, end)
        self.committed += records
        for segment in [s for s in self._sizes if s < end.segment]:
            if segment == self._reader_segment:
                self._close_reader()
            self._segment_path(segment).unlink(missing_ok=True)
            del self._sizes[segment]
            force = True
        now = self._clock()
        if force or now - self._last_cursor_write >= self.cursor_interval_s:
            self._write_cursor()
            self._last_cursor_write = now

    def _write_cursor(self) -> None:
        tmp = self.directory / (CURSOR_FILE + ".tmp")
        tmp.write_bytes(orjson.dumps({"segment": self._commit.segment,
                                      "offset": self._commit.offset}))
        os.replace(tmp, self.directory / CURSOR_FILE)

    def close(self) -> None:
        self._writer.flush()
        os.fsync(self._writer.fileno())
        self._writer.close()
        self._close_reader()
        self._write_cursor()
