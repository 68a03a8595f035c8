"""Timestamps between keel's epoch milliseconds and JSON's ISO-8601 strings (docs/contract.md §2).

Inside keel a ``timestamp-millis`` value is an ``int`` of epoch milliseconds; in JSON it is an
ISO-8601 UTC string with millisecond precision and a ``Z`` suffix. streams/encoding/jsonconv.py
converts whole records with these two; :func:`describe` words a JSON value for an error message
the sender can act on.

    >>> iso_ms(1795428180123)
    '2026-11-23T10:03:00.123Z'
    >>> parse_ts("2026-11-23T11:03:00.123+01:00")
    1795428180123
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

__all__ = ["EXACT_FLOAT", "describe", "iso_ms", "parse_ts"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = _EPOCH.toordinal()
_ONE_MS = timedelta(milliseconds=1)
_MS_PER_DAY = 86_400_000
_TS_MIN = -62_135_596_800_000  # 0001-01-01T00:00:00.000Z
_TS_MAX = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_TS_HINT = "an ISO-8601 timestamp like 2026-11-23T10:03:00.123Z or epoch milliseconds"
#: beyond it a number with a fraction or exponent may not be the one written
EXACT_FLOAT = 2**53


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC, always with milliseconds and ``Z``.

    >>> iso_ms(0)
    '1970-01-01T00:00:00.000Z'
    """
    if not isinstance(ms, int) or isinstance(ms, bool):
        raise TypeError(f"expected epoch milliseconds (int), got {type(ms).__name__}")
    days, ms_of_day = divmod(ms, _MS_PER_DAY)
    seconds, millis = divmod(ms_of_day, 1000)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    return f"{_iso_day(days)}T{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}Z"


@functools.lru_cache(maxsize=4096)
def _iso_day(days: int) -> str:
    """The date part for a day since the epoch; cached because a state's timestamps cluster."""
    try:
        day = date.fromordinal(_EPOCH_ORDINAL + days)
    except (ValueError, OverflowError):
        raise ValueError(f"day {days} since 1970 is outside the years 1..9999") from None
    return f"{day.year:04d}-{day.month:02d}-{day.day:02d}"


def parse_ts(value: object) -> int:
    """Epoch milliseconds from an ISO-8601 string with ``Z`` or an offset, or from an integer.

    An integer may be a float with a zero fraction (JSON's ``1795428180123.0``), as JSON Schema
    counts it an integer.

    A string without a UTC offset is rejected rather than guessed: a department's local time
    silently read as UTC would shift every event by hours. Sub-millisecond digits are truncated.
    The instant must lie in the years 0001..9999 (UTC) so that :func:`iso_ms` can show it again.
    Raises :class:`ValueError` with a reason a sender can act on.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected {_TS_HINT}, got {describe(value)}")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, float) and value.is_integer() and abs(value) <= EXACT_FLOAT:
        ms = int(value)
    elif isinstance(value, str):
        if value.lstrip("-").isdigit() and len(value) > 8:  # not a basic-format ISO date
            raise ValueError(
                f"{describe(value)}: send epoch milliseconds as a JSON number, not a string"
            )
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{describe(value)} is not {_TS_HINT}") from None
        if parsed.tzinfo is None:
            raise ValueError(
                f"{describe(value)} has no UTC offset; add Z for UTC or an offset like +01:00"
            )
        ms = (parsed - _EPOCH) // _ONE_MS
    elif isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime: attach a timezone so the instant is unambiguous")
        ms = (value - _EPOCH) // _ONE_MS
    else:
        raise ValueError(f"expected {_TS_HINT}, got {describe(value)}")
    if not _TS_MIN <= ms <= _TS_MAX:
        hint = " (micro- or nanoseconds instead of milliseconds?)" if isinstance(value, int) else ""
        raise ValueError(f"{describe(value)} lies outside the years 0001..9999 UTC{hint}")
    return ms


def describe(value: Any) -> str:
    """A JSON-flavoured description of a value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return f"string {text if len(text) <= 60 else text[:57] + '…'}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
