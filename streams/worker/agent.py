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
never overlap: each is handled against a :class:`streams.worker.checkpoint.Batch` and made
durable by :func:`streams.worker.checkpoint.commit` in the order written down there. No record
raises out of the agent: a message that cannot be handled is a dead letter with the reason.
If a batch cannot be made durable, the agent stops without acknowledging it and the worker
reports itself unhealthy (streams/ops/health.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from faust.types import EventT

from streams import tuning
from streams.app import app, settings
from streams.domain import unmatched, voice
from streams.domain.commands import apply_command, apply_outcome
from streams.domain.erasure import CUSTOMER, erased_refs, event_refs, suppressed, suppression_key
from streams.domain.identity import normalize_email, normalize_phone
from streams.domain.join import (
    CONTACT,
    EMAIL,
    NAMESPACES,
    PHONE,
    RANK,
    add_held,
    expired_held,
    mark_held,
    never_known_reason,
    new_state_refs,
    placement_refs,
    remove_held,
    route,
)
from streams.domain.links import (
    IDENTIFIERS,
    Guards,
    apply_identity,
    bind_record,
    event_identifiers,
    forget_member,
    identity_message,
    note_identifiers,
    recipients,
)
from streams.domain.placement import (
    BY_EMAIL,
    BY_PHONE,
    NAMED,
    apply_placed,
    give_up,
    move_out,
    moved_to,
    placed_through,
)
from streams.domain.signals import Windows, apply_signals, next_check_ms
from streams.domain.state import Limits, bound, empty_state
from streams.domain.unmatched import UNMATCHED_KEY, ambiguity
from streams.encoding.codec import get_codec
from streams.kafka import topics as t
from streams.ops import health, metrics
from streams.worker import live
from streams.worker import voice as voice_worker
from streams.worker.checkpoint import Batch, Packer, commit
from streams.worker.due_index import DueIndex
from streams.worker.emit import EmitError, Emitter, Headers
from streams.worker.held_index import HeldIndex
from streams.worker.intake import KEY_FIELD_OF_KIND, SCHEMA_OF_KIND, intake
from streams.worker.tables import (
    assigned,
    customers,
    due,
    erased,
    held,
    identities,
    owners,
    partition_of,
    views_ready,
)
from streams.worker.tables import unmatched as unmatched_table

log = logging.getLogger(__name__)

limits = Limits(
    keep_closed=settings.keep_closed,
    max_notes=settings.max_notes,
    keep_retired=settings.keep_retired,
)
windows = Windows(
    duplicate_order_ms=settings.duplicate_order_window_s * 1000,
    repeat_contact_ms=settings.repeat_contact_window_s * 1000,
    complaint_unresolved_ms=settings.complaint_unresolved_s * 1000,
    command_timeout_ms=settings.command_timeout_s * 1000,
)
guards = Guards(
    shared_after=settings.identity_shared_after, blocklist=settings.identity_blocklist
)
codec = get_codec()
emitter = Emitter(settings.kafka_bootstrap)

SIGNAL_TOPIC = settings.topics.signals
DEADLETTER_TOPIC = settings.topics.deadletter
CUSTOMER_EVENTS = t.customer_events.get_topic_name()
REF_TOPIC = {ns: topic.get_topic_name() for ns, topic in t.ref_topics.items()}


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
    if occurred_at > event_clock.get(partition, 0):
        event_clock[partition] = min(occurred_at, now_ms())


# ------------------------------------------------------------------------ customer handlers


def apply_to_customer(
    tx: Batch,
    customer_id: str,
    kind: str,
    event: dict,
    topic: str,
    rank: int = NAMED,
    fresh: bool = False,
) -> None:
    """Merge one event into its customer's state; publish the state and new binds if it changed.

    ``rank``: how a contact was joined to this customer (streams/domain/placement.py). One that
    moved away from here goes on to where it moved; one given up here (an identifier of it
    became ambiguous), or joined through an identifier this state knows to be ambiguous, is
    resolved again (``fresh``: this is such a resolution, where it moved before counts no
    more).
    """
    saw(tx.partition, _event_time(kind, event))
    before = tx.get(customers, customer_id)
    erased_at = _erased_before(tx, customer_id, before)
    if erased_at is not None and suppressed(erased_at, _event_time(kind, event)):
        drop_erased(tx, customer_id, kind, event, topic, erased_at)
        return
    now = now_ms()
    if kind == "contact" and rank != NAMED and before is not None:
        moved = moved_to(before, event["contact_id"])
        if moved is not None and not fresh:
            if moved[0] is None:
                resolve_again(tx, event, topic)
            else:
                body = {"kind": kind, "event": event, "topic": topic, "rank": rank}
                tx.internal.send(CUSTOMER_EVENTS, moved[0], body)
            return
        if joined_ambiguously(before, event, rank):
            resolve_again(tx, event, topic)
            return
    if kind == "command":  # a desk command: its lifecycle shows as signals
        state, changed = apply_command(before or _new_state(customer_id, erased_at), event, now)
    elif kind == "outcome":  # a department's answer to one, for a customer keel knows
        if before is None:  # no command of it can be here (keel checks them against a state)
            metrics.count_event(topic, "duplicate")
            return
        state, changed = apply_outcome(before, event, now)
    else:
        state, changed = apply_placed(
            before or _new_state(customer_id, erased_at), kind, event, rank, now, limits
        )
    id_binds: list[tuple[str, str, int]] = []
    found = event_identifiers(customer_id, kind, event)
    if found:  # its e-mail and phone, with the earliest time this state knows each from
        noted, id_binds = note_identifiers(state, found, guards.blocklist)
        if noted is not state and not changed:
            noted = {**noted, "version": state["version"] + 1, "updated_at": now}
        changed = changed or noted is not state
        state = noted
    if not changed:
        metrics.count_event(topic, "duplicate")
        return
    bounded = bound(state, settings.max_state_bytes, limits.keep_retired)
    if bounded is not state:  # never a record Kafka refuses, which would stop the partition
        metrics.STATES_BOUNDED.inc()
        log.warning("customer state over KEEL_MAX_STATE_BYTES=%d: its oldest parts were "
                    "dropped", settings.max_state_bytes)
        state = bounded
    version = state["version"]
    state, signal_changes = apply_signals(state, now, windows)
    state["version"] = version  # one change, one version, even when it also moved a signal
    metrics.count_event(topic, "applied")
    if kind in ("command", "outcome"):  # measured once it is stored
        tx.applied.append(("desk", _event_time(kind, event)))
    else:
        tx.applied.append((event["source"], event["occurred_at"]))
    save_and_publish(tx, customer_id, state, signal_changes, now)
    for fact in voice.facts_to_send(before, state, kind, event, voice_worker.tagger):
        tx.internal.send(CUSTOMER_EVENTS, voice.VOICE_KEY, {"kind": "voice", "fact": fact})
    for ns, ref in new_state_refs(before, state):
        if ns not in IDENTIFIERS:  # those bind with their time, below
            tx.internal.send(REF_TOPIC[ns], ref, {"op": "bind", "customer_id": customer_id})
    for ns, ref, at in id_binds:
        bind_id = {"op": "bind", "customer_id": customer_id, "at": at}
        tx.internal.send(REF_TOPIC[ns], ref, bind_id)
    watch, unhold_at = placement_refs(kind, event, rank)
    if unhold_at:
        unhold = {"op": "unhold", "event_id": event["event_id"], "at": event["occurred_at"]}
        for ns, ref in unhold_at:
            tx.internal.send(REF_TOPIC[ns], ref, unhold)
    for ns, ref in watch:  # a stronger reference of its own may name another customer
        placed = {"op": "placed", "kind": kind, "event": event, "topic": topic,
                  "customer_id": customer_id}  # fmt: skip
        tx.internal.send(REF_TOPIC[ns], ref, placed)


def joined_ambiguously(state: dict, event: dict, rank: int) -> bool:
    """Whether a contact came through an e-mail or phone ``state`` knows to be ambiguous."""
    if rank == BY_EMAIL:
        ns, value = EMAIL, normalize_email(event.get("email"))
    elif rank == BY_PHONE:
        ns, value = PHONE, normalize_phone(event.get("phone"))
    else:
        return False
    record = (state.get("_ids") or {}).get(f"{ns}:{value}")
    return value is not None and ambiguity(ns, value, record) is not None


def resolve_again(tx: Batch, event: dict, topic: str) -> None:
    """Send a contact event down its chain of references again, from its case on."""
    (ns, ref), *rest = route("contact", event).refs
    lookup_again = {"kind": "contact", "event": event, "topic": topic, "op": "lookup",
                    "refs": rest, "fresh": True}  # fmt: skip
    tx.internal.send(REF_TOPIC[ns], ref, lookup_again)


def _erased_before(tx: Batch, customer_id: str, before: dict | None) -> int | None:
    """When the customer was last erased (None: never): from its state, else the table.

    Only a customer without a state needs the extra read: a state made after an erasure
    carries the time itself (:func:`_new_state`).
    """
    if before is not None:
        return before.get("_erased_before")
    return tx.get(erased, suppression_key(CUSTOMER, customer_id))


def _new_state(customer_id: str, erased_at: int | None) -> dict:
    state = empty_state(customer_id)
    if erased_at is not None:  # the person came back: events from before stay out
        state["_erased_before"] = erased_at
    return state


def drop_erased(
    tx: Batch, customer_id: str, kind: str, event: dict, topic: str, erased_at: int
) -> None:
    """Drop an event of an erased customer that occurred before the erasure.

    What it would have made known (its order, e-mail, phone) is suppressed in its stead, so
    whatever resolves through those is dropped too instead of waiting to expire.
    """
    metrics.count_event(topic, "erased")
    erase = {"op": "erase", "customer_id": customer_id, "at": erased_at}
    for ns, ref in event_refs(customer_id, kind, event):
        tx.internal.send(REF_TOPIC[ns], ref, erase)


def erase_customer(tx: Batch, customer_id: str, request: dict, topic: str) -> None:
    """Forget a customer everywhere keel holds it (streams/domain/erasure.py).

    Idempotent: a request handled again finds no state (or a state made after it, which
    it leaves alone) and only refreshes the suppression record.
    """
    at = int(request["requested_at"])
    key = suppression_key(CUSTOMER, customer_id)
    if (tx.get(erased, key) or 0) < at:
        tx.set(erased, key, at)
    stored = tx.get(customers, customer_id)
    if stored is not None and (stored.get("_erased_before") or 0) >= at:
        return  # made after this request (the person came back): not part of it
    metrics.count_event(topic, "applied")
    if stored is None:
        return
    erase = {"op": "erase", "customer_id": customer_id, "at": at, "unbind": True}
    for ns, ref in erased_refs(stored):
        tx.internal.send(REF_TOPIC[ns], ref, erase)
    tx.delete(customers, customer_id)
    if tx.contains(due, customer_id):
        tx.delete(due, customer_id)
    tx.publish_state(customer_id, None)
    tx.internal.send(CUSTOMER_EVENTS, voice.VOICE_KEY, voice.forget_message(customer_id, stored))
    tx.internal.send(CUSTOMER_EVENTS, UNMATCHED_KEY,
                     {"kind": "unmatched_forget", "customer_id": customer_id})  # fmt: skip
    metrics.ERASURES.inc()
    log.info("customer erased (request %s)", request["request_id"])


def move_contact(tx: Batch, customer_id: str, m: dict) -> None:
    """Give up a contact a stronger reference names another customer for
    (streams/domain/placement.py).

    The state loses it, as if it had never been here; its events go to the new customer and
    the case follows (a *rebind*). All of it is output of this batch, so it is confirmed
    before the state without the contact is stored. A contact that already moved on passes
    a stronger move on to where it went.
    """
    stored = tx.get(customers, customer_id)
    if stored is None:
        return
    contact_id, to, rank = m["contact_id"], m["to"], m["rank"]
    now = now_ms()
    out = move_out(stored, contact_id, to, rank, now, limits.keep_retired)
    if out is None:
        moved = moved_to(stored, contact_id)
        if moved is not None and moved[0] is not None and rank < moved[1] and moved[0] != to:
            tx.internal.send(CUSTOMER_EVENTS, moved[0], m)
        return
    state, events = out
    metrics.CONTACTS_MOVED.inc()
    version = state["version"]
    state, signal_changes = apply_signals(state, now, windows)
    state["version"] = version
    save_and_publish(tx, customer_id, state, signal_changes, now)
    for event in events:
        body = {"kind": "contact", "event": event, "topic": m.get("topic", "contacts"),
                "rank": rank}  # fmt: skip
        tx.internal.send(CUSTOMER_EVENTS, to, body)
    rebind = {"op": "rebind", "from": customer_id, "customer_id": to}
    tx.internal.send(REF_TOPIC[CONTACT], contact_id, rebind)


def _event_time(kind: str, event: dict) -> int:
    """When a record happened: a command when it was asked, an answer when it was given."""
    if kind == "command":
        return int(event["requested_at"])
    if kind == "outcome":
        return int(event["at"])
    return int(event["occurred_at"])


def recheck_signals(tx: Batch, customer_id: str) -> None:
    """Re-evaluate time-based signals (a deadline passed) for one customer; sent by the timer."""
    stored = tx.get(customers, customer_id)
    if stored is None:
        tx.delete(due, customer_id)
        return
    now = now_ms()
    state, signal_changes = apply_signals(stored, now, windows)
    if state is not stored:
        save_and_publish(tx, customer_id, state, signal_changes, now)
    else:
        schedule(tx, customer_id, state, now)


def save_and_publish(
    tx: Batch, customer_id: str, state: dict, signal_changes: list[dict], now: int
) -> None:
    """Store a changed state; publish it (once per batch) and its signal changes."""
    tx.set(customers, customer_id, state)
    schedule(tx, customer_id, state, now)
    tx.publish_state(customer_id, state)
    for change in signal_changes:
        tx.out.produce(
            SIGNAL_TOPIC, customer_id.encode(), codec.encode("CustomerSignal", change, check=False)
        )


def schedule(tx: Batch, customer_id: str, state: dict, now: int) -> None:
    """Remember when this customer's signals next change on their own (or forget it)."""
    when = next_check_ms(state, now, windows)
    if when is None:
        if tx.contains(due, customer_id):
            tx.delete(due, customer_id)
    elif tx.get(due, customer_id) != when:
        tx.set(due, customer_id, when)


def update_identity(tx: Batch, customer_id: str, m: dict) -> None:
    """Keep the newest picture of one of the customer's identifiers (streams/domain/links.py).

    A customer without a state (erased since) has nothing to link; an older or repeated
    picture changes nothing.
    """
    stored = tx.get(customers, customer_id)
    if stored is None:
        return
    now = now_ms()
    state, changed = apply_identity(stored, m, now)
    if not changed:
        return
    ns, value = m["ns"], m["value"]
    if ambiguity(ns, value, m["record"]) is not None:  # it resolves no one from now on
        field, norm = ("email", normalize_email) if ns == EMAIL else ("phone", normalize_phone)
        for contact_id in placed_through(state, RANK[ns], field, value, norm):
            out = give_up(state, contact_id, now, limits.keep_retired)
            if out is None:
                continue
            state, events = out
            release = {"op": "release", "from": customer_id}
            tx.internal.send(REF_TOPIC[CONTACT], contact_id, release)
            forget = {"kind": "voice_forget", "customer_id": customer_id,
                      "contact_ids": [contact_id]}  # fmt: skip
            tx.internal.send(CUSTOMER_EVENTS, voice.VOICE_KEY, forget)
            for event in events:  # after the release: they find the case unknown
                resolve_again(tx, event, "contacts.v1")
        version = state["version"]
        state, signal_changes = apply_signals(state, now, windows)
        state["version"] = version
        save_and_publish(tx, customer_id, state, signal_changes, now)
        return
    save_and_publish(tx, customer_id, state, [], now)


def handle_customer_message(tx: Batch, customer_id: str, m: dict) -> None:
    if m.get("unmatched"):  # a contact that was unmatched is placed: it leaves the list
        left = {"kind": "unmatched_placed", "contact_id": m["event"]["contact_id"]}
        tx.internal.send(CUSTOMER_EVENTS, UNMATCHED_KEY, left)
    if customer_id == UNMATCHED_KEY:
        handle_unmatched_message(tx, m)
    elif m["kind"] == "recheck":
        recheck_signals(tx, customer_id)
    elif m["kind"] == "move":
        move_contact(tx, customer_id, m)
    elif m["kind"] == "erasure":
        erase_customer(tx, customer_id, m["event"], m["topic"])
    elif m["kind"] == "voice":  # a contact's fact, on the voice partition (streams/domain/voice.py)
        voice_worker.handle_fact(tx, m["fact"])
    elif m["kind"] == "voice_forget":  # an erased customer's facts go too
        voice_worker.forget(tx, m)
    elif m["kind"] == "identity":
        update_identity(tx, customer_id, m)
    else:
        apply_to_customer(
            tx, customer_id, m["kind"], m["event"], m["topic"], m.get("rank", NAMED),
            bool(m.get("fresh")),
        )


# ----------------------------------------------------------------------- reference handlers


def forward(
    tx: Batch, customer_id: str, message: dict, ns: str, rank: int | None = None
) -> None:
    """Send an event resolved through namespace ``ns`` to its customer (a contact: with the
    rank of that reference, streams/domain/placement.py, or ``rank``). One that waited as unmatched
    says so: the customer takes it off the list (streams/domain/unmatched.py)."""
    body = {"kind": message["kind"], "event": message["event"], "topic": message["topic"]}
    if message["kind"] == "contact":
        body["rank"] = RANK[ns] if rank is None else rank
    if message.get("unmatched"):
        body["unmatched"] = True
    if message.get("fresh") and ns != CONTACT:
        # resolved again, through a reference that names ``customer_id`` now; never through
        # the case: its owner may be the customer that just gave the contact up (its
        # release on the way), which then resolves it again in turn
        body["fresh"] = True
    tx.internal.send(CUSTOMER_EVENTS, customer_id, body)


def case_rank(tx: Batch, ref: str, owner: str) -> int | None:
    """The rank a contact joins its case's owner at: the strongest if an agent assigned it
    there (assign_contact), else the case's own (None)."""
    return NAMED if tx.get(assigned, ref) == owner else None


def ambiguous_at(tx: Batch, ns: str, ref: str, message: dict) -> dict | None:
    """Why a contact cannot resolve through identifier ``ref`` (shared, or linking several
    customers: streams/domain/unmatched.py); None if it can, or ``ref`` is no identifier."""
    if ns not in IDENTIFIERS or message["kind"] != "contact":
        return None
    return ambiguity(ns, ref, tx.get(identities[ns], ref))


def pass_by(tx: Batch, message: dict, why: dict) -> None:
    """Go on down the chain past an ambiguous identifier, noting why; at the chain's end the
    contact is unmatched (its case reference marks it)."""
    whys = [*(message.get("ambiguous") or ()), why]
    rest = message["refs"]
    if rest:
        (next_ns, next_ref), *after = rest
        onward = {**message, "op": "lookup", "refs": after, "ambiguous": whys}
        tx.internal.send(REF_TOPIC[next_ns], next_ref, onward)
    else:
        send_unmatched(tx, message, whys)


def send_unmatched(tx: Batch, message: dict, whys: list[dict]) -> None:
    event = message["event"]
    body = {"op": "unmatched", "kind": message["kind"], "event": event,
            "topic": message["topic"], "why": whys}  # fmt: skip
    tx.internal.send(REF_TOPIC[CONTACT], event["contact_id"], body)


def send_move(tx: Batch, placed_on: str, ns: str, message: dict, to: str) -> None:
    """Ask ``placed_on`` to give the message's contact up to ``to``, the owner of a stronger
    reference of it (``ns``)."""
    event = message["event"]
    move = {"kind": "move", "contact_id": event["contact_id"], "to": to, "rank": RANK[ns],
            "topic": message["topic"]}  # fmt: skip
    tx.internal.send(CUSTOMER_EVENTS, placed_on, move)


def lookup(tx: Batch, ns: str, ref: str, message: dict) -> None:
    """Resolve ``message`` through reference ``ref`` (this worker owns its partition)."""
    occurred_at = message["event"]["occurred_at"]
    saw(tx.partition, occurred_at)
    why = ambiguous_at(tx, ns, ref, message)
    if why is not None:
        pass_by(tx, message, why)
        return
    owner = tx.get(owners[ns], ref)
    if owner is not None:
        forward(tx, owner, message, ns, case_rank(tx, ref, owner) if ns == CONTACT else None)
        return
    if suppressed(tx.get(erased, suppression_key(ns, ref)), occurred_at):
        drop_erased_lookup(tx, ns, ref, message)
        return
    before = tx.get(held[ns], ref)
    clocks = {"held_at": event_clock.get(tx.partition, occurred_at), "held_wall": now_ms()}
    waiting = add_held(before, {**message, **clocks})
    if waiting is None:
        return  # already held here, and already passed down the chain
    if ns == CONTACT and any(x.get("unmatched") for x in before or ()):
        waiting = _marked(waiting)  # its contact is unmatched: so is this event
    tx.set(held[ns], ref, waiting)
    if len(waiting) > len(before or ()):  # else a later version of a held id replaced it
        metrics.HELD.inc()
        metrics.count_event(message["topic"], "held")
    rest = message["refs"]
    if rest:
        (next_ns, next_ref), *after = rest
        onward = {**message, "op": "lookup", "refs": after}
        tx.internal.send(REF_TOPIC[next_ns], next_ref, onward)
    elif message.get("ambiguous"):  # it passed an ambiguous identifier and nothing resolved
        send_unmatched(tx, message, message["ambiguous"])


def drop_erased_lookup(tx: Batch, ns: str, ref: str, message: dict) -> None:
    """An event naming an erased customer's reference, from before the erasure: dropped."""
    metrics.count_event(message["topic"], "erased")
    _unhold_chain(tx, ns, ref, message)


def _unhold_chain(tx: Batch, ns: str, ref: str, message: dict) -> None:
    """Drop the copies of a held event its chain left at references other than ``ref``."""
    event = message["event"]
    unhold = {"op": "unhold", "event_id": event["event_id"], "at": event["occurred_at"]}
    for other in route(message["kind"], event).refs:
        if other != (ns, ref):
            tx.internal.send(REF_TOPIC[other[0]], other[1], unhold)


def erase_ref(tx: Batch, ns: str, ref: str, m: dict) -> None:
    """Suppress ``ref`` of the erased ``m["customer_id"]``: drop what waits there from before
    the erasure and, sent by the erasure itself (``unbind``), forget that it was theirs.

    An ``erase`` sent for a replayed event (:func:`drop_erased`) never unbinds: the
    reference may be the person's again, made known by a new state after the erasure.
    """
    customer_id, at = m["customer_id"], m["at"]
    if m.get("unbind") and ns in IDENTIFIERS:
        forget_identity(tx, ns, ref, customer_id)
    if m.get("unbind") and ns == CONTACT and tx.get(assigned, ref) == customer_id:
        tx.delete(assigned, ref)
    owner = tx.get(owners[ns], ref)
    if owner is not None:
        if not m.get("unbind") or owner != customer_id:
            return  # another customer's, or the person's again since (a new state's)
        tx.delete(owners[ns], ref)
    key = suppression_key(ns, ref)
    if (tx.get(erased, key) or 0) < at:
        tx.set(erased, key, at)
    waiting = tx.get(held[ns], ref)
    if not waiting:
        return
    rest = [x for x in waiting if x["event"]["occurred_at"] >= at]
    if len(rest) == len(waiting):
        return
    keep_held(tx, ns, ref, rest, len(waiting) - len(rest))
    for x in waiting:
        if x["event"]["occurred_at"] < at and not x.get("placed_on"):
            metrics.count_event(x["topic"], "erased")
            _unhold_chain(tx, ns, ref, x)


def forget_identity(tx: Batch, ns: str, ref: str, customer_id: str) -> None:
    """An erased customer leaves the identifier's record; the others hear it (their links
    to the erased customer go)."""
    before = tx.get(identities[ns], ref)
    record, changed = forget_member(before, customer_id)
    if not changed:
        return
    if record is None:
        tx.delete(identities[ns], ref)
        tell_unmatched(tx, ns, ref, {"v": before["v"] + 1, "m": {}})
        return
    tx.set(identities[ns], ref, record)
    for member in record["m"]:
        tx.internal.send(CUSTOMER_EVENTS, member, identity_message(ns, ref, record))
    tell_unmatched(tx, ns, ref, record)


def bind_identity(tx: Batch, ns: str, ref: str, customer_id: str, at: int) -> None:
    """Note that ``customer_id`` has identifier ``ref`` since ``at``; tell whom it concerns.

    Every member hears the record's new picture when it changed; a customer binding a shared
    identifier hears that it is shared (the record no longer changes).
    """
    before = tx.get(identities[ns], ref)
    record, changed = bind_record(before, customer_id, at, guards.shared_after)
    if changed:
        tx.set(identities[ns], ref, record)
        if "shared" in record and before is not None and "shared" not in before:
            metrics.IDENTIFIERS_SHARED.inc()
        if ambiguity(ns, ref, record) is not None:
            tell_unmatched(tx, ns, ref, record)
    elif "shared" not in record:
        return  # nothing new: every member was told already
    for member in recipients(before, record, customer_id):
        tx.internal.send(CUSTOMER_EVENTS, member, identity_message(ns, ref, record))


def tell_unmatched(tx: Batch, ns: str, ref: str, record: dict) -> None:
    """The unmatched list keeps the newest picture of every ambiguous identifier (an
    erasure's change of any record is sent too: the list keeps it only if it was)."""
    picture = {"kind": "unmatched_identity", "ns": ns, "value": ref, "record": record}
    tx.internal.send(CUSTOMER_EVENTS, UNMATCHED_KEY, picture)


def bind(tx: Batch, ns: str, ref: str, customer_id: str, at: int | None = None) -> None:
    """Make ``ref`` known as ``customer_id``'s and release what waited for it.

    An e-mail or phone (``at``: the customer's earliest event with it) also goes into its
    identity record (streams/domain/links.py).
    """
    if at is not None and ns in IDENTIFIERS:
        bind_identity(tx, ns, ref, customer_id, at)
    owner = tx.get(owners[ns], ref)
    if owner is None:
        owner = customer_id  # first bind wins: ids are not re-assigned
        tx.set(owners[ns], ref, owner)
    waiting = tx.get(held[ns], ref)
    if waiting:
        keep_held(tx, ns, ref, [], len(waiting))
        rank = case_rank(tx, ref, owner) if ns == CONTACT else None
        for message in waiting:
            placed_on = message.get("placed_on")
            if placed_on is None:
                forward(tx, owner, message, ns, rank)
            elif placed_on != owner:  # applied through a weaker reference: it moves here
                send_move(tx, placed_on, ns, message, owner)


def placed(tx: Batch, ns: str, ref: str, m: dict) -> None:
    """A contact was applied to ``m["customer_id"]`` through a weaker reference than ``ref``.

    If ``ref`` names another customer, the contact moves there; while ``ref`` is unknown a
    marked copy waits for it (:func:`streams.domain.join.mark_held`), which its bind turns into a
    move, or which expires silently after KEEL_HOLD_MAX_S.
    """
    placed_on = m["customer_id"]
    event = m["event"]
    if ambiguous_at(tx, ns, ref, m) is not None:  # it names no one: the contact stays
        drop_held(tx, ns, ref, event["event_id"], None)
        return
    owner = tx.get(owners[ns], ref)
    before = tx.get(held[ns], ref)
    if owner is not None:
        if owner != placed_on:
            send_move(tx, placed_on, ns, m, owner)
        drop_held(tx, ns, ref, event["event_id"], None)
        return
    saw(tx.partition, event["occurred_at"])
    message = {**m, "held_at": event_clock.get(tx.partition, event["occurred_at"])}
    waiting = mark_held(before, message, placed_on)
    tx.set(held[ns], ref, waiting)
    metrics.HELD.inc(len(waiting) - len(before or ()))


def rebind(tx: Batch, ns: str, ref: str, old: str, new: str) -> None:
    """A case moved from ``old`` to ``new``: its later events go straight there."""
    if tx.get(owners[ns], ref) == old:
        tx.set(owners[ns], ref, new)


def drop_held(tx: Batch, ns: str, ref: str, event_id: str, at: int | None) -> None:
    """Forget a held copy of an event that was applied through another reference."""
    before = tx.get(held[ns], ref)
    rest = remove_held(before, event_id, at)
    if rest is None:
        return
    keep_held(tx, ns, ref, rest, len(before) - len(rest))


def keep_held(tx: Batch, ns: str, ref: str, rest: list[dict], gone: int) -> None:
    """Store what is still held at ``ref`` (none: the row goes); ``gone`` messages left it."""
    if rest:
        tx.set(held[ns], ref, rest)
    else:
        tx.delete(held[ns], ref)
    metrics.HELD.dec(gone)


def expire_held(
    tx: Batch, ns: str, ref: str, before: int, wall_before: int | None = None
) -> None:
    """Dead-letter what was held at ``ref`` before ``before`` (event time) for a customer,
    and before ``wall_before`` by the wall clock (streams/domain/join.py ``expired_held``).

    Sent by :func:`held_clock`. Only the copy where an event's chain starts expires; an
    unhold takes its copies further down the chain. The dead letter is an output of this
    batch, so it is confirmed before the held row is deleted (streams/worker/checkpoint.py): a
    crash in between expires it again, never loses it.
    """
    waiting = tx.get(held[ns], ref)
    expired = expired_held(waiting, ns, ref, before, wall_before)
    if not expired:
        return
    rest = [m for m in waiting if all(m is not x for x in expired)]
    keep_held(tx, ns, ref, rest, len(expired))
    for message in expired:
        if message.get("placed_on"):
            continue  # it was applied; it only watched for a stronger reference
        dead_letter_held(tx, message, never_known_reason(message, settings.hold_max_s))
        event = message["event"]
        unhold = {"op": "unhold", "event_id": event["event_id"], "at": event["occurred_at"]}
        for next_ns, next_ref in message.get("refs") or ():
            tx.internal.send(REF_TOPIC[next_ns], next_ref, unhold)


def dead_letter_held(tx: Batch, message: dict, reason: str) -> None:
    """An input event that waited too long: its key and value as the department sent them
    (the value re-encoded from the event), headers as in docs/contract.md §1. Its offset is not
    known after the join passed it on: ``x-source-offset`` is -1."""
    kind, event, topic = message["kind"], message["event"], message["topic"]
    key = event[KEY_FIELD_OF_KIND[kind]].encode()
    headers: Headers = [
        ("x-error", reason.encode()),
        ("x-source-topic", topic.encode()),
        ("x-source-partition", str(partition_of(key.decode())).encode()),
        ("x-source-offset", b"-1"),
        ("x-failed-at", _failed_at()),
    ]
    tx.out.produce(DEADLETTER_TOPIC, key, codec.encode(SCHEMA_OF_KIND[kind], event), headers)
    metrics.count_event(topic, "dead_letter")
    log.warning("held event %s expired: %s", event["event_id"], reason)


# ------------------------------------------------------------------- unmatched contacts


def unmatched_at_case(tx: Batch, ref: str, m: dict) -> None:
    """A contact event passed an ambiguous identifier and resolved through nothing else.

    Its case may have become known meanwhile: then it joins there. Else its copy held here
    (where its chain starts) is marked ``unmatched``, so it never expires, and the list
    hears of it (streams/domain/unmatched.py). No copy of that version here: it was applied through
    a stronger reference since (the copy was dropped), or a later version replaced it, which
    comes here on its own.
    """
    owner = tx.get(owners[CONTACT], ref)
    if owner is not None:
        forward(tx, owner, m, CONTACT, case_rank(tx, ref, owner))
        return
    event = m["event"]
    waiting = tx.get(held[CONTACT], ref) or []
    at = [i for i, x in enumerate(waiting) if not x.get("placed_on")
          and x["event"]["event_id"] == event["event_id"]
          and x["event"]["occurred_at"] == event["occurred_at"]]  # fmt: skip
    if not at:
        return
    if any(not x.get("placed_on") and not x.get("unmatched") for x in waiting):
        tx.set(held[CONTACT], ref, _marked(waiting))
    add = {"kind": "unmatched_add", "event": event, "why": m["why"]}
    tx.internal.send(CUSTOMER_EVENTS, UNMATCHED_KEY, add)


def _marked(waiting: list[dict]) -> list[dict]:
    """A case's held copies, every one marked unmatched (they are all of its contact)."""
    return [x if x.get("placed_on") else {**x, "unmatched": True} for x in waiting]


def assign_case(tx: Batch, ref: str, m: dict) -> None:
    """An agent assigned the contact (case ``ref``) to ``m["customer_id"]`` (assign_contact).

    Its case belongs to that customer from now on, at the strongest rank: what waited here
    joins there, later events too, and no identifier moves it away. A contact a customer had
    taken meanwhile (through its order, say) moves over like any contact does
    (streams/domain/placement.py). Idempotent: a second assign changes nothing.
    """
    to = m["customer_id"]
    if tx.get(assigned, ref) != to:
        tx.set(assigned, ref, to)
    owner = tx.get(owners[CONTACT], ref)
    if owner is None:
        tx.set(owners[CONTACT], ref, to)
    elif owner != to:
        move = {"kind": "move", "contact_id": ref, "to": to, "rank": NAMED,
                "topic": m.get("topic", "contacts.v1")}  # fmt: skip
        tx.internal.send(CUSTOMER_EVENTS, owner, move)
    waiting = tx.get(held[CONTACT], ref)
    if not waiting:
        return
    rest = [x for x in waiting if x.get("placed_on")]
    keep_held(tx, CONTACT, ref, rest, len(waiting) - len(rest))
    for message in waiting:
        if not message.get("placed_on"):
            forward(tx, to, message, CONTACT, NAMED)


def handle_unmatched_message(tx: Batch, m: dict) -> None:
    """The list of unmatched contacts, on UNMATCHED_KEY's partition
    (streams/domain/unmatched.py)."""
    kind = m["kind"]
    if kind == "unmatched_add":
        event = m["event"]
        key = unmatched.row_key(event["contact_id"])
        before = tx.get(unmatched_table, key)
        if before is not None and before.get("assigned"):
            return  # assigned meanwhile: its case says where it goes
        row = unmatched.add_event(before, event, m["why"])
        if row != before:
            store_unmatched(tx, key, before, row)
            if before is None:
                metrics.CONTACTS_UNMATCHED.inc()
    elif kind == "unmatched_placed":
        key = unmatched.row_key(m["contact_id"])
        before = tx.get(unmatched_table, key)
        if before is not None and not before.get("assigned"):
            store_unmatched(tx, key, before, None)
    elif kind == "assign":
        assign_contact(tx, m["command"])
    elif kind == "unmatched_forget":
        forget_unmatched(tx, m["customer_id"])
    elif kind == "unmatched_identity":
        key, record = unmatched.picture_key(m["ns"], m["value"]), m["record"]
        old = tx.get(unmatched_table, key)
        if old is None and ambiguity(m["ns"], m["value"], record) is None:
            return  # only an ambiguous identifier, or one that was, is pictured
        if unmatched.newer_picture(old, record):
            tx.set(unmatched_table, key, record)


def store_unmatched(tx: Batch, key: str, before: dict | None, row: dict | None) -> None:
    """Store (None: delete) one row and keep the index of the customers it names."""
    if row is None:
        tx.delete(unmatched_table, key)
    else:
        tx.set(unmatched_table, key, row)
    contact_id = key.split(":", 1)[1]
    old = set(unmatched.named(before)) if before else set()
    new = set(unmatched.named(row)) if row else set()
    for customer_id in old ^ new:
        index = unmatched.index_key(customer_id)
        listed = set(tx.get(unmatched_table, index) or ())
        if customer_id in new:
            listed.add(contact_id)
        else:
            listed.discard(contact_id)
        if listed:
            tx.set(unmatched_table, index, sorted(listed))
        elif tx.contains(unmatched_table, index):
            tx.delete(unmatched_table, index)


def assign_contact(tx: Batch, command: dict) -> None:
    """An agent's ``assign_contact``: the first one for a contact wins and stays on its row as
    the audit record; the same command again, or another one later, changes nothing."""
    contact_id = command["contact_id"]
    key = unmatched.row_key(contact_id)
    before = tx.get(unmatched_table, key)
    if before is None:
        log.warning("assign_contact %s: contact %s is not unmatched (placed or erased since)",
                    command["command_id"], contact_id)  # fmt: skip
        return
    if before.get("assigned"):
        return
    audit = {k: command[k] for k in ("command_id", "customer_id", "agent", "reason",
                                     "requested_at")}  # fmt: skip
    store_unmatched(tx, key, before, {**before, "assigned": audit})
    log.info("contact %s assigned to a customer by command %s", contact_id, command["command_id"])
    assign = {"op": "assign", "customer_id": command["customer_id"],
              "command_id": command["command_id"]}  # fmt: skip
    tx.internal.send(REF_TOPIC[CONTACT], contact_id, assign)


def forget_unmatched(tx: Batch, customer_id: str) -> None:
    """An erased customer leaves every row that names it (an assignment to them goes)."""
    index = unmatched.index_key(customer_id)
    for contact_id in tx.get(unmatched_table, index) or ():
        key = unmatched.row_key(contact_id)
        before = tx.get(unmatched_table, key)
        if before is not None:
            store_unmatched(tx, key, before, unmatched.forget(before, customer_id))
    if tx.contains(unmatched_table, index):
        tx.delete(unmatched_table, index)


def _ref_handler(ns: str) -> Callable[[Batch, str, dict], None]:
    def handle(tx: Batch, ref: str, m: dict) -> None:
        op = m["op"]
        if op == "bind":
            bind(tx, ns, ref, m["customer_id"], m.get("at"))
        elif op == "unhold":
            drop_held(tx, ns, ref, m["event_id"], m.get("at"))
        elif op == "expire":
            expire_held(tx, ns, ref, m["before"], m.get("wall_before"))
        elif op == "placed":
            placed(tx, ns, ref, m)
        elif op == "rebind":
            rebind(tx, ns, ref, m["from"], m["customer_id"])
        elif op == "release":  # given up by its customer (streams/domain/placement.py give_up)
            if tx.get(owners[ns], ref) == m["from"]:
                tx.delete(owners[ns], ref)
        elif op == "erase":
            erase_ref(tx, ns, ref, m)
        elif op == "unmatched":
            unmatched_at_case(tx, ref, m)
        elif op == "assign":
            assign_case(tx, ref, m)
        else:
            lookup(tx, ns, ref, m)

    return handle


HANDLERS: dict[str, Callable[[Batch, str, dict], None]] = {
    CUSTOMER_EVENTS: handle_customer_message,
    **{REF_TOPIC[ns]: _ref_handler(ns) for ns in NAMESPACES},
}


# ------------------------------------------------------------------------------- the agent


def _failed_at() -> bytes:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z").encode()


def dead_letter(tx: Batch, record: EventT, value: bytes | None, reason: str) -> None:
    """A message of an internal record that cannot be handled, with where it came from."""
    msg = record.message
    headers: Headers = [
        ("x-error", reason.encode()),
        ("x-source-topic", msg.topic.encode()),
        ("x-source-partition", str(msg.partition).encode()),
        ("x-source-offset", str(msg.offset).encode()),
        ("x-failed-at", _failed_at()),
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


async def handle_batch(tx: Batch, records: list[EventT]) -> None:
    """Apply every message of ``records``; give the loop a turn every ``tuning.CHUNK`` messages.

    Queries read only what is stored, and this is the only writer, so a turn in the middle
    of a batch shows nobody a half-applied batch.
    """
    done = 0
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
            done += 1
            if done % tuning.CHUNK == 0:
                await asyncio.sleep(0)


@app.agent(t.internal, name="keel.join", concurrency=1)
async def on_internal(stream: Any) -> None:
    """Handle the internal topics batch by batch; acknowledge a batch once it is stored.

    ``noack_take`` leaves acknowledging to us: faust's ``take_events`` acknowledges a batch in
    a ``finally``, so an agent that raised, or was cancelled while it waited for Kafka, had
    its unfinished batch committed.
    """
    async for records in stream.noack_take(tuning.JOIN_BATCH_RECORDS, settings.batch_wait_s):
        try:
            tx = await store_batch(records)
        except Exception as exc:  # noqa: BLE001 - reported and halted on, never acknowledged
            log.exception("the join agent cannot go on")
            health.fail("join", f"a batch could not be made durable: {exc!r}")
            await health.halt()
        if tx is None:
            log.warning("batch of %d records not stored: the partitions were reassigned while "
                        "it ran; faust delivers them again", len(records))
            continue  # faust delivers them again from the committed offsets
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


async def store_batch(records: list[EventT]) -> Batch | None:
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
    while True:
        tx = Batch(emitter.outbox())
        try:
            await handle_batch(tx, records)
            return tx if await commit(tx, emitter, current) else None
        except EmitError as exc:
            if not current():
                return None
            waited = time.monotonic() - started
            if not exc.retriable or waited > tuning.KAFKA_OUTAGE_RETRY_S:
                raise
            log.warning("Kafka did not take a batch's records (%s); producing them again in "
                        "%.1f s (waiting %.0f s so far)", exc, delay, waited)  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(2 * delay, 10.0)


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
        now_ms(), time.monotonic(), tuning.RECHECKS_PER_TICK, tuning.RECHECK_RESEND_S
    )
    if not customer_ids:
        return
    recheck = {"kind": "recheck"}
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

    def clock(ns: str, ref: str) -> int | None:
        return event_clock.get(partition_of(ref))

    hold_max_ms, wall = settings.hold_max_s * 1000, now_ms()
    expiries = held_index.take(clock, hold_max_ms, wall, tuning.RECHECKS_PER_TICK)
    if not expiries:
        return
    out = emitter.outbox()
    internal = Packer(out.produce)
    for ns, ref, before in expiries:
        expire = {"op": "expire", "before": before, "wall_before": wall - hold_max_ms}
        internal.send(REF_TOPIC[ns], ref, expire)
    internal.flush()
    try:
        await out.confirmed()
    except Exception as exc:  # noqa: BLE001 - the held index still says what; sent again
        log.warning("held-event expiries not sent (%s); sent again at the next tick", exc)


@app.task
async def _start_intake() -> None:
    intake.start()


@app.on_before_shutdown.connect
def _stop_outputs(_app: Any, /, *_args: Any, signal: Any, **_kwargs: Any) -> None:
    """Stop reading the departments' topics and deliver what was produced (unconfirmed
    batches are not acknowledged either way, so this only saves a replay)."""
    intake.stop()
    emitter.stop()
