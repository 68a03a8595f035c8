"""This worker's copies of table partitions, and how current each is: what it answers from
while partitions move (docs/contract.md §7, docs/fault-tolerance.md).

A worker holds two kinds of copy of a table partition in its RocksDB databases:

- **active**: it owns the partition and is the only writer; current whenever it is ready;
- **standby** (``KEEL_STANDBY_REPLICAS``): faust's recovery reads the partition's changelog
  all the time and applies it in batches; a standby keeps up to the changelog within a
  fetch, and :func:`keep_current` applies what it has buffered every ``tuning.COPY_TICK_S``.

Every tick notes, per partition, the time up to which the copy is known to hold every change
(:func:`as_of`): an active one while the worker is ready, a standby one once what it applied
reached the end its changelog had (as last fetched) at a tick: that tick's time — under steady
traffic the tick before, more is always on its way. That time only ever moves forward, and is
a lower bound: a copy noted 3 s ago may well be current, but it is not known to be. A copy
whose time is unknown (a standby still catching up after a start, a partition restored from
nothing) is not answered from. Revoked partitions' databases are closed by faust: no copy.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from faust.types import TP

from streams import tuning
from streams.app import app
from streams.worker.tables import CHANGELOG_TOPIC, partition_of, views_ready

log = logging.getLogger(__name__)

__all__ = ["as_of", "keep_current", "read", "warm"]

_TABLE_OF_TOPIC = {topic: table for table, topic in CHANGELOG_TOPIC.items()}
#: (changelog topic, partition) -> epoch seconds up to which the copy holds every change
_as_of: dict[tuple[str, int], float] = {}
#: standby partition -> (tick time, its changelog's end as last fetched then), oldest first
_ends: dict[TP, deque[tuple[float, int]]] = {}
_ENDS_KEPT = 120  # a minute of ticks: a copy further behind is not noted until it catches up


def _note(topic: str, partition: int, at: float) -> None:
    key = (topic, partition)
    if at > _as_of.get(key, 0.0):
        _as_of[key] = at


def as_of(table: Any, partition: int) -> float | None:
    """Epoch seconds up to which this worker's copy of ``table``'s ``partition`` holds every
    change; None without a copy, or when how current it is is not known."""
    if partition not in table.data._dbs:  # not opened here: neither active nor standby now
        return None
    return _as_of.get((CHANGELOG_TOPIC[table], partition))


def read(table: Any, key: str) -> tuple[Any, float] | None:
    """``(stored value or None, as_of)`` of ``key`` in this worker's copy of its partition of
    ``table``; None when there is no copy known to be current up to some time."""
    partition = partition_of(key)
    at = as_of(table, partition)
    if at is None:
        return None
    raw = table.data._dbs[partition].get(key.encode())
    return (None if raw is None else orjson.loads(raw)), at


def keep_current(
    now: float, ready: bool, actives: Iterable[TP], recovery: Any, highwater: Callable[[TP], int]
) -> int:
    """One tick: note the active copies current (while ``ready``), apply what the standbys
    have buffered (``recovery``: faust's Recovery), and note current the standbys whose applied
    offset reached the end of their changelog (``highwater``, as of the last fetch). Returns
    how many standby partitions have never been known current (not yet *warm*)."""
    if ready:
        for tp in actives:
            if tp.topic in _TABLE_OF_TOPIC:
                _note(tp.topic, tp.partition, now)
    if recovery.in_recovery or not recovery.standby_tps:
        # faust applies what it reads itself at the end of a recovery
        return _cold(recovery.standby_tps)
    # faust applies a standby's records once a table's buffer holds standby_buffer_size of
    # them (1,000): at a few records a second that is minutes behind.
    recovery.flush_buffers()
    for tp in list(recovery.standby_tps):
        if tp.topic not in _TABLE_OF_TOPIC:
            continue
        applied = recovery.standby_offsets.get(tp)
        try:
            end = highwater(tp)  # as of the last fetch, no request
        except Exception:  # noqa: BLE001 - not fetched yet, or reassigned under us
            continue
        if applied is None or end is None:
            continue
        # Under steady traffic the copy never quite reaches the newest end fetched (more is
        # always on its way), but it passes the ends seen at earlier ticks: it holds every
        # change made up to the tick that saw the highest end it has now passed.
        seen = _ends.setdefault(tp, deque(maxlen=_ENDS_KEPT))
        seen.append((now, end))
        passed = [at for at, offset in seen if applied + 1 >= offset]
        if passed:
            _note(tp.topic, tp.partition, max(passed))
            while seen and seen[0][0] <= max(passed):
                seen.popleft()
    return _cold(recovery.standby_tps)


def _cold(standbys: Iterable[TP]) -> int:
    """How many of ``standbys`` (of keel's tables) have never been known current."""
    return sum(1 for tp in standbys if tp.topic in _TABLE_OF_TOPIC and tp not in _as_of)


#: standby partitions never known current, after the last tick (-1: no tick yet)
_cold_standbys = -1
#: since when the worker has been ready (None: it is not)
_ready_since: float | None = None


def warm(now: float | None = None) -> bool:
    """Ready, and every standby copy known current once (or ``tuning.WARMUP_MAX_S`` passed
    since it got ready): what ``/readyz`` waits for. A rolling restart that stops the next
    worker as soon as this one is ready would otherwise leave that worker's customers with no
    copy to be answered from (``bench/failover.py`` found it: 10 failed queries)."""
    if _ready_since is None:
        return False
    now = time.monotonic() if now is None else now
    return _cold_standbys == 0 or now - _ready_since >= tuning.WARMUP_MAX_S


@app.timer(interval=tuning.COPY_TICK_S)
async def copies_clock() -> None:
    """Every ``tuning.COPY_TICK_S``: :func:`keep_current`."""
    global _cold_standbys, _ready_since
    ready = views_ready()
    if not ready:
        _ready_since = None
    elif _ready_since is None:
        _ready_since = time.monotonic()
    try:
        _cold_standbys = keep_current(
            time.time(),
            ready,
            app.assignor.assigned_actives(),
            app.tables.recovery,  # type: ignore[attr-defined]  # TableManager, not its ABC
            app.consumer.highwater,
        )
    except Exception:  # noqa: BLE001 - a rebalance under way; the next tick tries again
        log.debug("keeping the copies' times failed", exc_info=True)

