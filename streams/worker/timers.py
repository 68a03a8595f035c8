"""The join's two timers: signal rechecks when a customer's deadline passed, and the expiry
of events held too long.

Neither writes a table (only the join agent does): each reads an index of this worker's
partitions kept in memory (streams/worker/due_index.py, streams/worker/held_index.py), which
the agent updates after every stored batch, and sends messages through the internal topics
that the agent then handles in a batch like any other.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import orjson

from streams import tuning
from streams.app import app, settings
from streams.domain.join import NAMESPACES
from streams.worker import clock
from streams.worker import messages as msg
from streams.worker.checkpoint import Packer
from streams.worker.due_index import DueIndex
from streams.worker.emit import CUSTOMER_EVENTS, REF_TOPIC, emitter
from streams.worker.held_index import HeldIndex
from streams.worker.tables import due, held, partition_of, views_ready

log = logging.getLogger(__name__)


#: this worker's due table by due time (streams/worker/due_index.py): the signal clock's view of it
due_index = DueIndex()
#: this worker's held tables by hold time (streams/worker/held_index.py): the held clock's view
held_index = HeldIndex()


async def _due_items() -> AsyncIterator[tuple[str, int]]:
    """(customer, due time) of this worker's partitions of the due table, a slice at a time."""
    for n, (key, value) in enumerate(due.data._iteritems(), 1):
        yield key.decode(), orjson.loads(value)
        if n % tuning.DUE_SLICE == 0:
            await asyncio.sleep(0)


@app.timer(interval=settings.signal_check_interval_s)
async def signal_clock() -> None:
    """Ask the owner of every customer whose deadline passed to re-check its signals.

    Only the join agent writes tables, so the timer only reads: :data:`due_index`, which the
    agent keeps up to date after every stored batch and which is rebuilt from one scan of
    the due table (in slices, giving the loop a turn between them) after every assignment.
    A tick costs what is due, at most ``tuning.RECHECKS_PER_TICK``, never a scan. It sends a
    message through customer-events, keyed by customer, which the agent handles like an
    event; a customer's recheck is sent once per deadline, again only if it changed nothing
    for ``tuning.RECHECK_RESEND_S`` (lost with a crashed batch).
    """
    if not views_ready():
        return
    generation = app.consumer_generation_id
    if due_index.generation != generation:
        due_index.begin_rebuild()
        due_index.rebuild([item async for item in _due_items()], generation)
    customer_ids = due_index.take(
        clock.now_ms(), time.monotonic(), tuning.RECHECKS_PER_TICK, tuning.RECHECK_RESEND_S
    )
    if not customer_ids:
        return
    recheck = msg.recheck()
    out = emitter.outbox()
    internal = Packer(out.produce)
    for customer_id in customer_ids:
        internal.send(CUSTOMER_EVENTS, customer_id, recheck)
    internal.flush()
    try:
        await out.confirmed()
    except Exception as exc:  # noqa: BLE001 - the due index still says who; resent later
        due_index.unsent(customer_ids)
        log.warning("signal rechecks not sent (%s); sent again at the next tick", exc)


async def _held_rows() -> AsyncIterator[tuple[str, str, list[dict]]]:
    """(namespace, reference, held messages) of this worker's held partitions, in slices."""
    n = 0
    for ns in NAMESPACES:
        for key, value in held[ns].data._iteritems():
            yield ns, key.decode(), orjson.loads(value)
            n += 1
            if n % tuning.DUE_SLICE == 0:
                await asyncio.sleep(0)


@app.timer(interval=tuning.HELD_CHECK_INTERVAL_S)
async def held_clock() -> None:
    """Ask the join agent to expire held events older than KEEL_HOLD_MAX_S.

    Like :func:`signal_clock`, it only reads: :data:`held_index`, kept up to date by the
    agent after every stored batch and rebuilt from one scan of the held tables (a slice at a
    time) after every assignment; a tick costs the rows held long enough by the wall clock,
    never a scan. It sends an ``expire`` through the reference's own topic, with the cutoff by
    the event time of that reference's partition; the agent does the rest in a batch. An
    expire lost with a failed send is sent again at the next tick; one handled twice finds
    nothing the second time.
    """
    if not views_ready():
        return
    generation = app.consumer_generation_id
    if held_index.generation != generation:
        held_index.begin_rebuild()
        held_index.rebuild([row async for row in _held_rows()], generation)

    def seen(ns: str, ref: str) -> int | None:
        return clock.event_clock.get(partition_of(ref))

    hold_max_ms, wall = settings.hold_max_s * 1000, clock.now_ms()
    expiries = held_index.take(seen, hold_max_ms, wall, tuning.RECHECKS_PER_TICK)
    if not expiries:
        return
    out = emitter.outbox()
    internal = Packer(out.produce)
    for ns, ref, before in expiries:
        internal.send(REF_TOPIC[ns], ref, msg.expire(before, wall - hold_max_ms))
    internal.flush()
    try:
        await out.confirmed()
    except Exception as exc:  # noqa: BLE001 - the held index still says what; sent again
        log.warning("held-event expiries not sent (%s); sent again at the next tick", exc)

