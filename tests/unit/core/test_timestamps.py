"""One time module: integer epoch microseconds inside, RFC 3339 at the edges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cryptovol.core.timestamps import (
    format_exchange,
    format_micros,
    format_time,
    from_micros,
    parse_micros,
    to_micros,
)

T0 = datetime(2025, 12, 6, 1, 12, 47, 761914, tzinfo=UTC)
T0_US = 1_764_983_567_761_914
# from 1970 to 2200, microsecond resolution
MICROS = st.integers(min_value=0, max_value=7_258_118_400_000_000)


def test_datetimes_and_micros_are_exact_inverses():
    assert to_micros(T0) == T0_US
    assert from_micros(T0_US) == T0
    assert to_micros(T0.astimezone(timezone(timedelta(hours=-5)))) == T0_US
    assert to_micros(T0.replace(tzinfo=None)) == T0_US  # naive is UTC


def test_text_is_rfc3339_utc_with_six_digits_and_z():
    assert format_micros(T0_US) == "2025-12-06T01:12:47.761914Z"
    assert format_micros(0) == "1970-01-01T00:00:00.000000Z"
    assert format_time(T0.astimezone(timezone(timedelta(hours=-5)))) == format_micros(T0_US)
    assert format_exchange(T0_US) == "2025-12-06T01:12:47.761914000Z"


@pytest.mark.parametrize("text", [
    "2025-12-06T01:12:47.761914Z",  # ours
    "2025-12-06T01:12:47.761914999Z",  # the exchange's nine digits: truncated, not rounded
    "2025-12-06T01:12:47.761914+00:00",
    "2025-12-05T20:12:47.761914-05:00",
    "2025-12-06T01:12:47.761914",  # naive: UTC
    "2025-12-06 01:12:47.761914Z",
])
def test_every_rfc3339_spelling_reads_to_the_same_micros(text):
    assert parse_micros(text) == T0_US


@pytest.mark.parametrize("text", ["", "yesterday", "2025-13-06T01:12:47.761914Z",
                                  "2025-12-06T01:12:47.7619١٤Z", None, 1764983567])
def test_anything_else_is_a_value_error(text):
    with pytest.raises((ValueError, TypeError)):
        parse_micros(text)


@given(MICROS)
def test_both_formats_read_back_exactly(us):
    assert parse_micros(format_micros(us)) == us
    assert parse_micros(format_exchange(us)) == us
    assert parse_micros(from_micros(us).isoformat()) == us
