"""Signals: the pure rules that raise and clear a customer's signals (docs/contract.md §6).

A signal is a *function of the stored state and the clock*: :func:`active_signals` recomputes
the whole set from scratch, so it inherits the merge's order-independence (streams/domain/state.py)
and there is no separate signal bookkeeping that could drift. :func:`apply_signals` stores that
set in ``state["signals"]`` and says what appeared (RAISED) or disappeared (CLEARED) since the
last evaluation; that diff is what goes to ``customer-signals.v1``. Two rules depend on the
clock (a deadline passing, a complaint ageing); :func:`next_check_ms` tells the worker's timer
when to look again, so no event has to arrive for them to fire.

``raised_at`` is derived from event times (a deadline, a DELIVERED time, when a contact was
opened), never from when keel noticed, so replaying the same events gives the same record.

    >>> state = {"customer_id": "c-1", "version": 1, "updated_at": 0, "signals": [],
    ...          "_orders": {}, "_shipments": {}, "_contacts": {}}
    >>> apply_signals(state, now_ms=0) == (state, [])
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streams.domain.command_status import command_outcome, command_text, department
from streams.domain.commands import ANNOUNCE
from streams.domain.state import (
    Entity,
    State,
    contact_status,
    field,
    opened_at,
    order_lines,
    placed_at,
)
from streams.domain.wording import DAY, HOUR, MINUTE, label, span, when

DUPLICATE_ORDER = "DUPLICATE_ORDER"
SHIPMENT_LATE = "SHIPMENT_LATE"
LOST_SHIPMENT_DELIVERED = "LOST_SHIPMENT_DELIVERED"
REPEAT_CONTACT = "REPEAT_CONTACT"
COMPLAINT_UNRESOLVED = "COMPLAINT_UNRESOLVED"
COMMAND_PENDING = "COMMAND_PENDING"
COMMAND_FAILED = "COMMAND_FAILED"
STATE_BOUNDED = "STATE_BOUNDED"
CUSTOMER_TOLD = "CUSTOMER_TOLD"
SIGNAL_TYPES = (
    COMMAND_FAILED,
    COMMAND_PENDING,
    COMPLAINT_UNRESOLVED,
    CUSTOMER_TOLD,
    DUPLICATE_ORDER,
    LOST_SHIPMENT_DELIVERED,
    REPEAT_CONTACT,
    SHIPMENT_LATE,
    STATE_BOUNDED,
)

ARRIVED = frozenset({"DELIVERED", "RETURNED"})  # a shipment in one of these is never late

Signal = dict[str, Any]  # ActiveSignal of schemas/CustomerState.v1.avsc
Identity = tuple[str, str | None, str | None, str | None]  # (type, order, shipment, contact)


@dataclass(frozen=True)
class Windows:
    """The durations of docs/contract.md §6, e.g.
    ``Windows(complaint_unresolved_ms=4 * 3_600_000)``.

    Every window is inclusive: two orders placed exactly 30 min apart are duplicates; a
    deadline or complaint window is *passed* only once the clock is strictly beyond it.
    """

    duplicate_order_ms: int = 30 * MINUTE
    repeat_contact_ms: int = 14 * DAY
    complaint_unresolved_ms: int = 24 * HOUR
    #: a desk command whose effect no department event shows after this is COMMAND_FAILED
    command_timeout_ms: int = 10 * MINUTE

    def __post_init__(self) -> None:
        if min(self.duplicate_order_ms, self.repeat_contact_ms, self.complaint_unresolved_ms,
               self.command_timeout_ms) < 0:  # fmt: skip
            raise ValueError(f"windows must not be negative: {self}")


DEFAULT_WINDOWS = Windows()


def identity(signal: Signal) -> Identity:
    """What makes two evaluations "the same signal": a changed detail is not a new signal."""
    return signal["type"], signal["order_id"], signal["shipment_id"], signal["contact_id"]


def active_signals(state: State, now_ms: int, windows: Windows = DEFAULT_WINDOWS) -> list[Signal]:
    """The signals active in ``state`` at ``now_ms``, sorted by identity (None first).

    A pure function of the state's entities and the clock; ``state["signals"]`` is ignored.
    """
    found = [
        *_duplicate_orders(state, windows),
        *_late_shipments(state, now_ms),
        *_lost_shipments_delivered(state),
        *_repeat_contacts(state, windows),
        *_unresolved_complaints(state, now_ms, windows),
        *_desk_commands(state, now_ms, windows),
        *_told(state),
        *_bounded(state),
    ]
    return sorted(found, key=_sort_key)


def apply_signals(
    state: State, now_ms: int, windows: Windows = DEFAULT_WINDOWS
) -> tuple[State, list[dict[str, Any]]]:
    """Store the signals active at ``now_ms`` in the state; return it and what was raised/cleared.

    The changes are CustomerSignal records (schemas/CustomerSignal.v1.avsc): one RAISED per
    identity that is active now and was not stored (``at`` = its ``raised_at``), one CLEARED
    per stored identity no longer active (``at`` = ``now_ms``), clears first. A stored signal
    whose ``raised_at`` or ``detail`` moved is updated in place without a record. When the
    stored list is already right, the very same ``state`` and ``[]`` come back; otherwise a
    copy with ``version`` + 1 and ``updated_at`` = ``now_ms`` (a signal change is a state
    change that subscribers must see, even when the timer, not an event, caused it).
    ``state`` is never mutated.
    """
    active = active_signals(state, now_ms, windows)
    stored: list[Signal] = state.get("signals") or []
    if active == stored:
        return state, []
    before = {identity(s): s for s in stored}
    after = {identity(s): s for s in active}
    customer_id = state["customer_id"]
    changes = [
        _change(customer_id, "CLEARED", s, now_ms)
        for key, s in sorted(before.items(), key=lambda kv: _sort_key(kv[1]))
        if key not in after
    ]
    changes += [
        _change(customer_id, "RAISED", s, s["raised_at"])
        for key, s in after.items()
        if key not in before
    ]
    new = {**state, "signals": active, "version": state["version"] + 1, "updated_at": now_ms}
    return new, changes


def next_check_ms(state: State, now_ms: int, windows: Windows = DEFAULT_WINDOWS) -> int | None:
    """The first time after ``now_ms`` at which :func:`active_signals` changes without an event.

    Only deadlines move signals on their own: an undelivered shipment's deadline, an open
    complaint's window and an unanswered desk command's timeout. A deadline ``d`` is passed
    from ``d + 1`` on (strictly beyond it).
    None when nothing is pending, so the timer can forget this customer until its next event.
    """
    due = [d for _, _, _, d, _ in _pending_shipments(state)]
    due += [d for _, _, d in _open_complaints(state, windows)]
    due += [
        c["requested_at"] + windows.command_timeout_ms
        for command_id, c in (state.get("_commands") or {}).items()
        if command_outcome(state, command_id, c)[0] == "pending"
    ]
    upcoming = [d + 1 for d in due if d >= now_ms]
    return min(upcoming, default=None)


# --- the rules ------------------------------------------------------------------------------


def _duplicate_orders(state: State, windows: Windows) -> Iterator[Signal]:
    """Every order with an earlier same-lines, non-cancelled order placed within the window."""
    baskets: dict[tuple[tuple[str, int], ...], list[tuple[int, str]]] = {}
    for order_id, o in state["_orders"].items():
        lines = order_lines(o)
        if o["type"] != "CANCELLED" and lines:  # an empty basket is no purchase to repeat
            baskets.setdefault(tuple(sorted(lines.items())), []).append((placed_at(o), order_id))
    for orders in baskets.values():
        orders.sort()
        for i in range(1, len(orders)):
            at, order_id = orders[i]
            earlier_at, earlier_id = orders[i - 1]  # the nearest earlier one
            if at - earlier_at <= windows.duplicate_order_ms:
                yield _signal(
                    DUPLICATE_ORDER,
                    at,
                    f"Order {order_id} has the same items as order {earlier_id}, placed "
                    f"{span(at - earlier_at)} apart; it may have been ordered twice.",
                    order_id=order_id,
                )


def _late_shipments(state: State, now_ms: int) -> Iterator[Signal]:
    for shipment_id, s, order_id, deadline, promised in _pending_shipments(state):
        if now_ms > deadline:
            what = "promised delivery date" if promised else "expected delivery date"
            yield _signal(
                SHIPMENT_LATE,
                deadline,
                f"Shipment {shipment_id} of order {order_id} is past its {what} "
                f"({when(deadline)}); its last status is {label(s['type'])}.",
                order_id=order_id,
                shipment_id=shipment_id,
            )


def _lost_shipments_delivered(state: State) -> Iterator[Signal]:
    """A shipment DELIVERED after it was LOST, until a contact about its order is resolved.

    The state keeps the earliest LOST and the latest DELIVERED, so "some DELIVERED after some
    LOST" is ``delivered > lost``; the signal dates from that latest DELIVERED.
    """
    for shipment_id, s in state["_shipments"].items():
        order_id = s["order_id"]
        lost, delivered = s.get("lost"), s.get("delivered")
        if order_id not in state["_orders"] or lost is None or delivered is None:
            continue
        if delivered <= lost or _resolved_after(state, order_id, delivered):
            continue
        replacements = sorted(
            k
            for k, x in state["_shipments"].items()
            if field(x, "replaces_shipment_id") == shipment_id
        )
        also = (
            f"replacement {', '.join(replacements)} may be on its way too"
            if replacements
            else "a replacement may be on its way too"
        )
        yield _signal(
            LOST_SHIPMENT_DELIVERED,
            delivered,
            f"Shipment {shipment_id} of order {order_id} was reported lost on {when(lost)} "
            f"but delivered on {when(delivered)}; {also}.",
            order_id=order_id,
            shipment_id=shipment_id,
        )


def _repeat_contacts(state: State, windows: Windows) -> Iterator[Signal]:
    """Every contact opened within the window after another about the same order (or topic).

    Contacts with an order are grouped by it; those without, by topic; those with neither
    are about nothing in particular and never repeat. The signal stays while any of the
    contacts it counts (this one and the earlier ones within its window) is open.
    """
    groups: dict[tuple[str, str], list[tuple[int, str, Entity]]] = {}
    for contact_id, c in state["_contacts"].items():
        order_id, topic = field(c, "order_id"), field(c, "topic")
        if order_id is not None:
            key = ("order", order_id)
        elif topic is not None:
            key = ("topic", topic)
        else:
            continue
        groups.setdefault(key, []).append((opened_at(c), contact_id, c))
    for (by, about), contacts in groups.items():
        contacts.sort(key=lambda x: x[:2])
        for i, (at, contact_id, c) in enumerate(contacts):
            earlier = [x for x in contacts[:i] if at - x[0] <= windows.repeat_contact_ms]
            if not earlier:
                continue
            if all(contact_status(x[2]) == "RESOLVED" for x in (*earlier, (at, contact_id, c))):
                continue
            subject = f"order {about}" if by == "order" else f"the topic '{about}'"
            previous_at, previous_id, _ = earlier[-1]
            yield _signal(
                REPEAT_CONTACT,
                at,
                f"Contact {contact_id} is about {subject} again, {span(at - previous_at)} "
                f"after contact {previous_id}.",
                order_id=field(c, "order_id"),
                contact_id=contact_id,
            )


def _unresolved_complaints(state: State, now_ms: int, windows: Windows) -> Iterator[Signal]:
    for contact_id, c, due in _open_complaints(state, windows):
        if now_ms > due:
            yield _signal(
                COMPLAINT_UNRESOLVED,
                due,
                f"Complaint {contact_id} has been open since {when(opened_at(c))}, "
                f"longer than {span(windows.complaint_unresolved_ms)}.",
                order_id=field(c, "order_id"),
                contact_id=contact_id,
            )


def _desk_commands(state: State, now_ms: int, windows: Windows) -> Iterator[Signal]:
    """A desk command's lifecycle (streams/domain/commands.py): COMMAND_PENDING until a department
    event shows its effect (the order CANCELLED, the contact RESOLVED, the note on a contact),
    COMMAND_FAILED when the department refused it (a REJECTED answer, raised at its ``at``),
    when the state shows it cannot happen (the order COMPLETED instead) or when nothing showed
    it within ``windows.command_timeout_ms``. Commands on one target (an order, a contact, or
    the customer for a note that opens a contact) share one signal of each type.
    """
    groups: dict[tuple[str, str | None, str | None], list[tuple[int, str]]] = {}
    for command_id, c in (state.get("_commands") or {}).items():
        outcome, failed_at, why = command_outcome(state, command_id, c)
        if outcome == "done":
            continue
        what = command_text(command_id, c)
        deadline = c["requested_at"] + windows.command_timeout_ms
        if outcome == "failed":  # refused, or the state says it cannot happen
            assert failed_at is not None
            signal, at, what = COMMAND_FAILED, failed_at, f"{what}: {why}"
        elif now_ms > deadline:
            signal, at = COMMAND_FAILED, deadline
            waited = span(windows.command_timeout_ms)
            what += f": the {department(c)} did not act on it within {waited}"
        else:
            signal, at = COMMAND_PENDING, c["requested_at"]
            if why:
                what += f": {why}"
        groups.setdefault((signal, c["order_id"], c["contact_id"]), []).append((at, what))
    for (signal, order_id, contact_id), items in groups.items():
        items.sort()
        detail = "; ".join(text for _, text in items) + "."
        yield _signal(signal, items[0][0], detail, order_id=order_id, contact_id=contact_id)


_DROPPED = {
    "closed": "closed orders/contacts",
    "notes_cut": "long notes shortened",
    "notes": "older notes",
    "retired": "records of retired orders/contacts",
    "open": "open orders/contacts",
}


def _bounded(state: State) -> Iterator[Signal]:
    """The state outgrew what keel keeps per customer (streams/domain/state.py ``bound``)."""
    bounded = state.get("_bounded")
    if not bounded:
        return
    dropped = ", ".join(
        f"{n} {_DROPPED.get(what, what)}" for what, n in sorted(bounded["dropped"].items()) if n
    )
    yield _signal(
        STATE_BOUNDED,
        bounded["at"],
        f"This customer's history outgrew what keel keeps per customer (KEEL_MAX_STATE_BYTES); "
        f"its oldest parts were dropped: {dropped or 'nothing yet'}.",
    )


def _told(state: State) -> Iterator[Signal]:
    """CUSTOMER_TOLD: the announcements this customer was sent from the Voice of the Customer
    board (ANNOUNCE commands, streams/api/voice.py), so the next agent knows what they were
    told: ``told on 2026-12-01: <text>``, several joined, oldest first; raised at the first."""
    told = sorted(
        (c["requested_at"], command_id, c)
        for command_id, c in (state.get("_commands") or {}).items()
        if c["type"] == ANNOUNCE
    )
    if told:
        detail = "; ".join(
            f"told on {datetime.fromtimestamp(at / 1000, UTC):%Y-%m-%d}: {c['note']} "
            f"({c['reason']}, by {c['agent']})"
            for at, _, c in told
        )
        yield _signal(CUSTOMER_TOLD, told[0][0], detail + ".")


# --- what the rules share -------------------------------------------------------------------


def _pending_shipments(state: State) -> Iterator[tuple[str, Entity, str, int, bool]]:
    """Shipments not yet arrived that have a deadline: (id, entity, order_id, deadline, promised).

    Only shipments whose order is in the state count, as only those are shown (state.view).
    """
    for shipment_id, s in state["_shipments"].items():
        order = state["_orders"].get(s["order_id"])
        if order is None or s["type"] in ARRIVED:
            continue
        deadline = field(s, "expected_by")
        promised = deadline is None
        if promised:
            deadline = field(order, "promised_by")
        if deadline is not None:
            yield shipment_id, s, s["order_id"], deadline, promised


def _open_complaints(state: State, windows: Windows) -> Iterator[tuple[str, Entity, int]]:
    """Open COMPLAINT contacts and when their window ends."""
    for contact_id, c in state["_contacts"].items():
        if c["kind"] == "COMPLAINT" and contact_status(c) == "OPEN":
            yield contact_id, c, opened_at(c) + windows.complaint_unresolved_ms


def _resolved_after(state: State, order_id: str, after_ms: int) -> bool:
    """Whether a contact about ``order_id`` is resolved, by a RESOLVED later than ``after_ms``."""
    return any(
        field(c, "order_id") == order_id
        and contact_status(c) == "RESOLVED"
        and c["resolved"] > after_ms
        for c in state["_contacts"].values()
    )


def _signal(
    type_: str,
    raised_at: int,
    detail: str,
    *,
    order_id: str | None = None,
    shipment_id: str | None = None,
    contact_id: str | None = None,
) -> Signal:
    return {
        "type": type_,
        "order_id": order_id,
        "shipment_id": shipment_id,
        "contact_id": contact_id,
        "raised_at": raised_at,
        "detail": detail,
    }


def _change(customer_id: str, status: str, signal: Signal, at: int) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "status": status,
        "type": signal["type"],
        "order_id": signal["order_id"],
        "shipment_id": signal["shipment_id"],
        "contact_id": signal["contact_id"],
        "at": at,
        "detail": signal["detail"],
    }


def _sort_key(signal: Signal) -> tuple[tuple[bool, str], ...]:
    return tuple((value is not None, value or "") for value in identity(signal))
