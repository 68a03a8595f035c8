"""Hypothesis strategies for input-event histories (docs/contract.md §3).

Shared by the unit, oracle and integration tests. Ids come from small alphabets and timestamps
from a coarse grid so that collisions and ``occurred_at`` ties happen often; event ids are fresh
UUIDs, unique within a history. Every event is valid per the contract: all fields present
(nullable ones possibly None), enums from the contract, ``occurred_at`` as epoch milliseconds.
Who owns what is fixed per history (an order belongs to one customer, a shipment to one order,
a contact to one customer, an e-mail or phone to one customer), as in real data, so the joins
have one right answer. :func:`signal_histories` leans the same histories towards what
docs/contract.md §6 looks for: repeated baskets, LOST-then-DELIVERED shipments, complaints,
repeat contacts.

    @given(histories(customers=("c-1",)))
    def test_something(history: list[tuple[str, dict]]) -> None: ...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

Event = dict[str, Any]
KindEvent = tuple[str, Event]

BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MINUTE_MS = 60_000

ORDER_TYPES = ("PLACED", "AMENDED", "CANCELLED", "COMPLETED")
SALES_CHANNELS = ("WEB", "PHONE", "STORE", "PARTNER")
SHIPMENT_TYPES = (
    "CREATED",
    "DISPATCHED",
    "IN_TRANSIT",
    "DELAYED",
    "OUT_FOR_DELIVERY",
    "DELIVERED",
    "LOST",
    "RETURNED",
)
CONTACT_TYPES = ("OPENED", "NOTE_ADDED", "ESCALATED", "RESOLVED", "REOPENED")
CONTACT_CHANNELS = ("PHONE", "EMAIL", "CHAT", "WEB", "SOCIAL", "LETTER", "STORE")
CONTACT_KINDS = ("QUESTION", "REQUEST", "COMPLAINT", "COMPLIMENT", "IDEA")

event_ids = st.uuids().map(str)


def timestamps(steps: int = 12, step_ms: int = MINUTE_MS) -> st.SearchStrategy[int]:
    """``BASE_MS + k * step_ms`` for k in [0, steps]: few values, so ties are common."""
    return st.integers(0, steps).map(lambda k: BASE_MS + k * step_ms)


def emails_of(customer_id: str) -> tuple[str, ...]:
    """Spellings of a customer's e-mails; the first two normalise to the same address."""
    return (
        f" {customer_id.upper()}@Example.COM",
        f"{customer_id}@example.com",
        f"{customer_id}.alt@example.org",
    )


def phones_of(customer_id: str) -> tuple[str, ...]:
    """Spellings of a customer's phones; the first two normalise alike, the last to nothing.

    The digits encode the whole id (three per character), so no two customers share a phone.
    """
    digits = "".join(f"{ord(c):03d}" for c in customer_id)
    return (f"+49 170 {digits}", f"+49-170-{digits}", f"0170 {digits}", "n/a")


def order_lines() -> st.SearchStrategy[list[dict[str, Any]]]:
    line = st.fixed_dictionaries(
        {
            "sku": st.sampled_from(("SKU-A", "SKU-B", "SKU-C")),
            "quantity": st.integers(1, 3),
            "unit_price_cents": st.sampled_from((499, 1999, 5000)),
        }
    )
    return st.lists(line, min_size=1, max_size=3, unique_by=lambda x: x["sku"])


def _line(sku: str, quantity: int, unit_price_cents: int = 1999) -> dict[str, Any]:
    return {"sku": sku, "quantity": quantity, "unit_price_cents": unit_price_cents}


# Baskets that DUPLICATE_ORDER must see as the same lines (sku -> total quantity) although they
# are written differently (split lines, other prices, other order), and one that differs.
SAME_BASKETS = (
    [_line("SKU-A", 2)],
    [_line("SKU-A", 1, 499), _line("SKU-A", 1, 5000)],
    [_line("SKU-A", 1), _line("SKU-B", 1)],
    [_line("SKU-B", 1, 499), _line("SKU-A", 1)],
    [_line("SKU-B", 2)],
)


def duplicate_prone_lines() -> st.SearchStrategy[list[dict[str, Any]]]:
    """Order lines that often equal another order's (as sku -> quantity), sometimes anything."""
    return st.sampled_from(SAME_BASKETS) | order_lines()


@st.composite
def order_events(
    draw: st.DrawFn,
    order_id: str,
    customer_id: str,
    at: st.SearchStrategy[int] | None = None,
    lines: st.SearchStrategy[list[dict[str, Any]]] | None = None,
) -> Event:
    items = draw(lines if lines is not None else order_lines())
    return {
        "event_id": draw(event_ids),
        "occurred_at": draw(at if at is not None else timestamps()),
        "source": draw(st.sampled_from(("webshop", "erp"))),
        "type": draw(st.sampled_from(ORDER_TYPES)),
        "order_id": order_id,
        "customer_id": customer_id,
        "channel": draw(st.sampled_from(SALES_CHANNELS)),
        "items": items,
        "total_cents": sum(i["quantity"] * i["unit_price_cents"] for i in items),
        "currency": "EUR",
        "promised_by": draw(st.none() | (at if at is not None else timestamps())),
        "customer_name": draw(st.none() | st.sampled_from(("Ann Smith", "A. Smith"))),
        "customer_email": draw(st.none() | st.sampled_from(emails_of(customer_id))),
        "customer_phone": draw(st.none() | st.sampled_from(phones_of(customer_id))),
    }


@st.composite
def shipment_events(
    draw: st.DrawFn,
    shipment_id: str,
    order_id: str,
    other_shipments: tuple[str, ...] = (),
    at: st.SearchStrategy[int] | None = None,
    types: Sequence[str] = SHIPMENT_TYPES,
) -> Event:
    carrier = draw(st.sampled_from(("dhl", "ups")))
    replaces = st.sampled_from(other_shipments) if other_shipments else st.nothing()
    return {
        "event_id": draw(event_ids),
        "occurred_at": draw(at if at is not None else timestamps()),
        "source": f"carrier-{carrier}",
        "type": draw(st.sampled_from(types)),
        "shipment_id": shipment_id,
        "order_id": order_id,
        "carrier": carrier,
        "tracking_number": draw(st.none() | st.sampled_from(("TRK-1", "TRK-2"))),
        "expected_by": draw(st.none() | (at if at is not None else timestamps())),
        "replaces_shipment_id": draw(st.none() | replaces),
        "note": draw(st.none() | st.just("left at the door")),
    }


@st.composite
def contact_events(
    draw: st.DrawFn,
    contact_id: str,
    customer_id: str,
    order_id: str | None = None,
    at: st.SearchStrategy[int] | None = None,
    kinds: Sequence[str] = CONTACT_KINDS,
    types: Sequence[str] = CONTACT_TYPES,
    other: str | None = None,
) -> Event:
    """A contact event; each identity field may be missing, as the contact centre sends them.

    With ``other``, its identifiers conflict: it never names its customer, always carries
    ``order_id`` (the customer's order, when there is one) and the e-mail or phone, if any,
    of customer ``other``. The contract says the order wins; without a known order, the
    e-mail, then the phone.
    """
    if other is not None:
        event = draw(contact_events(contact_id, customer_id, order_id, at, kinds, types))
        return {
            **event,
            "customer_id": None,
            "order_id": order_id,
            "email": draw(st.none() | st.sampled_from(emails_of(other))),
            "phone": draw(st.none() | st.sampled_from(phones_of(other))),
        }
    return {
        "event_id": draw(event_ids),
        "occurred_at": draw(at if at is not None else timestamps()),
        "source": draw(st.sampled_from(("callcenter", "chat"))),
        "type": draw(st.sampled_from(types)),
        "contact_id": contact_id,
        "channel": draw(st.sampled_from(CONTACT_CHANNELS)),
        "kind": draw(st.sampled_from(kinds)),
        "customer_id": draw(st.none() | st.just(customer_id)),
        "email": draw(st.none() | st.sampled_from(emails_of(customer_id))),
        "phone": draw(st.none() | st.sampled_from(phones_of(customer_id))),
        "order_id": draw(st.none() | st.just(order_id)) if order_id else None,
        "topic": draw(st.none() | st.sampled_from(("delivery", "billing", "product"))),
        "agent": draw(st.none() | st.sampled_from(("ann", "bo"))),
        "note": draw(st.none() | st.sampled_from(("called back", "refund issued", "angry"))),
    }


@st.composite
def histories(
    draw: st.DrawFn,
    customers: tuple[str, ...] = ("c-1", "c-2"),
    orders: tuple[str, ...] = ("o-1", "o-2", "o-3"),
    shipments: tuple[str, ...] = ("s-1", "s-2", "s-3"),
    contacts: tuple[str, ...] = ("k-1", "k-2"),
    max_events: int = 30,
    at: st.SearchStrategy[int] | None = None,
    min_events: int = 1,
    lines: st.SearchStrategy[list[dict[str, Any]]] | None = None,
    shipment_types: Sequence[str] = SHIPMENT_TYPES,
    contact_kinds: Sequence[str] = CONTACT_KINDS,
    contact_types: Sequence[str] = CONTACT_TYPES,
    conflicting: tuple[str, ...] = (),
) -> list[KindEvent]:
    """A list of ``(kind, event)`` with unique event ids, kind in order/shipment/contact.

    ``lines``, ``shipment_types``, ``contact_kinds`` and ``contact_types`` narrow what the
    events carry (a type listed twice is drawn twice as often); by default anything the
    contract allows. The contacts named in ``conflicting`` carry identifiers of two
    customers (:func:`contact_events` ``other``): their order's, and another's e-mail/phone.
    """
    owner = {o: draw(st.sampled_from(customers)) for o in orders}
    shipment_order = {s: draw(st.sampled_from(orders)) for s in shipments}
    contact_owner = {k: draw(st.sampled_from(customers)) for k in contacts}
    contact_order: dict[str, str | None] = {}
    contact_other: dict[str, str | None] = {}
    for k in contacts:
        own = [o for o in orders if owner[o] == contact_owner[k]]
        if k in conflicting:
            others = [c for c in customers if c != contact_owner[k]]
            contact_other[k] = draw(st.sampled_from(others)) if others else None
            contact_order[k] = draw(st.sampled_from(own)) if own else None
        else:
            contact_other[k] = None
            contact_order[k] = draw(st.none() | st.sampled_from(own)) if own else None
    one = st.one_of(
        st.sampled_from(orders).flatmap(
            lambda o: order_events(o, owner[o], at, lines).map(lambda e: ("order", e))
        ),
        st.sampled_from(shipments).flatmap(
            lambda s: shipment_events(
                s, shipment_order[s], tuple(x for x in shipments if x != s), at, shipment_types
            ).map(lambda e: ("shipment", e))
        ),
        st.sampled_from(contacts).flatmap(
            lambda k: contact_events(
                k, contact_owner[k], contact_order[k], at, contact_kinds, contact_types,
                contact_other[k],
            ).map(lambda e: ("contact", e))
        ),
    )
    return draw(
        st.lists(
            one, min_size=min_events, max_size=max_events, unique_by=lambda ke: ke[1]["event_id"]
        )
    )


def signal_histories(
    customers: tuple[str, ...] = ("c-1", "c-2"), min_events: int = 12, max_events: int = 40
) -> st.SearchStrategy[list[KindEvent]]:
    """Histories where every docs/contract.md §6 rule fires and clears often, on the minute grid.

    Baskets repeat (DUPLICATE_ORDER), LOST and DELIVERED are frequent shipment types
    (LOST_SHIPMENT_DELIVERED), half the contacts are complaints (COMPLAINT_UNRESOLVED), more
    contacts make two about one order or topic likely (REPEAT_CONTACT), and contacts are often
    resolved (what clears most of them). Pair them with
    windows of a few minutes so deadlines fall inside the 12-minute span of the events.
    """
    return histories(
        customers=customers,
        contacts=("k-1", "k-2", "k-3", "k-4"),
        max_events=max_events,
        min_events=min_events,
        lines=duplicate_prone_lines(),
        shipment_types=(*SHIPMENT_TYPES, "LOST", "DELIVERED", "DELIVERED"),
        contact_kinds=("COMPLAINT", "COMPLAINT", "QUESTION", "REQUEST"),
        contact_types=(*CONTACT_TYPES, "RESOLVED", "RESOLVED"),
    )


def lost_parcel_histories() -> st.SearchStrategy[list[KindEvent]]:
    """One customer's order o-1, its parcels going LOST and DELIVERED, contacts all about it.

    LOST_SHIPMENT_DELIVERED needs three things to meet (a LOST, a later DELIVERED, a contact
    about the same order resolved after that); this makes them meet often enough to test
    both its raise and its clear.
    """
    return histories(
        customers=("c-1",),
        orders=("o-1",),
        shipments=("s-1", "s-2"),
        contacts=("k-1", "k-2", "k-3"),
        min_events=8,
        max_events=20,
        shipment_types=("LOST", "DELIVERED"),
        contact_types=("OPENED", "RESOLVED", "RESOLVED", "REOPENED"),
    ).map(lambda h: [(k, {**e, "order_id": "o-1"} if k == "contact" else e) for k, e in h])


@st.composite
def with_retimed_resends(
    draw: st.DrawFn, history: Sequence[KindEvent], at: st.SearchStrategy[int] | None = None
) -> list[KindEvent]:
    """``history`` with some events sent again under the same ``event_id`` but another
    ``occurred_at`` (a department that re-stamps a retried event), shuffled."""
    picked = draw(st.lists(st.sampled_from(history), max_size=8)) if history else []
    stamps = at if at is not None else timestamps()
    resent = [(kind, {**event, "occurred_at": draw(stamps)}) for kind, event in picked]
    return draw(st.permutations([*history, *resent]))


def conflicting_histories(max_events: int = 30) -> st.SearchStrategy[list[KindEvent]]:
    """Three customers; two of four contacts carry one customer's order and another's
    e-mail or phone (docs/contract.md §4: the order wins, whatever arrives first)."""
    return histories(
        customers=("c-1", "c-2", "c-3"),
        orders=("o-1", "o-2", "o-3", "o-4"),
        contacts=("k-1", "k-2", "k-3", "k-4"),
        conflicting=("k-1", "k-2"),
        max_events=max_events,
    )


DAY_MS = 86_400_000


@st.composite
def with_days_late(draw: st.DrawFn, history: Sequence[KindEvent]) -> list[KindEvent]:
    """``history`` with some events dated one to three days earlier: sent days after they
    happened (a department's backlog), so they arrive after much later events."""
    late = draw(st.sets(st.sampled_from(range(len(history))), max_size=4)) if history else set()
    out = []
    for i, (kind, event) in enumerate(history):
        if i in late:
            days = draw(st.integers(1, 3))
            event = {**event, "occurred_at": event["occurred_at"] - days * DAY_MS}
        out.append((kind, event))
    return out
