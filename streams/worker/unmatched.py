"""Unmatched contacts: a contact whose e-mail or phone is ambiguous and that resolved
through nothing else waits as *unmatched* until an agent assigns it (streams/domain/unmatched.py).

Two sides: at the contact's case reference (keel-contact-refs) its held copy is marked so it
never expires (*unmatched*), and an agent's assign_contact binds the case (*assign*); both
are sent to that topic only (``ns`` is always the contact namespace); the
list itself lives on one partition of keel-customer-events, under ``UNMATCHED_KEY``, whose
messages (*unmatched_add*, *unmatched_placed*, *unmatched_forget*, *unmatched_identity* and
an agent's *assign*) keep its rows and the index of the customers they name.
"""

from __future__ import annotations

import logging

from streams.domain import unmatched
from streams.domain.join import CONTACT
from streams.domain.placement import NAMED
from streams.domain.unmatched import UNMATCHED_KEY, ambiguity
from streams.ops import metrics
from streams.worker import messages as msg
from streams.worker.checkpoint import Transaction
from streams.worker.emit import CUSTOMER_EVENTS, REF_TOPIC
from streams.worker.references import case_rank, forward, keep_held, mark_unmatched
from streams.worker.tables import assigned, held, owners
from streams.worker.tables import unmatched as unmatched_table

log = logging.getLogger(__name__)


def unmatched_at_case(tx: Transaction, ns: str, ref: str, m: msg.Unmatched) -> None:
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
        tx.set(held[CONTACT], ref, mark_unmatched(waiting))
    tx.internal.send(CUSTOMER_EVENTS, UNMATCHED_KEY, msg.unmatched_add(event, m["why"]))


def assign_case(tx: Transaction, ns: str, ref: str, m: msg.AssignCase) -> None:
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
        move = msg.move(ref, to, NAMED, "contacts.v1")  # an assign names no topic
        tx.internal.send(CUSTOMER_EVENTS, owner, move)
    waiting = tx.get(held[CONTACT], ref)
    if not waiting:
        return
    rest = [x for x in waiting if x.get("placed_on")]
    keep_held(tx, CONTACT, ref, rest, len(waiting) - len(rest))
    for message in waiting:
        if not message.get("placed_on"):
            forward(tx, to, message, CONTACT, NAMED)


# ------------------------------------------------ the list, on UNMATCHED_KEY's partition


def on_add(tx: Transaction, m: msg.UnmatchedAdd) -> None:
    """A contact is unmatched: its row takes the event and why it matched no one."""
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


def on_placed(tx: Transaction, m: msg.UnmatchedPlaced) -> None:
    """A contact that was unmatched joined a customer after all: its row goes (an assigned
    one stays, the audit record of the assignment)."""
    key = unmatched.row_key(m["contact_id"])
    before = tx.get(unmatched_table, key)
    if before is not None and not before.get("assigned"):
        store_unmatched(tx, key, before, None)


def on_assign(tx: Transaction, m: msg.AssignCommand) -> None:
    assign_contact(tx, m["command"])


def on_forget(tx: Transaction, m: msg.UnmatchedForget) -> None:
    forget_unmatched(tx, m["customer_id"])


def on_identity(tx: Transaction, m: msg.UnmatchedIdentity) -> None:
    """The newest picture of an identifier that is (or was) ambiguous, for the list's why."""
    key, record = unmatched.picture_key(m["ns"], m["value"]), m["record"]
    old = tx.get(unmatched_table, key)
    if old is None and ambiguity(m["ns"], m["value"], record) is None:
        return  # only an ambiguous identifier, or one that was, is pictured
    if unmatched.newer_picture(old, record):
        tx.set(unmatched_table, key, record)


def store_unmatched(tx: Transaction, key: str, before: dict | None, row: dict | None) -> None:
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


def assign_contact(tx: Transaction, command: dict) -> None:
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
    assign = msg.assign_case(command["customer_id"], command["command_id"])
    tx.internal.send(REF_TOPIC[CONTACT], contact_id, assign)


def forget_unmatched(tx: Transaction, customer_id: str) -> None:
    """An erased customer leaves every row that names it (an assignment to them goes)."""
    index = unmatched.index_key(customer_id)
    for contact_id in tx.get(unmatched_table, index) or ():
        key = unmatched.row_key(contact_id)
        before = tx.get(unmatched_table, key)
        if before is not None:
            store_unmatched(tx, key, before, unmatched.forget(before, customer_id))
    if tx.contains(unmatched_table, index):
        tx.delete(unmatched_table, index)

