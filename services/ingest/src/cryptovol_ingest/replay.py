"""Replay source: the bundled recordings (``data/coinbase-ticker``) and our own raw
archive (``data/raw``), paced at a multiple of real time or as fast as Kafka takes them.

Both go through the same normalisation as live data: recorded tickers through
:func:`cryptovol.runtime.recordings.recorded_tick`, exactly as
:func:`cryptovol.runtime.recordings.read_ticks` does (same ``record_id``, times and prices),
archived messages through the live client's :class:`MessageHandler`. Files play in
chronological order of their first record; overlapping files are not merged (ordering
and duplicates are the featurizer's business). With ``--loop`` every further pass is
shifted by the span of the data, so its ticks get new ids and times keep increasing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
from tqdm import tqdm

from cryptovol.core.timestamps import MICROS_PER_SECOND, format_exchange, now_micros, parse_micros
from cryptovol.runtime.logs import get_logger
from cryptovol.runtime.pacing import Pacer
from cryptovol.runtime.recordings import Recording, open_recordings, recorded_tick
from cryptovol_ingest.handler import MessageHandler

log = get_logger(__name__)

@dataclass(frozen=True)
class ArchiveFile:
    path: Path

    def lines(self) -> Iterator[tuple[int, bytes]]:
        """(receive time in epoch microseconds, untouched message bytes) for every
        archived message."""
        with self.path.open("rb") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    doc = orjson.loads(line)
                    received = parse_micros(doc["received_at"])
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue
                if "text" in doc:
                    yield received, str(doc["text"]).encode()
                    continue
                start = line.find(b'"message":')
                end = line.rstrip().rfind(b"}")
                if start >= 0 and end > start:
                    yield received, line[start + len(b'"message":'):end]

    def first_us(self) -> int:
        return next(self.lines())[0]


def _is_archive(path: Path) -> bool:
    if path.suffix == ".gz":
        return False
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                return line.lstrip().startswith(b'{"received_at"')
    return False


def discover(paths: Iterable[Path | str]) -> list[Recording | ArchiveFile]:
    """The replayable files under ``paths`` (files or folders), oldest first."""
    recordings: list[Path] = []
    archives: list[ArchiveFile] = []
    for item in map(Path, paths):
        if not item.exists():
            raise FileNotFoundError(f"nothing to replay at {item}")
        files = sorted(item.glob("*.ndjson*")) if item.is_dir() else [item]
        for file in files:
            (archives.append(ArchiveFile(file)) if _is_archive(file)
             else recordings.append(file))
    found: list[Recording | ArchiveFile] = [*open_recordings(recordings), *archives]
    return sorted(found, key=lambda f: f.first_us())


class ReplaySource:
    def __init__(self, files: list[Recording | ArchiveFile], handler: MessageHandler, *,
                 speed: float, max_gap_s: float, loop: bool, stop: asyncio.Event) -> None:
        self.files = files
        self.handler = handler
        self.speed = speed
        self.max_gap_s = max_gap_s
        self.loop = loop
        self.stop = stop
        self.passes = 0

    def _span_us(self) -> int:
        first = self.files[0].first_us()
        last = first
        for file in self.files:
            for t in self._times(file):
                last = max(last, t)
        return last - first + MICROS_PER_SECOND

    @staticmethod
    def _times(file: Recording | ArchiveFile) -> Iterator[int]:
        if isinstance(file, Recording):
            return (r["event_us"] for r in file.records())
        return (t for t, _ in file.lines())

    async def run(self) -> int:
        if not self.files:
            log.warning("no files to replay")
            return 0
        span = self._span_us() if self.loop else 0
        total = sum(1 for f in self.files for _ in self._times(f))
        log.info("replaying", extra={"files": len(self.files), "records": total,
                                     "speed": self.speed, "loop": self.loop})
        pacer = Pacer(self.speed, self.max_gap_s)
        while not self.stop.is_set():
            shift = span * self.passes
            with tqdm(total=total, unit="msg", desc=f"replay pass {self.passes + 1}",
                      disable=None, mininterval=1.0) as bar:
                for file in self.files:
                    if isinstance(file, Recording):
                        await self._recording(file, shift, pacer, bar)
                    else:
                        await self._archive(file, shift, pacer, bar)
                    if self.stop.is_set() or self.handler.exhausted:
                        break
            self.passes += 1
            if not self.loop or self.handler.exhausted:
                break
        return self.handler.ticks

    async def _recording(self, recording: Recording, shift_us: int, pacer: Pacer,
                         bar: tqdm) -> None:
        handler = self.handler
        for record in recording.records():
            if self.stop.is_set() or handler.exhausted:
                return
            await pacer.wait((record["event_us"] + shift_us) / MICROS_PER_SECOND)
            try:
                tick = recorded_tick(record, shift_us)
            except (ValueError, KeyError, TypeError) as exc:
                raw = record.get("raw") or record
                await handler.dead_letter(orjson.dumps(raw, default=str), "bad_ticker", repr(exc))
                continue
            handler.last_message_at = time.monotonic()
            await handler.publish([tick], now_micros())
            bar.update()

    async def _archive(self, archive: ArchiveFile, shift_us: int, pacer: Pacer,
                       bar: tqdm) -> None:
        handler = self.handler
        for received, raw in archive.lines():
            if self.stop.is_set() or handler.exhausted:
                return
            if shift_us:  # later loop passes: the same messages, moved forward in time
                raw = _shift_envelope(raw, shift_us)
            await pacer.wait((received + shift_us) / MICROS_PER_SECOND)
            await handler.handle(raw, received + shift_us)
            bar.update()


def _shift_envelope(raw: bytes, shift_us: int) -> bytes:
    try:
        doc = orjson.loads(raw)
        doc["timestamp"] = format_exchange(parse_micros(doc["timestamp"]) + shift_us)
        return orjson.dumps(doc)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return raw
