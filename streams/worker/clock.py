"""The clocks the join's handlers read: the wall clock and each partition's event time.

Both are module attributes read at call time, so a test harness can stand in for them
(tests/join_harness.py moves the wall clock by a random step per batch).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ms() -> int:
    return int(time.time() * 1000)


#: partition -> the newest occurred_at of an event handled on it (never ahead of the wall
#: clock): the event time held events expire by. A held message records it as ``held_at``
#: (and the wall clock as ``held_wall``) and expires once its partition's clock is
#: KEEL_HOLD_MAX_S past that, so a department's backfill of old events waits as long as live
#: ones, and once it also waited that long by the wall clock: a backlog moves a reference
#: partition's clock ahead of the binds that would release it (streams/domain/join.py). Kept in
#: memory; after a restart it starts again from what arrives, which can only delay an
#: expiry, never hasten it.
event_clock: dict[int, int] = {}


def saw(partition: int, occurred_at: int) -> None:
    """Move ``partition``'s event time to ``occurred_at`` (never back, never past now)."""
    if occurred_at > event_clock.get(partition, 0):
        event_clock[partition] = min(occurred_at, now_ms())


def failed_at() -> bytes:
    """A dead letter's ``x-failed-at`` header: now, ISO 8601 in UTC to the millisecond."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z").encode()
