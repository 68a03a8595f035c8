"""The join: one faust agent reads keel's internal topics and applies what they carry.

    departments' topics ──► intake (streams/worker/intake.py: decode, check, dead-letter, pack)
                              │
         ┌────────────────────┴─────────────┐
         ▼                                  ▼
    {ns}-refs (key: order/case/e-mail/phone) customer-events (key customer_id)
      lookup: owner known? forward : hold     an event of a known customer, or a
      bind:   set the owner, release held     recheck of its time-based signals
      unhold: drop a copy applied elsewhere     → customers table → customer-state.v1
         └──── forwards ──► customer-events ◄─┘     ↳ binds for newly known references

A reference namespace (order, contact, email, phone) has an *owners* table (reference →
customer) and a *held* table (reference → events waiting for it). The customer handler
sends a *bind* for every reference a state newly knows; the bind sets the owner and
releases what was held. Every table is co-partitioned with the internal topics, so a
record's partition is also the partition of every key its handler reads or writes.

One agent (``concurrency=1``, faust-streaming #606) reads all internal topics, so batches
never overlap: each is handled against a :class:`streams.worker.checkpoint.Transaction` and made
durable by :func:`streams.worker.checkpoint.commit` in the order written down there. No record
raises out of the agent: a message that cannot be handled is a dead letter with the reason.
If a batch cannot be made durable, the agent stops without acknowledging it and the worker
reports itself unhealthy (streams/ops/health.py).

This module is the loop and the dispatch (:data:`HANDLERS`, internal topic -> handler); the
handlers live by the topic they serve:

    streams/worker/customers.py    customer-events: merge, move, erase, recheck, identity
    streams/worker/references.py   {ns}-refs: lookup, bind, unhold, placed, rebind, expire…
    streams/worker/unmatched.py    unmatched contacts (the case's side and the list's)
    streams/worker/voice.py        voice facts, on the voice owner
    streams/worker/timers.py       the signal and held clocks, which only send messages
    streams/worker/emit.py         the one producer every record goes through
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from faust.types import EventT

from streams import tuning
from streams.app import app, settings
from streams.domain.join import NAMESPACES
from streams.domain.unmatched import UNMATCHED_KEY
from streams.kafka import topics as t
from streams.ops import health, metrics
from streams.worker import clock, customers, live, references, unmatched
from streams.worker import messages as msg
from streams.worker import voice as voice_worker
from streams.worker.checkpoint import Transaction, Turns, commit, read_cache
from streams.worker.emit import (
    CUSTOMER_EVENTS,
    DEADLETTER_TOPIC,
    REF_TOPIC,
    EmitError,
    Headers,
    emitter,
)
from streams.worker.intake import intake
from streams.worker.tables import due, held
from streams.worker.timers import due_index, held_index

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------- the dispatch


#: a handler of keel-customer-events: (batch, customer id, message)
CustomerHandler = Callable[[Transaction, str, Any], None]
#: a handler of keel-{ns}-refs: (batch, namespace, reference, message)
RefHandler = Callable[[Transaction, str, str, Any], None]

#: customer-events by ``kind`` (streams/worker/messages.py); a kind not listed is an input
#: event of the customer (order, shipment, contact, command, outcome)
ON_CUSTOMER: dict[str, CustomerHandler] = {
    "recheck": customers.recheck,
    "move": customers.move_contact,
    "erasure": customers.on_erasure,
    "identity": customers.update_identity,
    "voice": voice_worker.on_fact,  # a contact's fact, on the voice partition
    "voice_forget": voice_worker.forget,  # an erased customer's facts go too
}

#: the unmatched list's messages (key ``UNMATCHED_KEY``) by ``kind``; others are ignored
ON_UNMATCHED: dict[str, Callable[[Transaction, Any], None]] = {
    "unmatched_add": unmatched.on_add,
    "unmatched_placed": unmatched.on_placed,
    "assign": unmatched.on_assign,
    "unmatched_forget": unmatched.on_forget,
    "unmatched_identity": unmatched.on_identity,
}

#: {ns}-refs by ``op``; an op not listed is a lookup
ON_REF: dict[str, RefHandler] = {
    "bind": references.on_bind,
    "unhold": references.on_unhold,
    "expire": references.on_expire,
    "placed": references.placed,
    "rebind": references.rebind,
    "release": references.release,  # given up by its customer (placement.py give_up)
    "erase": references.erase_ref,
    "unmatched": unmatched.unmatched_at_case,  # contact-refs only
    "assign": unmatched.assign_case,  # contact-refs only
}


def handle_customer_message(tx: Transaction, customer_id: str, m: dict) -> None:
    """One message of keel-customer-events, to its handler by ``kind``."""
    if m.get("unmatched"):  # a contact that was unmatched is placed: it leaves the list
        left = msg.unmatched_placed(m["event"]["contact_id"])
        tx.internal.send(CUSTOMER_EVENTS, UNMATCHED_KEY, left)
    if customer_id == UNMATCHED_KEY:
        on_list = ON_UNMATCHED.get(m["kind"])
        if on_list is not None:
            on_list(tx, m)
        return
    ON_CUSTOMER.get(m["kind"], customers.on_event)(tx, customer_id, m)


def _ref_handler(ns: str) -> Callable[[Transaction, str, dict], None]:
    def handle(tx: Transaction, ref: str, m: dict) -> None:
        """One message of keel-{ns}-refs, to its handler by ``op``."""
        ON_REF.get(m["op"], references.lookup)(tx, ns, ref, m)

    return handle


HANDLERS: dict[str, Callable[[Transaction, str, dict], None]] = {
    CUSTOMER_EVENTS: handle_customer_message,
    **{REF_TOPIC[ns]: _ref_handler(ns) for ns in NAMESPACES},
}


# ------------------------------------------------------------------------------- the agent


def dead_letter(tx: Transaction, record: EventT, value: bytes | None, reason: str) -> None:
    """A message of an internal record that cannot be handled, with where it came from."""
    msg = record.message
    headers: Headers = [
        ("x-error", reason.encode()),
        ("x-source-topic", msg.topic.encode()),
        ("x-source-partition", str(msg.partition).encode()),
        ("x-source-offset", str(msg.offset).encode()),
        ("x-failed-at", clock.failed_at()),
    ]
    tx.out.produce(DEADLETTER_TOPIC, msg.key, value, headers)
    metrics.count_event(msg.topic, "dead_letter")
    log.warning("dead letter from %s[%s]@%s: %s", msg.topic, msg.partition, msg.offset, reason)


def unpack(value: bytes | None) -> list:
    """The ``[key, message]`` pairs of an internal record; ValueError if it is not one."""
    pairs = orjson.loads(value) if value is not None else None
    if not isinstance(pairs, list):
        raise ValueError("an internal record must be a JSON array of [key, message] pairs")
    return pairs


async def handle_batch(tx: Transaction, records: list[EventT]) -> None:
    """Apply every message of ``records``; give the loop a turn every ``tuning.SLICE_S``.

    Queries read only what is stored, and this is the only writer, so a turn in the middle
    of a batch shows nobody a half-applied batch.
    """
    turn = Turns()
    for record in records:
        msg = record.message
        tx.at(msg.partition)
        handle = HANDLERS[msg.topic]
        try:
            pairs = unpack(record.value)
        except ValueError as exc:
            dead_letter(tx, record, record.value, f"internal record is not readable: {exc}")
            continue
        for pair in pairs:
            try:
                key, message = pair
                handle(tx, key, message)
            except Exception as exc:  # noqa: BLE001 - one bad message must not stop the join
                log.exception("cannot handle a message of %s[%s]", msg.topic, msg.partition)
                dead_letter(
                    tx, record, orjson.dumps(pair), f"keel could not handle this message: {exc!r}"
                )
            if turn.due():
                await turn.take()


@app.agent(t.internal, name="keel.join", concurrency=1)
async def on_internal(stream: Any) -> None:
    """Handle the internal topics batch by batch; acknowledge a batch once it is stored.

    ``noack_take`` leaves acknowledging to us: faust's ``take_events`` acknowledges a batch in
    a ``finally``, so an agent that raised, or was cancelled while it waited for Kafka, had
    its unfinished batch committed.
    """
    async for taken in stream.noack_take(tuning.JOIN_TAKE_RECORDS, settings.batch_wait_s):
        for records in by_bytes(taken, tuning.JOIN_BATCH_BYTES):
            if not await _one_batch(stream, records):
                break  # reassigned: faust delivers the rest again from the committed offsets


def by_bytes(records: list[EventT], budget: int) -> Iterator[list[EventT]]:
    """``records`` in order, in batches of at most ``budget`` bytes of values (a record
    bigger than that is a batch of its own): what arrived live is one batch, a backlog's
    full packs several of the usual size.

    >>> from types import SimpleNamespace as R
    >>> taken = [R(message=R(value=b"x" * n)) for n in (4, 4, 4, 9, 1)]
    >>> [len(b) for b in by_bytes(taken, 8)]
    [2, 1, 1, 1]
    """
    batch: list[EventT] = []
    size = 0
    for record in records:
        n = len(record.message.value or b"")
        if batch and size + n > budget:
            yield batch
            batch, size = [], 0
        batch.append(record)
        size += n
    if batch:
        yield batch


async def _one_batch(stream: Any, records: list[EventT]) -> bool:
    """Store one batch, then acknowledge it; False if it was not stored (reassigned)."""
    try:
        tx = await store_batch(records)
    except Exception as exc:  # noqa: BLE001 - reported and halted on, never acknowledged
        log.exception("the join agent cannot go on")
        health.fail("join", f"a batch could not be made durable: {exc!r}")
        await health.halt()
        return False
    if tx is None:
        log.warning("batch of %d records not stored: the partitions were reassigned while "
                    "it ran; faust delivers them again", len(records))
        return False
    for customer_id, when in tx.written(due):
        due_index.note(customer_id, when)
    for ns in NAMESPACES:
        for ref, waiting in tx.written(held[ns]):
            held_index.note(ns, ref, waiting)
    metrics.observe_applied(tx.applied, time.time())
    for record in records:  # 5. (streams/worker/checkpoint.py)
        await stream.ack(record)
    live.changed(tx.published)
    voice_worker.after_commit(tx, emitter)
    return True


async def store_batch(records: list[EventT]) -> Transaction | None:
    """Handle one batch and make it durable (streams/worker/checkpoint.py); None if it is not stored
    because the partitions were reassigned meanwhile.

    While Kafka cannot take the batch's records for a reason that passes (brokers down, a
    leader election, too few in-sync replicas: a retriable :class:`EmitError`) the batch is
    handled and produced again from the start, for up to ``tuning.KAFKA_OUTAGE_RETRY_S``:
    nothing of it is in any table yet, so the second attempt computes the same outputs, and
    what the first one delivered is absorbed as duplicates downstream. Anything else raises.
    """
    generation = app.consumer_generation_id

    def current() -> bool:
        # faust's revoke waits until every record it handed out is acknowledged
        # (stream_wait_empty), so a batch normally finishes inside a rebalance, before the
        # tables are reassigned and restored; a batch that outlived it is not stored.
        return app.consumer_generation_id == generation

    started, delay = time.monotonic(), 0.5
    read_cache.follow(generation)
    while True:
        tx = Transaction(emitter.outbox())
        try:
            await handle_batch(tx, records)
            if await commit(tx, emitter, current):
                return tx
            read_cache.clear()  # not stored: what its handlers read may have been changed
            return None
        except BaseException as exc:
            read_cache.clear()
            if not isinstance(exc, EmitError):
                raise
            if not current():
                return None
            waited = time.monotonic() - started
            if not exc.retriable or waited > tuning.KAFKA_OUTAGE_RETRY_S:
                raise
            log.warning("Kafka did not take a batch's records (%s); producing them again in "
                        "%.1f s (waiting %.0f s so far)", exc, delay, waited)  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(2 * delay, 10.0)


@app.task
async def _start_intake() -> None:
    intake.start()


@app.on_before_shutdown.connect
def _stop_outputs(_app: Any, /, *_args: Any, signal: Any, **_kwargs: Any) -> None:
    """Stop reading the departments' topics and deliver what was produced (unconfirmed
    batches are not acknowledged either way, so this only saves a replay)."""
    intake.stop()
    emitter.stop()
