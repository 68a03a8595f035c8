"""Handlers of the messages keyed by customer id (keel-customer-events): the state's side.

An event of a known customer is merged into its state (streams/domain/state.py, placement.py,
commands.py), which is stored and published with its signal changes; what the new state
makes known goes on as *binds* to the reference topics (streams/worker/references.py). Here
too: a contact moving to another customer (*move*), an erasure, a signal recheck sent by
the timer (streams/worker/timers.py) and a new picture of an identifier (*identity*).
"""

from __future__ import annotations

import logging

from streams.app import settings
from streams.domain import voice
from streams.domain.bounding import bound
from streams.domain.commands import apply_command, apply_outcome
from streams.domain.erasure import CUSTOMER, erased_refs, event_refs, suppressed, suppression_key
from streams.domain.identity import normalize_email, normalize_phone
from streams.domain.join import CONTACT, EMAIL, PHONE, RANK, new_state_refs, placement_refs, route
from streams.domain.links import IDENTIFIERS, apply_identity, event_identifiers, note_identifiers
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
from streams.domain.signals import apply_signals, next_check_ms
from streams.domain.state import empty_state
from streams.domain.unmatched import UNMATCHED_KEY, ambiguity
from streams.encoding.codec import get_codec
from streams.ops import metrics
from streams.worker import clock, params
from streams.worker import messages as msg
from streams.worker import voice as voice_worker
from streams.worker.checkpoint import Transaction
from streams.worker.emit import CUSTOMER_EVENTS, REF_TOPIC, SIGNAL_TOPIC
from streams.worker.tables import customers, due, erased

log = logging.getLogger(__name__)

codec = get_codec()


def on_event(tx: Transaction, customer_id: str, m: msg.Event) -> None:
    """An input event (an order's, a shipment's, a contact's, a desk command or an answer to
    one) for this customer."""
    apply_to_customer(
        tx, customer_id, m["kind"], m["event"], m["topic"], m.get("rank", NAMED),
        bool(m.get("fresh")), m.get("appended"),
    )  # fmt: skip


def on_erasure(tx: Transaction, customer_id: str, m: msg.Event) -> None:
    erase_customer(tx, customer_id, m["event"], m["topic"])


def recheck(tx: Transaction, customer_id: str, m: msg.Recheck) -> None:
    recheck_signals(tx, customer_id)


def apply_to_customer(
    tx: Transaction,
    customer_id: str,
    kind: str,
    event: dict,
    topic: str,
    rank: int = NAMED,
    fresh: bool = False,
    appended: int | None = None,
) -> None:
    """Merge one event into its customer's state; publish the state and new binds if it changed.

    ``appended``: when Kafka appended the input record (ms), for the apply-lag metric.

    ``rank``: how a contact was joined to this customer (streams/domain/placement.py). One that
    moved away from here goes on to where it moved, at the rank of the move, unless it comes
    through a stronger reference than the move's (it comes back: its phone was this
    customer's, its e-mail another's, its order this one's). One given up here (an identifier
    of it became ambiguous), or joined through an identifier this state knows to be
    ambiguous, is refused: resolved again (``fresh``: this is such a resolution, where it
    moved before counts no more).
    """
    clock.saw(tx.partition, event_time(kind, event))
    before = tx.get(customers, customer_id)
    erased_at = _erased_before(tx, customer_id, before)
    if erased_at is not None and suppressed(erased_at, event_time(kind, event)):
        drop_erased(tx, customer_id, kind, event, topic, erased_at)
        return
    now = clock.now_ms()
    if kind == "contact" and rank != NAMED and before is not None:
        moved = moved_to(before, event["contact_id"])
        if moved is not None and not fresh:
            to, by = moved
            if to is None:  # given up here
                refuse(tx, customer_id, before, event, topic)
                return
            if rank >= by:  # it belongs there by the reference it moved by (if that is
                # ambiguous now, that customer resolves it again), not by the one it came by
                tx.internal.send(CUSTOMER_EVENTS, to, msg.event(kind, event, topic, by))
                return
            # else it comes back here, through a stronger reference than the move's
        if joined_ambiguously(before, event, rank):
            refuse(tx, customer_id, before, event, topic)
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
            before or _new_state(customer_id, erased_at), kind, event, rank, now, params.limits
        )
    id_binds: list[tuple[str, str, int]] = []
    found = event_identifiers(customer_id, kind, event)
    if found:  # its e-mail and phone, with the earliest time this state knows each from
        noted, id_binds = note_identifiers(state, found, params.guards.blocklist)
        if noted is not state and not changed:
            noted = {**noted, "version": state["version"] + 1, "updated_at": now}
        changed = changed or noted is not state
        state = noted
    if fresh and kind == "contact" and before is not None:
        rebind_case(tx, customer_id, before, event)
    if not changed:
        metrics.count_event(topic, "duplicate")
        return
    bounded = bound(state, settings.max_state_bytes, params.limits.keep_retired)
    if bounded is not state:  # never a record Kafka refuses, which would stop the partition
        metrics.STATES_BOUNDED.inc()
        log.warning("customer state over KEEL_MAX_STATE_BYTES=%d: its oldest parts were "
                    "dropped", settings.max_state_bytes)
        state = bounded
    version = state["version"]
    state, signal_changes = apply_signals(state, now, params.windows)
    state["version"] = version  # one change, one version, even when it also moved a signal
    metrics.count_event(topic, "applied")
    if kind in ("command", "outcome"):  # measured once it is stored
        tx.applied.append(("desk", event_time(kind, event), appended))
    else:
        tx.applied.append((event["source"], event["occurred_at"], appended))
    save_and_publish(tx, customer_id, state, signal_changes, now)
    for fact in voice.facts_to_send(before, state, kind, event, voice_worker.tagger):
        tx.internal.send(CUSTOMER_EVENTS, voice.VOICE_KEY, msg.voice_fact(fact))
    for ns, ref in new_state_refs(before, state):
        if ns not in IDENTIFIERS:  # those bind with their time, below
            tx.internal.send(REF_TOPIC[ns], ref, msg.bind(customer_id))
    for ns, ref, at in id_binds:
        tx.internal.send(REF_TOPIC[ns], ref, msg.bind(customer_id, at))
    watch, unhold_at = placement_refs(kind, event, rank)
    if unhold_at:
        unhold = msg.unhold(event)
        for ns, ref in unhold_at:
            tx.internal.send(REF_TOPIC[ns], ref, unhold)
    for ns, ref in watch:  # a stronger reference of its own may name another customer
        tx.internal.send(REF_TOPIC[ns], ref, msg.placed(kind, event, topic, customer_id))


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


def refuse(tx: Transaction, customer_id: str, state: dict, event: dict, topic: str) -> None:
    """Resolve a contact event again that this customer does not take (it gave the contact
    up, or the event came through an identifier it knows to be ambiguous).

    If the contact is not here, its case must not name this customer: a move's rebind may
    have given it the case ahead of the contact (which then did not come, or was given up
    before the rebind arrived), and the case would send it back here for ever. The release
    goes first, so the lookup finds the case unknown (a case this customer does not own
    stays as it is).
    """
    if not had_contact(state, event["contact_id"]):
        tx.internal.send(REF_TOPIC[CONTACT], event["contact_id"], msg.release(customer_id))
    resolve_again(tx, event, topic)


def rebind_case(tx: Transaction, customer_id: str, before: dict, event: dict) -> None:
    """A contact resolved again (``fresh``) reached this customer, which has it already: its
    case is this customer's again. The bind this state sent when the contact first came lost
    to the case's owner then (first bind wins), which may have released it since (it gave
    the contact up or refused it), leaving the case naming no one, and a copy marked
    unmatched there that only the case's bind takes off the list."""
    if event["contact_id"] in before["_contacts"]:
        tx.internal.send(REF_TOPIC[CONTACT], event["contact_id"], msg.bind(customer_id))


def had_contact(state: dict, contact_id: str) -> bool:
    """Whether the contact is here, or was until retention dropped it (its case is this
    customer's then, whatever its identifiers say now)."""
    retired = (state.get("_retired") or {}).get("contact") or {}
    return contact_id in state["_contacts"] or contact_id in retired


def resolve_again(tx: Transaction, event: dict, topic: str) -> None:
    """Send a contact event down its chain of references again, from its case on."""
    (ns, ref), *rest = route("contact", event).refs
    tx.internal.send(REF_TOPIC[ns], ref, msg.lookup("contact", event, topic, rest, fresh=True))


def _erased_before(tx: Transaction, customer_id: str, before: dict | None) -> int | None:
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
    tx: Transaction, customer_id: str, kind: str, event: dict, topic: str, erased_at: int
) -> None:
    """Drop an event of an erased customer that occurred before the erasure.

    What it would have made known (its order, e-mail, phone) is suppressed in its stead, so
    whatever resolves through those is dropped too instead of waiting to expire.
    """
    metrics.count_event(topic, "erased")
    erase = msg.erase(customer_id, erased_at)
    for ns, ref in event_refs(customer_id, kind, event):
        tx.internal.send(REF_TOPIC[ns], ref, erase)


def erase_customer(tx: Transaction, customer_id: str, request: dict, topic: str) -> None:
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
    erase = msg.erase(customer_id, at, unbind=True)
    for ns, ref in erased_refs(stored):
        tx.internal.send(REF_TOPIC[ns], ref, erase)
    tx.delete(customers, customer_id)
    if tx.contains(due, customer_id):
        tx.delete(due, customer_id)
    tx.publish_state(customer_id, None)
    forget = msg.voice_forget(customer_id, voice.contacts_of(stored))
    tx.internal.send(CUSTOMER_EVENTS, voice.VOICE_KEY, forget)
    tx.internal.send(CUSTOMER_EVENTS, UNMATCHED_KEY, msg.unmatched_forget(customer_id))
    metrics.ERASURES.inc()
    log.info("customer erased (request %s)", request["request_id"])


def move_contact(tx: Transaction, customer_id: str, m: msg.Move) -> None:
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
    now = clock.now_ms()
    out = move_out(stored, contact_id, to, rank, now, params.limits.keep_retired)
    if out is None:
        moved = moved_to(stored, contact_id)
        if moved is not None and moved[0] is not None and rank < moved[1] and moved[0] != to:
            tx.internal.send(CUSTOMER_EVENTS, moved[0], m)
        return
    state, events = out
    metrics.CONTACTS_MOVED.inc()
    version = state["version"]
    state, signal_changes = apply_signals(state, now, params.windows)
    state["version"] = version
    save_and_publish(tx, customer_id, state, signal_changes, now)
    for event in events:
        body = msg.event("contact", event, m.get("topic", "contacts"), rank)
        tx.internal.send(CUSTOMER_EVENTS, to, body)
    tx.internal.send(REF_TOPIC[CONTACT], contact_id, msg.rebind(customer_id, to))


def event_time(kind: str, event: dict) -> int:
    """When a record happened: a command when it was asked, an answer when it was given."""
    if kind == "command":
        return int(event["requested_at"])
    if kind == "outcome":
        return int(event["at"])
    return int(event["occurred_at"])


def recheck_signals(tx: Transaction, customer_id: str) -> None:
    """Re-evaluate time-based signals (a deadline passed) for one customer; sent by the timer."""
    stored = tx.get(customers, customer_id)
    if stored is None:
        tx.delete(due, customer_id)
        return
    now = clock.now_ms()
    state, signal_changes = apply_signals(stored, now, params.windows)
    if state is not stored:
        save_and_publish(tx, customer_id, state, signal_changes, now)
    else:
        schedule(tx, customer_id, state, now)


def save_and_publish(
    tx: Transaction, customer_id: str, state: dict, signal_changes: list[dict], now: int
) -> None:
    """Store a changed state; publish it (once per batch) and its signal changes."""
    tx.set(customers, customer_id, state)
    schedule(tx, customer_id, state, now)
    tx.publish_state(customer_id, state)
    for change in signal_changes:
        tx.out.produce(
            SIGNAL_TOPIC, customer_id.encode(), codec.encode("CustomerSignal", change, check=False)
        )


def schedule(tx: Transaction, customer_id: str, state: dict, now: int) -> None:
    """Remember when this customer's signals next change on their own (or forget it)."""
    when = next_check_ms(state, now, params.windows)
    if when is None:
        if tx.contains(due, customer_id):
            tx.delete(due, customer_id)
    elif tx.get(due, customer_id) != when:
        tx.set(due, customer_id, when)


def update_identity(tx: Transaction, customer_id: str, m: msg.Identity) -> None:
    """Keep the newest picture of one of the customer's identifiers (streams/domain/links.py).

    A customer without a state (erased since) has nothing to link; an older or repeated
    picture changes nothing.
    """
    stored = tx.get(customers, customer_id)
    if stored is None:
        return
    now = clock.now_ms()
    state, changed = apply_identity(stored, m, now)
    if not changed:
        return
    ns, value = m["ns"], m["value"]
    if ambiguity(ns, value, m["record"]) is not None:  # it resolves no one from now on
        field, norm = ("email", normalize_email) if ns == EMAIL else ("phone", normalize_phone)
        for contact_id in placed_through(state, RANK[ns], field, value, norm):
            out = give_up(state, contact_id, now, params.limits.keep_retired)
            if out is None:
                continue
            state, events = out
            tx.internal.send(REF_TOPIC[CONTACT], contact_id, msg.release(customer_id))
            forget = msg.voice_forget(customer_id, [contact_id])
            tx.internal.send(CUSTOMER_EVENTS, voice.VOICE_KEY, forget)
            for event in events:  # after the release: they find the case unknown
                resolve_again(tx, event, "contacts.v1")
        version = state["version"]
        state, signal_changes = apply_signals(state, now, params.windows)
        state["version"] = version
        save_and_publish(tx, customer_id, state, signal_changes, now)
        return
    save_and_publish(tx, customer_id, state, [], now)
