"""Time, one way: integer epoch microseconds (UTC) inside, RFC 3339 text at the edges.

Every tick, row and record carries its times as integer microseconds since the
Unix epoch, so arithmetic on them is exact (no float seconds, no time zones).
Text exists only on the wire: ``format_micros`` writes RFC 3339 in UTC with six
fractional digits and ``Z`` (``2025-12-06T01:12:47.761914Z``),
``format_exchange`` the exchange's nine digits; ``parse_micros`` reads either
(and any other RFC 3339 offset; digits beyond microseconds are truncated).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from functools import lru_cache

MICROS_PER_SECOND = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def to_micros(dt: datetime) -> int:
    """Exact epoch microseconds of an aware datetime (a naive one is taken as UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // _MICRO


def from_micros(us: int) -> datetime:
    """The aware UTC datetime of epoch microseconds."""
    return _EPOCH + timedelta(microseconds=us)


def now_micros() -> int:
    """The wall clock, in epoch microseconds."""
    return time.time_ns() // 1000


@lru_cache(maxsize=4096)
def _second_text(seconds: int) -> str:
    return (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")


def format_micros(us: int) -> str:
    """RFC 3339, UTC, six fractional digits, ``Z``."""
    seconds, micros = divmod(us, MICROS_PER_SECOND)
    return f"{_second_text(seconds)}.{micros:06d}Z"


def format_exchange(us: int) -> str:
    """The exchange's envelope format: UTC, nine fractional digits, ``Z``."""
    seconds, micros = divmod(us, MICROS_PER_SECOND)
    return f"{_second_text(seconds)}.{micros:06d}000Z"


def format_time(dt: datetime) -> str:
    """:func:`format_micros` of a datetime (a naive one is taken as UTC)."""
    return format_micros(to_micros(dt))


_SECONDS: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM:SS" -> epoch microseconds


def _second_micros(text: str) -> int:
    us = _SECONDS.get(text)
    if us is None:
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        us = _SECONDS[text] = to_micros(datetime.fromisoformat(text).replace(tzinfo=UTC))
    return us


def parse_micros(text: str) -> int:
    """Epoch microseconds of an RFC 3339 timestamp; a value without an offset is
    taken as UTC. Raises ``ValueError`` for anything else."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"not a timestamp: {text!r}")
    # fast path: what this project writes, "YYYY-MM-DDTHH:MM:SS.ffffffZ"
    frac = text[20:26]
    if len(text) == 27 and text[19] == "." and text[26] == "Z" and frac.isascii() \
            and frac.isdigit():
        return _second_micros(text[:19]) + int(frac)
    parsed = datetime.fromisoformat(text)
    return to_micros(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
