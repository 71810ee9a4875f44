"""Reading the recorded Coinbase ticker files (gzipped NDJSON).

Each line is one ticker as recorded: a naive local ``timestamp`` (the recorder's
receive time) and ``raw``, one element of Coinbase's ``events[].tickers[]``.
The timestamp's zone is a property of the file, kept in ``manifest.json``
beside the recordings. The recorded time is the best event time available, so
it is used as both event time and receive time.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from cryptovol.core.coinbase import ticker_to_tick
from cryptovol.core.ticks import Source, Tick
from cryptovol.core.timestamps import to_micros

MANIFEST = "manifest.json"
DEFAULT_RECORDINGS_DIR = Path("data/coinbase-ticker")


@dataclass(frozen=True)
class Recording:
    path: Path
    timezone: str

    def records(self) -> Iterator[dict]:
        """The recorded ticker dicts, with ``timestamp`` read in the file's zone as
        ``event_us`` (epoch microseconds). Blank and unparsable lines are skipped."""
        zone = ZoneInfo(self.timezone)
        opener = gzip.open if self.path.suffix == ".gz" else open
        with opener(self.path, "rt", encoding="utf-8") as lines:
            for line in lines:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    naive = datetime.fromisoformat(record["timestamp"])
                except (ValueError, KeyError, TypeError):
                    continue
                aware = naive if naive.tzinfo else naive.replace(tzinfo=zone)
                record["event_us"] = to_micros(aware)
                yield record

    def first_us(self) -> int:
        return next(self.records())["event_us"]


def _manifest(folder: Path) -> tuple[str, dict[str, str]]:
    path = folder / MANIFEST
    if not path.exists():
        return "UTC", {}
    manifest = json.loads(path.read_text())
    return manifest.get("default_timezone", "UTC"), manifest.get("files", {})


def open_recordings(paths: Iterable[Path | str]) -> list[Recording]:
    """Recordings for files or folders, in chronological order (by first tick, UTC)."""
    found: list[Recording] = []
    for item in map(Path, paths):
        files = sorted(item.glob("*.ndjson*")) if item.is_dir() else [item]
        for file in files:
            default_tz, zones = _manifest(file.parent)
            found.append(Recording(file, zones.get(file.name, default_tz)))
    return sorted(found, key=Recording.first_us)


def recorded_tick(record: dict, shift_us: int = 0, source: Source = "replay") -> Tick:
    """The tick of one recorded ticker, through the same normalisation as live
    data; its recorded time (moved by ``shift_us``) is its event and receive time.
    Raises ``ValueError``, ``KeyError`` or ``TypeError`` when it cannot be normalised."""
    at = record["event_us"] + shift_us
    return ticker_to_tick(record.get("raw") or record, event_us=at, receive_us=at, source=source)


def read_ticks(recordings: Iterable[Recording], source: Source = "replay") -> Iterator[Tick]:
    """Every recorded ticker as a :class:`~cryptovol.core.ticks.Tick`; records that
    cannot be normalised are skipped."""
    for recording in recordings:
        for record in recording.records():
            try:
                yield recorded_tick(record, source=source)
            except (ValueError, KeyError, TypeError):
                continue
