"""Pure join rules: which customer an event belongs to (docs/contract.md §4).

Every department keys its topic by the id it knows, so keel keeps one *reference index*
per kind of id ("namespace"): order id, contact (case) id, e-mail and phone, each mapping
to the customer that owns it. An event that does not carry its ``customer_id`` is
resolved through the first reference that is known, in the contract's order of
preference; while none is known it is *held* at every reference it could resolve
through, and released as soon as one of them becomes known (a *bind*). Holding at all
of them is what makes the result independent of which reference arrives first; applying
a released event twice is harmless because the merge is idempotent by ``event_id``.

An event held for longer than ``KEEL_HOLD_MAX_S`` of event time (by the newest
``occurred_at`` its partition has seen, from when it was held) goes to the dead letters:
:func:`held_expiry` says which held rows the clock asks the agent to expire,
:func:`expired_held` which of their copies go. Only the copy at the first reference of an
event's chain expires (one dead letter per event); it takes the copies further down the
chain with it, as an applied event does (an *unhold*).

Nothing here touches Faust or Kafka: the agents move the messages, these functions say
where they go.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from streams.domain.identity import normalize_email, normalize_phone

ORDER, CONTACT, EMAIL, PHONE = "order", "contact", "email", "phone"
NAMESPACES = (ORDER, CONTACT, EMAIL, PHONE)

Ref = tuple[str, str]  # (namespace, key)


@dataclass(frozen=True)
class Route:
    """Where an event goes: straight to a customer, or through a chain of references."""

    customer_id: str | None
    refs: tuple[Ref, ...] = ()


def route(kind: str, event: dict) -> Route:
    """Return how to find the customer of an input event.

    >>> route("shipment", {"order_id": "o-1"})
    Route(customer_id=None, refs=(('order', 'o-1'),))
    """
    if kind in ("order", "command", "outcome", "erasure"):  # these name their customer
        return Route(event["customer_id"])
    if kind == "shipment":
        return Route(None, ((ORDER, event["order_id"]),))
    if kind == "contact":
        if event.get("customer_id"):
            return Route(event["customer_id"])
        refs: list[Ref] = [(CONTACT, event["contact_id"])]
        if event.get("order_id"):
            refs.append((ORDER, event["order_id"]))
        email = normalize_email(event.get("email"))
        if email:
            refs.append((EMAIL, email))
        phone = normalize_phone(event.get("phone"))
        if phone:
            refs.append((PHONE, phone))
        return Route(None, tuple(refs))
    raise ValueError(f"unknown event kind {kind!r}")


def known_refs(view: dict) -> set[Ref]:
    """The references a customer's public state makes known (what others may join on)."""
    refs: set[Ref] = {(ORDER, o["order_id"]) for o in view["orders"]}
    refs.update((CONTACT, c["contact_id"]) for c in view["contacts"])
    refs.update((EMAIL, e) for e in view["emails"])
    refs.update((PHONE, p) for p in view["phones"])
    return refs


def state_refs(state: dict) -> set[Ref]:
    """``known_refs(view(state))`` read straight from a stored state, without building the view."""
    refs: set[Ref] = {(ORDER, order_id) for order_id in state["_orders"]}
    refs.update((CONTACT, contact_id) for contact_id in state["_contacts"])
    refs.update((EMAIL, e) for e in state["emails"])
    refs.update((PHONE, p) for p in state["phones"])
    return refs


def new_state_refs(before: dict | None, after: dict) -> list[Ref]:
    """``new_refs`` of two stored states (what the worker uses: no views built)."""
    old = state_refs(before) if before is not None else set()
    return sorted(state_refs(after) - old)


def new_refs(before: dict | None, after: dict) -> list[Ref]:
    """References that ``after`` knows and ``before`` did not, in a stable order."""
    old = known_refs(before) if before is not None else set()
    return sorted(known_refs(after) - old)


def add_held(held: list[dict] | None, message: dict) -> list[dict] | None:
    """Add a message to a reference's held list; None when nothing changes.

    One copy per event_id waits, the version with the latest ``occurred_at``: an id re-sent
    under another stamp is one event whose latest stamp wins (docs/contract.md §3), whichever
    version arrived first. None: this version (or a later one) is already held. A copy that
    only watches for the reference (:func:`mark_held`) is another matter: a contact resolved
    again (streams/domain/unmatched.py) waits next to it.
    """
    held = held or []
    event = message["event"]
    event_id, at = event["event_id"], event.get("occurred_at", 0)
    same = [m for m in held if m["event"]["event_id"] == event_id and not m.get("placed_on")]
    if any(m["event"].get("occurred_at", 0) >= at for m in same):
        return None
    others = (m for m in held if m["event"]["event_id"] != event_id or m.get("placed_on"))
    return [*others, message]


def held_count(lists: Iterable[list[dict]]) -> int:
    return sum(len(x) for x in lists)


def unhold_refs(kind: str, event: dict) -> list[Ref]:
    """References where copies of an applied event may still wait, to be dropped there.

    A contact is held at every reference of its chain that was unknown when it passed; once it
    is applied, copies at references that never become known would wait forever. The case
    reference is left out: binding the case (the state now knows it) releases that copy.
    """
    r = route(kind, event)
    return list(r.refs[1:]) if r.customer_id is None and kind == "contact" else []


#: the placement rank of a contact resolved through each namespace (streams/domain/placement.py)
RANK = {ORDER: 1, EMAIL: 2, PHONE: 3, CONTACT: 4}


def placement_refs(kind: str, event: dict, rank: int) -> tuple[list[Ref], list[Ref]]:
    """``(watch, unhold)``: where an event applied at ``rank`` asks to be moved, and where
    its waiting copies are dropped.

    A contact applied through a weaker reference than one of its own (its e-mail, while its
    order is unknown) sends a *placed* to each stronger one: if that is known for another
    customer, or once it becomes known, the contact moves there. Its own references no
    stronger than ``rank`` drop their copies, as :func:`unhold_refs` says.

    >>> placement_refs("contact", {"contact_id": "k-1", "order_id": "o-1", "email": "b@x"}, 2)
    ([('order', 'o-1')], [('email', 'b@x')])
    """
    refs = unhold_refs(kind, event)
    return [r for r in refs if RANK[r[0]] < rank], [r for r in refs if RANK[r[0]] >= rank]


def mark_held(held: list[dict] | None, message: dict, customer_id: str) -> list[dict]:
    """``held`` with ``message`` waiting as *placed* at ``customer_id``.

    Such a copy is not released to the reference's owner when it binds: the contact is
    moved there from ``customer_id`` instead (if that is another customer).
    """
    event = message["event"]
    marked = {
        "kind": message["kind"], "event": event, "topic": message["topic"], "refs": [],
        "placed_on": customer_id, "held_at": message.get("held_at", event["occurred_at"]),
    }  # fmt: skip
    rest = [
        m for m in held or ()
        if m["event"]["event_id"] != event["event_id"]
        or m.get("placed_on") not in (None, customer_id)
    ]  # fmt: skip
    return [*rest, marked]


def remove_held(
    held: list[dict] | None, event_id: str, occurred_at: int | None = None
) -> list[dict] | None:
    """``held`` without the message of ``event_id``; None when it was not there.

    With ``occurred_at`` (the version that was applied), a later version of the id stays.
    """
    if not held:
        return None
    rest = [
        m
        for m in held
        if m["event"]["event_id"] != event_id
        or (occurred_at is not None and m["event"].get("occurred_at", 0) > occurred_at)
    ]
    return rest if len(rest) < len(held) else None


#: how a dead letter's reason names each kind of reference
REF_NAMES = {ORDER: "order", CONTACT: "case", EMAIL: "e-mail", PHONE: "phone"}


def chain_starts_at(ns: str, ref: str, message: dict) -> bool:
    """Whether ``(ns, ref)`` is the first reference of the held event's chain."""
    refs = route(message["kind"], message["event"]).refs
    return bool(refs) and refs[0] == (ns, ref)


def expired_held(
    held: list[dict] | None, ns: str, ref: str, before: int, wall_before: int | None = None
) -> list[dict]:
    """The held messages at ``ref`` that expire at cutoff ``before`` (event time, ms).

    Those held (``held_at``: the event time its partition had seen then; else the event's
    own time) before it (never an unmatched contact's) and, given ``wall_before``, also
    held (``held_wall``) before that wall-clock time: the copy where their chain starts,
    and copies that only watch for a stronger reference of an event already applied
    (:func:`mark_held`; they go silently).

    Event time alone is not enough: a reference partition's clock runs ahead of the
    customer events whose binds would release what it holds whenever the join works through
    a backlog (the two travel through different topics), so a replay or a catch-up would
    dead-letter events that were about to join.
    """
    out = []
    for m in held or ():
        # an unmatched contact waits for its case (streams/domain/unmatched.py)
        if m.get("unmatched"):
            continue
        held_at = m.get("held_at", m["event"]["occurred_at"])
        if held_at >= before:
            continue
        if not (m.get("placed_on") or chain_starts_at(ns, ref, m)):
            continue
        if wall_before is not None and m.get("held_wall", held_at) >= wall_before:
            continue
        out.append(m)
    return out


def held_expiry(
    rows: Iterable[tuple[str, str, list[dict]]],
    clock: Callable[[str, str], int | None],
    hold_max_ms: int,
    wall_now_ms: int | None = None,
) -> list[tuple[str, str, int]]:
    """``(ns, ref, before)`` for every held row with something to expire.

    ``clock(ns, ref)`` is the event time seen by the partition of ``ref`` (None: nothing
    seen yet, nothing expires); ``before`` is that minus ``hold_max_ms``. Given
    ``wall_now_ms``, an event must also have been held that long by the wall clock.

    >>> m = {"kind": "shipment", "event": {"order_id": "o-1", "occurred_at": 0}}
    >>> held_expiry([("order", "o-1", [m])], lambda ns, ref: 10, 5)
    [('order', 'o-1', 5)]
    >>> held_expiry([("order", "o-1", [{**m, "held_wall": 8}])], lambda ns, ref: 10, 5, 10)
    []
    """
    wall_before = None if wall_now_ms is None else wall_now_ms - hold_max_ms
    out = []
    for ns, ref, waiting in rows:
        now = clock(ns, ref)
        if now is None:
            continue
        before = now - hold_max_ms
        if expired_held(waiting, ns, ref, before, wall_before):
            out.append((ns, ref, before))
    return out


def never_known_reason(message: dict, hold_max_s: int) -> str:
    """The dead letter reason of a held event that expired, naming what it waited for."""
    refs = route(message["kind"], message["event"]).refs
    names = "/".join(f"{REF_NAMES[ns]} {ref}" for ns, ref in refs)
    return (
        f"no customer ever became known for {names} within {hold_max_s} s of event time "
        "(KEEL_HOLD_MAX_S); replay it once one is known"
    )
