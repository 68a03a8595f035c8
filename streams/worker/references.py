"""Handlers of the messages keyed by a reference (keel-{ns}-refs): order ids, case ids,
e-mails and phones.

A reference namespace has an *owners* table (reference -> customer) and a *held* table
(reference -> events waiting for it). An event is looked up through the chain of its
references (*lookup*): a known owner gets it forwarded, an unknown reference holds it and
passes it on. A customer's state sends a *bind* for every reference it newly knows, which
sets the owner and releases what was held; the other messages here keep those two tables
right as events are applied elsewhere (*unhold*), contacts move (*placed*, *rebind*,
*release*), customers are erased (*erase*) and held events grow old (*expire*).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from streams.app import settings
from streams.domain.erasure import suppressed, suppression_key
from streams.domain.join import (
    CONTACT,
    RANK,
    add_held,
    expired_held,
    mark_held,
    never_known_reason,
    remove_held,
    route,
)
from streams.domain.links import IDENTIFIERS, bind_record, forget_member, recipients
from streams.domain.placement import NAMED
from streams.domain.unmatched import UNMATCHED_KEY, ambiguity
from streams.encoding.codec import get_codec
from streams.ops import metrics
from streams.worker import clock, params
from streams.worker import messages as msg
from streams.worker.checkpoint import Transaction
from streams.worker.emit import CUSTOMER_EVENTS, DEADLETTER_TOPIC, REF_TOPIC, Headers
from streams.worker.intake import KEY_FIELD_OF_KIND, SCHEMA_OF_KIND
from streams.worker.tables import assigned, erased, held, identities, owners, partition_of

log = logging.getLogger(__name__)

codec = get_codec()


def forward(
    tx: Transaction, customer_id: str, message: Mapping[str, Any], ns: str, rank: int | None = None
) -> None:
    """Send an event resolved through namespace ``ns`` to its customer (a contact: with the
    rank of that reference, streams/domain/placement.py, or ``rank``). One that waited as unmatched
    says so: the customer takes it off the list (streams/domain/unmatched.py)."""
    kind = message["kind"]
    body = msg.event(
        kind, message["event"], message["topic"],
        rank=(RANK[ns] if rank is None else rank) if kind == "contact" else None,
        unmatched=bool(message.get("unmatched")),
        # resolved again, through a reference that names ``customer_id`` now; never through
        # the case: its owner may be the customer that just gave the contact up (its
        # release on the way), which then resolves it again in turn
        fresh=bool(message.get("fresh")) and ns != CONTACT,
        appended=message.get("appended"),
    )  # fmt: skip
    tx.internal.send(CUSTOMER_EVENTS, customer_id, body)


def case_rank(tx: Transaction, ref: str, owner: str) -> int | None:
    """The rank a contact joins its case's owner at: the strongest if an agent assigned it
    there (assign_contact), else the case's own (None)."""
    return NAMED if tx.get(assigned, ref) == owner else None


def ambiguous_at(tx: Transaction, ns: str, ref: str, message: Mapping[str, Any]) -> dict | None:
    """Why a contact cannot resolve through identifier ``ref`` (shared, or linking several
    customers: streams/domain/unmatched.py); None if it can, or ``ref`` is no identifier."""
    if ns not in IDENTIFIERS or message["kind"] != "contact":
        return None
    return ambiguity(ns, ref, tx.get(identities[ns], ref))


def pass_by(tx: Transaction, message: msg.Lookup, why: dict) -> None:
    """Go on down the chain past an ambiguous identifier, noting why; at the chain's end the
    contact is unmatched (its case reference marks it)."""
    whys = [*(message.get("ambiguous") or ()), why]
    rest = message["refs"]
    if rest:
        (next_ns, next_ref), *after = rest
        tx.internal.send(REF_TOPIC[next_ns], next_ref, msg.onward(message, after, whys))
    else:
        send_unmatched(tx, message, whys)


def send_unmatched(tx: Transaction, message: msg.Lookup, whys: list[dict]) -> None:
    event = message["event"]
    body = msg.unmatched(message["kind"], event, message["topic"], whys)
    tx.internal.send(REF_TOPIC[CONTACT], event["contact_id"], body)


def send_move(
    tx: Transaction, placed_on: str, ns: str, message: Mapping[str, Any], to: str
) -> None:
    """Ask ``placed_on`` to give the message's contact up to ``to``, the owner of a stronger
    reference of it (``ns``)."""
    event = message["event"]
    move = msg.move(event["contact_id"], to, RANK[ns], message["topic"])
    tx.internal.send(CUSTOMER_EVENTS, placed_on, move)


def lookup(tx: Transaction, ns: str, ref: str, message: msg.Lookup) -> None:
    """Resolve ``message`` through reference ``ref`` (this worker owns its partition)."""
    occurred_at = message["event"]["occurred_at"]
    clock.saw(tx.partition, occurred_at)
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
    clocks = {
        "held_at": clock.event_clock.get(tx.partition, occurred_at),
        "held_wall": clock.now_ms(),
    }
    waiting = add_held(before, {**message, **clocks})
    if waiting is not None:
        if ns == CONTACT and any(x.get("unmatched") for x in before or ()):
            waiting = mark_unmatched(waiting)  # its contact is unmatched: so is this event
        tx.set(held[ns], ref, waiting)
        if len(waiting) > len(before or ()):  # else a later version of a held id replaced it
            metrics.HELD.inc()
            metrics.count_event(message["topic"], "held")
    elif not message.get("fresh"):
        return  # already held here, and already passed down the chain
    # (else this version waits here already, but this is a contact resolved again, given
    # up by the customer an identifier further down placed it on, which is ambiguous now:
    # the copy here went down the chain before that, so this one must go on too, or it
    # ends nowhere; a re-delivered lookup leaves such a copy next to a *placed* one)
    rest = message["refs"]
    if rest:
        (next_ns, next_ref), *after = rest
        tx.internal.send(REF_TOPIC[next_ns], next_ref, msg.onward(message, after))
    elif message.get("ambiguous"):  # it passed an ambiguous identifier and nothing resolved
        send_unmatched(tx, message, message["ambiguous"])


def drop_erased_lookup(tx: Transaction, ns: str, ref: str, message: Mapping[str, Any]) -> None:
    """An event naming an erased customer's reference, from before the erasure: dropped."""
    metrics.count_event(message["topic"], "erased")
    _unhold_chain(tx, ns, ref, message)


def _unhold_chain(tx: Transaction, ns: str, ref: str, message: Mapping[str, Any]) -> None:
    """Drop the copies of a held event its chain left at references other than ``ref``."""
    event = message["event"]
    unhold = msg.unhold(event)
    for other in route(message["kind"], event).refs:
        if other != (ns, ref):
            tx.internal.send(REF_TOPIC[other[0]], other[1], unhold)


def erase_ref(tx: Transaction, ns: str, ref: str, m: msg.Erase) -> None:
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


def forget_identity(tx: Transaction, ns: str, ref: str, customer_id: str) -> None:
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
        tx.internal.send(CUSTOMER_EVENTS, member, msg.identity(ns, ref, record))
    tell_unmatched(tx, ns, ref, record)


def bind_identity(tx: Transaction, ns: str, ref: str, customer_id: str, at: int) -> None:
    """Note that ``customer_id`` has identifier ``ref`` since ``at``; tell whom it concerns.

    Every member hears the record's new picture when it changed; a customer binding a shared
    identifier hears that it is shared (the record no longer changes).
    """
    before = tx.get(identities[ns], ref)
    record, changed = bind_record(before, customer_id, at, params.guards.shared_after)
    if changed:
        tx.set(identities[ns], ref, record)
        if "shared" in record and before is not None and "shared" not in before:
            metrics.IDENTIFIERS_SHARED.inc()
        if ambiguity(ns, ref, record) is not None:
            tell_unmatched(tx, ns, ref, record)
    elif "shared" not in record:
        return  # nothing new: every member was told already
    for member in recipients(before, record, customer_id):
        tx.internal.send(CUSTOMER_EVENTS, member, msg.identity(ns, ref, record))


def tell_unmatched(tx: Transaction, ns: str, ref: str, record: dict) -> None:
    """The unmatched list keeps the newest picture of every ambiguous identifier (an
    erasure's change of any record is sent too: the list keeps it only if it was)."""
    tx.internal.send(CUSTOMER_EVENTS, UNMATCHED_KEY, msg.unmatched_identity(ns, ref, record))


def on_bind(tx: Transaction, ns: str, ref: str, m: msg.Bind) -> None:
    bind(tx, ns, ref, m["customer_id"], m.get("at"))


def bind(tx: Transaction, ns: str, ref: str, customer_id: str, at: int | None = None) -> None:
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


def placed(tx: Transaction, ns: str, ref: str, m: msg.Placed) -> None:
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
    clock.saw(tx.partition, event["occurred_at"])
    message = {**m, "held_at": clock.event_clock.get(tx.partition, event["occurred_at"])}
    waiting = mark_held(before, message, placed_on)
    tx.set(held[ns], ref, waiting)
    metrics.HELD.inc(len(waiting) - len(before or ()))


def rebind(tx: Transaction, ns: str, ref: str, m: msg.Rebind) -> None:
    """A case moved from ``m["from"]`` to ``m["customer_id"]``: its later events go straight
    there."""
    if tx.get(owners[ns], ref) == m["from"]:
        tx.set(owners[ns], ref, m["customer_id"])


def on_unhold(tx: Transaction, ns: str, ref: str, m: msg.Unhold) -> None:
    drop_held(tx, ns, ref, m["event_id"], m.get("at"))


def drop_held(tx: Transaction, ns: str, ref: str, event_id: str, at: int | None) -> None:
    """Forget a held copy of an event that was applied through another reference."""
    before = tx.get(held[ns], ref)
    rest = remove_held(before, event_id, at)
    if rest is None:
        return
    keep_held(tx, ns, ref, rest, len(before) - len(rest))


def keep_held(tx: Transaction, ns: str, ref: str, rest: list[dict], gone: int) -> None:
    """Store what is still held at ``ref`` (none: the row goes); ``gone`` messages left it."""
    if rest:
        tx.set(held[ns], ref, rest)
    else:
        tx.delete(held[ns], ref)
    metrics.HELD.dec(gone)


def on_expire(tx: Transaction, ns: str, ref: str, m: msg.Expire) -> None:
    expire_held(tx, ns, ref, m["before"], m.get("wall_before"))


def expire_held(
    tx: Transaction, ns: str, ref: str, before: int, wall_before: int | None = None
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
        unhold = msg.unhold(event)
        for next_ns, next_ref in message.get("refs") or ():
            tx.internal.send(REF_TOPIC[next_ns], next_ref, unhold)


def dead_letter_held(tx: Transaction, message: dict, reason: str) -> None:
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
        ("x-failed-at", clock.failed_at()),
    ]
    tx.out.produce(DEADLETTER_TOPIC, key, codec.encode(SCHEMA_OF_KIND[kind], event), headers)
    metrics.count_event(topic, "dead_letter")
    log.warning("held event %s expired: %s", event["event_id"], reason)


def release(tx: Transaction, ns: str, ref: str, m: msg.Release) -> None:
    """``ref`` was given up by its customer (streams/domain/placement.py ``give_up``), or
    its contact was refused there (it came through an identifier the customer knows to be
    ambiguous, streams/worker/customers.py): it names no one until it is bound again. A case
    an agent assigned to that customer stays theirs."""
    owner = tx.get(owners[ns], ref)
    if owner == m["from"] and not (ns == CONTACT and tx.get(assigned, ref) == owner):
        tx.delete(owners[ns], ref)


def mark_unmatched(waiting: list[dict]) -> list[dict]:
    """A case's held copies, every one marked unmatched (they are all of its contact)."""
    return [x if x.get("placed_on") else {**x, "unmatched": True} for x in waiting]
