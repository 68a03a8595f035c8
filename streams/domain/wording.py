"""How a signal's detail speaks to a person: a time, a span, a status, in the desk's words.

    >>> when(1767259800000), span(25 * MINUTE), label("COMMAND_PENDING")
    ('2026-01-01 09:30 UTC', '25 min', 'command pending')
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000


@lru_cache(maxsize=1 << 16)
def when(ms: int) -> str:
    """A time a person reads: ``2026-01-01 09:30 UTC``. Remembered: signals are derived
    again from the whole state on every change, with the same deadlines each time."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def span(ms: int) -> str:
    """A duration a person reads: ``under a minute``, ``25 min``, ``24 h``, ``14 d``."""
    if ms < MINUTE:
        return "under a minute"
    if ms < 2 * HOUR:
        return f"{ms // MINUTE} min"
    if ms < 2 * DAY:
        return f"{ms // HOUR} h"
    return f"{ms // DAY} d"


def label(status: str) -> str:
    return status.lower().replace("_", " ")
