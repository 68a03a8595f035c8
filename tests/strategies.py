"""Hypothesis strategies for input-event histories (CONTRACT.md §3).

Shared by the unit, oracle and integration tests. Ids come from small alphabets and timestamps
from a coarse grid so that collisions and ``occurred_at`` ties happen often; event ids are fresh
UUIDs, unique within a history. Every event is valid per the contract: all fields present
(nullable ones possibly None), enums from the contract, ``occurred_at`` as epoch milliseconds.
Who owns what is fixed per history (an order belongs to one customer, a shipment to one order,
a contact to one customer), as in real data, so the joins have one right answer.

    @given(histories(customers=("c-1",)))
    def test_something(history: list[tuple[str, dict]]) -> None: ...
"""

from __future__ import annotations

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
    """Spellings of a customer's phones; the first two normalise alike, the last to nothing."""
    digits = "".join(str(ord(c) % 10) for c in customer_id)
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


@st.composite
def order_events(
    draw: st.DrawFn, order_id: str, customer_id: str, at: st.SearchStrategy[int] | None = None
) -> Event:
    items = draw(order_lines())
    return {
        "event_id": draw(event_ids),
        "occurred_at": draw(at or timestamps()),
        "source": draw(st.sampled_from(("webshop", "erp"))),
        "type": draw(st.sampled_from(ORDER_TYPES)),
        "order_id": order_id,
        "customer_id": customer_id,
        "channel": draw(st.sampled_from(SALES_CHANNELS)),
        "items": items,
        "total_cents": sum(i["quantity"] * i["unit_price_cents"] for i in items),
        "currency": "EUR",
        "promised_by": draw(st.none() | (at or timestamps())),
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
) -> Event:
    carrier = draw(st.sampled_from(("dhl", "ups")))
    replaces = st.sampled_from(other_shipments) if other_shipments else st.nothing()
    return {
        "event_id": draw(event_ids),
        "occurred_at": draw(at or timestamps()),
        "source": f"carrier-{carrier}",
        "type": draw(st.sampled_from(SHIPMENT_TYPES)),
        "shipment_id": shipment_id,
        "order_id": order_id,
        "carrier": carrier,
        "tracking_number": draw(st.none() | st.sampled_from(("TRK-1", "TRK-2"))),
        "expected_by": draw(st.none() | (at or timestamps())),
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
) -> Event:
    """A contact event; each identity field may be missing, as the contact centre sends them."""
    return {
        "event_id": draw(event_ids),
        "occurred_at": draw(at or timestamps()),
        "source": draw(st.sampled_from(("callcenter", "chat"))),
        "type": draw(st.sampled_from(CONTACT_TYPES)),
        "contact_id": contact_id,
        "channel": draw(st.sampled_from(CONTACT_CHANNELS)),
        "kind": draw(st.sampled_from(CONTACT_KINDS)),
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
) -> list[KindEvent]:
    """A list of ``(kind, event)`` with unique event ids, kind in order/shipment/contact."""
    owner = {o: draw(st.sampled_from(customers)) for o in orders}
    shipment_order = {s: draw(st.sampled_from(orders)) for s in shipments}
    contact_owner = {k: draw(st.sampled_from(customers)) for k in contacts}
    contact_order: dict[str, str | None] = {}
    for k in contacts:
        own = [o for o in orders if owner[o] == contact_owner[k]]
        contact_order[k] = draw(st.none() | st.sampled_from(own)) if own else None
    one = st.one_of(
        st.sampled_from(orders).flatmap(
            lambda o: order_events(o, owner[o], at).map(lambda e: ("order", e))
        ),
        st.sampled_from(shipments).flatmap(
            lambda s: shipment_events(
                s, shipment_order[s], tuple(x for x in shipments if x != s), at
            ).map(lambda e: ("shipment", e))
        ),
        st.sampled_from(contacts).flatmap(
            lambda k: contact_events(k, contact_owner[k], contact_order[k], at).map(
                lambda e: ("contact", e)
            )
        ),
    )
    return draw(
        st.lists(one, min_size=1, max_size=max_events, unique_by=lambda ke: ke[1]["event_id"])
    )
