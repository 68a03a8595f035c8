"""The merge of events into a customer's state (docs/contract.md §5), as a desk would read it."""

from __future__ import annotations

import copy
import itertools
import uuid
from collections import defaultdict
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain.identity import normalize_email, normalize_phone
from streams.domain.state import DEFAULT_LIMITS, Limits, apply_event, empty_state, view
from tests.strategies import (
    BASE_MS,
    CONTACT_CHANNELS,
    CONTACT_KINDS,
    CONTACT_TYPES,
    MINUTE_MS,
    ORDER_TYPES,
    SALES_CHANNELS,
    SHIPMENT_TYPES,
    KindEvent,
    histories,
)

T0 = BASE_MS
MIN = MINUTE_MS
CID = "c-1"

_serial = itertools.count()


def _event_id(event_id: str | None) -> str:
    return event_id or f"e-{next(_serial):06d}"


def order(type_: str = "PLACED", at: int = T0, event_id: str | None = None, **fields: Any) -> dict:
    event = {
        "event_id": _event_id(event_id),
        "occurred_at": at,
        "source": "webshop",
        "type": type_,
        "order_id": "o-1",
        "customer_id": CID,
        "channel": "WEB",
        "items": [{"sku": "SKU-A", "quantity": 2, "unit_price_cents": 1000}],
        "total_cents": 2000,
        "currency": "EUR",
        "promised_by": None,
        "customer_name": None,
        "customer_email": None,
        "customer_phone": None,
    }
    return event | fields


def shipment(
    type_: str = "CREATED", at: int = T0, event_id: str | None = None, **fields: Any
) -> dict:
    event = {
        "event_id": _event_id(event_id),
        "occurred_at": at,
        "source": "carrier-dhl",
        "type": type_,
        "shipment_id": "s-1",
        "order_id": "o-1",
        "carrier": "dhl",
        "tracking_number": None,
        "expected_by": None,
        "replaces_shipment_id": None,
        "note": None,
    }
    return event | fields


def contact(
    type_: str = "OPENED", at: int = T0, event_id: str | None = None, **fields: Any
) -> dict:
    event = {
        "event_id": _event_id(event_id),
        "occurred_at": at,
        "source": "callcenter",
        "type": type_,
        "contact_id": "k-1",
        "channel": "PHONE",
        "kind": "QUESTION",
        "customer_id": CID,
        "email": None,
        "phone": None,
        "order_id": None,
        "topic": None,
        "agent": None,
        "note": None,
    }
    return event | fields


def kind_of(event: dict) -> str:
    if "shipment_id" in event:
        return "shipment"
    return "contact" if "contact_id" in event else "order"


def build(*events: dict, limits: Limits = DEFAULT_LIMITS) -> dict:
    state = empty_state(CID)
    for i, event in enumerate(events):
        state, _ = apply_event(state, kind_of(event), event, now_ms=i, limits=limits)
    return state


def the_order(state: dict, order_id: str = "o-1") -> dict:
    return next(o for o in view(state)["orders"] if o["order_id"] == order_id)


def the_contact(state: dict, contact_id: str = "k-1") -> dict:
    return next(c for c in view(state)["contacts"] if c["contact_id"] == contact_id)


# --- the public shape -----------------------------------------------------------------------

CUSTOMER_KEYS = {
    "customer_id",
    "name",
    "emails",
    "phones",
    "orders",
    "contacts",
    "signals",
    "open_orders",
    "open_contacts",
    "total_spent_cents",
    "last_event_at",
    "updated_at",
    "version",
    "linked",
    "identity_guards",
}
ORDER_KEYS = {
    "order_id",
    "status",
    "channel",
    "placed_at",
    "updated_at",
    "total_cents",
    "currency",
    "items",
    "promised_by",
    "shipments",
}
SHIPMENT_KEYS = {
    "shipment_id",
    "status",
    "carrier",
    "tracking_number",
    "expected_by",
    "replaces_shipment_id",
    "updated_at",
}
CONTACT_KEYS = {
    "contact_id",
    "status",
    "channel",
    "kind",
    "topic",
    "order_id",
    "agent",
    "opened_at",
    "updated_at",
    "notes",
}


def test_empty_state_view() -> None:
    assert view(empty_state(CID)) == {
        "customer_id": CID,
        "name": None,
        "emails": [],
        "phones": [],
        "orders": [],
        "contacts": [],
        "signals": [],
        "open_orders": 0,
        "open_contacts": 0,
        "total_spent_cents": 0,
        "last_event_at": {},
        "updated_at": 0,
        "version": 0,
        "linked": [],
        "identity_guards": [],
    }


def test_view_has_exactly_the_contract_fields() -> None:
    state = build(
        order(promised_by=T0 + 9 * MIN),
        shipment(tracking_number="T-1"),
        contact(note="hello", agent="ann"),
    )
    v = view(state)
    assert set(v) == CUSTOMER_KEYS
    (o,) = v["orders"]
    assert set(o) == ORDER_KEYS
    assert o["items"] == [{"sku": "SKU-A", "quantity": 2, "unit_price_cents": 1000}]
    assert set(o["shipments"][0]) == SHIPMENT_KEYS
    assert set(v["contacts"][0]) == CONTACT_KEYS
    assert v["contacts"][0]["notes"] == [{"at": T0, "agent": "ann", "text": "hello"}]


# --- orders ---------------------------------------------------------------------------------


def test_order_fields_come_from_its_latest_event() -> None:
    state = build(
        order("AMENDED", T0 + 2 * MIN, channel="PHONE", total_cents=500, currency="USD"),
        order("PLACED", T0, channel="WEB"),  # late, older: must not roll back
    )
    o = the_order(state)
    assert (o["status"], o["channel"], o["total_cents"], o["currency"]) == (
        "AMENDED",
        "PHONE",
        500,
        "USD",
    )
    assert o["placed_at"] == T0
    assert o["updated_at"] == T0 + 2 * MIN


def test_order_ties_on_occurred_at_go_to_the_greater_event_id() -> None:
    a = order("COMPLETED", T0, event_id="a")
    b = order("CANCELLED", T0, event_id="b")
    assert the_order(build(a, b))["status"] == "CANCELLED"
    assert the_order(build(b, a))["status"] == "CANCELLED"


def test_order_items_follow_the_latest_event() -> None:
    lines = [{"sku": "SKU-B", "quantity": 1, "unit_price_cents": 300}]
    state = build(order("AMENDED", T0 + MIN, items=lines, total_cents=300), order("PLACED", T0))
    assert the_order(state)["items"] == lines


def test_promised_by_keeps_the_latest_non_null_value() -> None:
    state = build(
        order("PLACED", T0, promised_by=T0 + 10 * MIN),
        order("AMENDED", T0 + 2 * MIN, promised_by=T0 + 20 * MIN),
        order("AMENDED", T0 + 3 * MIN, promised_by=None),  # does not clear
        order("AMENDED", T0 + MIN, promised_by=T0 + 99 * MIN),  # older: does not win
    )
    assert the_order(state)["promised_by"] == T0 + 20 * MIN
    assert the_order(state)["status"] == "AMENDED"


def test_placed_at_falls_back_to_the_earliest_event_until_placed_arrives() -> None:
    state = build(order("COMPLETED", T0 + 5 * MIN), order("AMENDED", T0 + 3 * MIN))
    assert the_order(state)["placed_at"] == T0 + 3 * MIN
    state = build(order("PLACED", T0 + 4 * MIN), order("PLACED", T0 + 1 * MIN))
    assert the_order(state)["placed_at"] == T0 + 4 * MIN  # the latest PLACED


def test_orders_are_sorted_by_placed_at_then_id() -> None:
    state = build(
        order(at=T0 + MIN, order_id="o-a"),
        order(at=T0, order_id="o-z"),
        order(at=T0 + MIN, order_id="o-0"),
    )
    assert [o["order_id"] for o in view(state)["orders"]] == ["o-z", "o-0", "o-a"]


def test_counts_and_total_spent() -> None:
    state = build(
        order("PLACED", order_id="o-1", total_cents=100),
        order("AMENDED", order_id="o-2", total_cents=200),
        order("COMPLETED", order_id="o-3", total_cents=400),
        order("CANCELLED", order_id="o-4", total_cents=800),
    )
    v = view(state)
    assert (v["open_orders"], v["total_spent_cents"]) == (2, 700)


def test_customer_name_is_the_latest_non_null() -> None:
    state = build(
        order(at=T0 + 2 * MIN, customer_name="Ann Smith"),
        order(at=T0 + 3 * MIN, customer_name=None),
        order(at=T0 + MIN, customer_name="A. Smith"),
    )
    assert view(state)["name"] == "Ann Smith"


def test_emails_and_phones_are_normalised_unique_and_sorted() -> None:
    state = build(
        order(customer_email=" Ann@Example.COM ", customer_phone="+49 (170) 12-34"),
        order(customer_email="ann@example.com", customer_phone="+4917012 34"),
        order(customer_email="zed@x.org", customer_phone="n/a"),
        contact(email="Bob@X.org", phone="0170 99"),
        contact(customer_id=None, email="stranger@x.org", phone="555"),  # not known as ours
        contact(customer_id="c-other", email="other@x.org", phone="666"),
    )
    v = view(state)
    assert v["emails"] == ["ann@example.com", "bob@x.org", "zed@x.org"]
    assert v["phones"] == ["+491701234", "017099"]


def test_last_event_at_is_the_latest_per_source() -> None:
    state = build(
        order(at=T0 + 5 * MIN),
        order(at=T0 + MIN, source="erp"),
        order(at=T0 + 2 * MIN),
        shipment(at=T0),
    )
    assert view(state)["last_event_at"] == {
        "webshop": T0 + 5 * MIN,
        "erp": T0 + MIN,
        "carrier-dhl": T0,
    }


# --- shipments ------------------------------------------------------------------------------


def test_a_late_in_transit_never_rolls_back_delivered() -> None:
    state = build(
        order(),
        shipment("DELIVERED", T0 + 5 * MIN, tracking_number="T-2"),
        shipment("IN_TRANSIT", T0 + 2 * MIN, tracking_number="T-1", expected_by=T0 + 9 * MIN),
    )
    (s,) = the_order(state)["shipments"]
    assert s == {
        "shipment_id": "s-1",
        "status": "DELIVERED",
        "carrier": "dhl",
        "tracking_number": "T-2",
        "expected_by": T0 + 9 * MIN,
        "replaces_shipment_id": None,
        "updated_at": T0 + 5 * MIN,
    }


def test_shipment_carrier_comes_from_the_latest_event() -> None:
    state = build(
        order(),
        shipment("DISPATCHED", T0 + MIN, carrier="ups"),
        shipment("CREATED", T0, carrier="dhl", replaces_shipment_id="s-0"),
    )
    (s,) = the_order(state)["shipments"]
    assert (s["carrier"], s["replaces_shipment_id"]) == ("ups", "s-0")


def test_a_shipment_before_its_order_waits_and_then_shows() -> None:
    state = build(shipment("DISPATCHED"))
    assert view(state)["orders"] == []
    state, changed = apply_event(state, "order", order(), now_ms=1)
    assert changed
    assert [s["shipment_id"] for s in the_order(state)["shipments"]] == ["s-1"]


def test_shipments_sorted_by_first_event_then_id() -> None:
    state = build(
        order(),
        shipment(at=T0 + MIN, shipment_id="s-b"),
        shipment(at=T0 + 2 * MIN, shipment_id="s-a"),
        shipment(at=T0 + MIN, shipment_id="s-c"),
        shipment(at=T0, shipment_id="s-a", type_="CREATED"),
    )
    shipments = the_order(state)["shipments"]
    assert [s["shipment_id"] for s in shipments] == ["s-a", "s-b", "s-c"]


def test_shipment_keeps_lost_and_delivered_times_for_signals() -> None:
    state = build(
        shipment("LOST", T0 + 3 * MIN),
        shipment("LOST", T0 + 2 * MIN),
        shipment("DELIVERED", T0 + 4 * MIN),
        shipment("RETURNED", T0 + 6 * MIN),
    )
    stored = state["_shipments"]["s-1"]
    assert (stored["lost"], stored["delivered"], stored["returned"]) == (
        T0 + 2 * MIN,
        T0 + 4 * MIN,
        T0 + 6 * MIN,
    )


# --- contacts -------------------------------------------------------------------------------


def test_contact_is_resolved_iff_its_latest_event_is_resolved() -> None:
    opened = contact("OPENED", T0)
    resolved = contact("RESOLVED", T0 + MIN)
    reopened = contact("REOPENED", T0 + 2 * MIN)
    assert the_contact(build(opened, resolved))["status"] == "RESOLVED"
    assert the_contact(build(resolved, opened))["status"] == "RESOLVED"
    assert the_contact(build(reopened, opened, resolved))["status"] == "OPEN"
    assert view(build(opened, resolved))["open_contacts"] == 0
    assert view(build(opened))["open_contacts"] == 1


def test_contact_fields() -> None:
    state = build(
        contact("OPENED", T0, kind="COMPLAINT", topic="delivery", order_id="o-1", agent="ann"),
        contact("ESCALATED", T0 + 2 * MIN, channel="EMAIL", kind="REQUEST", agent="bo"),
        contact("NOTE_ADDED", T0 + 3 * MIN, kind="REQUEST"),  # no order_id: stays attached
        contact("NOTE_ADDED", T0 - MIN, topic="billing"),  # older topic: does not win
    )
    c = the_contact(state)
    assert c == {
        "contact_id": "k-1",
        "status": "OPEN",
        "channel": "PHONE",
        "kind": "REQUEST",
        "topic": "delivery",
        "order_id": "o-1",
        "agent": "bo",
        "opened_at": T0,
        "updated_at": T0 + 3 * MIN,
        "notes": [],
    }


def test_opened_at_falls_back_to_the_earliest_event_until_opened_arrives() -> None:
    state = build(contact("NOTE_ADDED", T0 + 4 * MIN), contact("ESCALATED", T0 + 2 * MIN))
    assert the_contact(state)["opened_at"] == T0 + 2 * MIN
    state = build(contact("OPENED", T0 + 3 * MIN), contact("OPENED", T0 + 1 * MIN))
    assert the_contact(state)["opened_at"] == T0 + 3 * MIN


def test_contacts_are_sorted_by_opened_at_then_id() -> None:
    state = build(
        contact(at=T0 + MIN, contact_id="k-b"),
        contact(at=T0 + MIN, contact_id="k-a"),
        contact(at=T0, contact_id="k-c"),
    )
    assert [c["contact_id"] for c in view(state)["contacts"]] == ["k-c", "k-a", "k-b"]


def test_notes_are_ordered_by_time_newest_last_and_never_doubled() -> None:
    second = contact("NOTE_ADDED", T0 + 2 * MIN, event_id="b", note="second", agent="bo")
    state = build(
        contact("OPENED", T0, note="first", agent="ann"),
        second,
        contact("NOTE_ADDED", T0 + 2 * MIN, event_id="a", note="tie: smaller id first"),
        second,
        contact("ESCALATED", T0 + 3 * MIN),  # no note
    )
    assert the_contact(state)["notes"] == [
        {"at": T0, "agent": "ann", "text": "first"},
        {"at": T0 + 2 * MIN, "agent": None, "text": "tie: smaller id first"},
        {"at": T0 + 2 * MIN, "agent": "bo", "text": "second"},
    ]


def test_only_the_newest_notes_are_kept() -> None:
    notes = [contact("NOTE_ADDED", T0 + i * MIN, note=f"n{i}") for i in range(8)]
    state = build(*reversed(notes), limits=Limits(max_notes=3))
    assert [n["text"] for n in the_contact(state)["notes"]] == ["n5", "n6", "n7"]
    again, changed = apply_event(state, "contact", notes[0], now_ms=99, limits=Limits(max_notes=3))
    assert not changed and again is state


# --- change tracking ------------------------------------------------------------------------


def test_a_change_bumps_version_and_updated_at() -> None:
    state = empty_state(CID)
    state, changed = apply_event(state, "order", order(), now_ms=123)
    assert changed and (state["version"], state["updated_at"]) == (1, 123)
    state, changed = apply_event(state, "order", order("COMPLETED", T0 + MIN), now_ms=456)
    assert changed and (state["version"], state["updated_at"]) == (2, 456)


def test_a_duplicate_or_stale_event_changes_nothing() -> None:
    placed = order("PLACED", T0, promised_by=T0 + MIN)
    state = build(placed, order("AMENDED", T0 + 5 * MIN, promised_by=T0 + 2 * MIN))
    for event in (placed, order("AMENDED", T0 + MIN)):  # a re-sent event; an outdated one
        after, changed = apply_event(state, "order", event, now_ms=999)
        assert not changed and after is state


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown event kind"):
        apply_event(empty_state(CID), "invoice", order(), now_ms=0)


# --- retention ------------------------------------------------------------------------------


def test_retention_keeps_open_orders_and_the_most_recent_closed_ones() -> None:
    state = build(
        order("PLACED", T0, order_id="o-open"),
        order("COMPLETED", T0 + 1 * MIN, order_id="o-old"),
        shipment(order_id="o-old", shipment_id="s-old"),
        order("CANCELLED", T0 + 3 * MIN, order_id="o-new"),
        order("COMPLETED", T0 + 2 * MIN, order_id="o-mid"),
        limits=Limits(keep_closed=2),
    )
    assert sorted(o["order_id"] for o in view(state)["orders"]) == ["o-mid", "o-new", "o-open"]
    assert state["_shipments"] == {}  # went with its order


def test_retention_keeps_open_contacts_and_the_most_recent_resolved_ones() -> None:
    state = build(
        contact("OPENED", T0, contact_id="k-open"),
        contact("RESOLVED", T0 + 2 * MIN, contact_id="k-new"),
        contact("RESOLVED", T0 + 1 * MIN, contact_id="k-old"),
        limits=Limits(keep_closed=1),
    )
    assert [c["contact_id"] for c in view(state)["contacts"]] == ["k-open", "k-new"]


def test_limits_must_not_be_negative() -> None:
    with pytest.raises(ValueError):
        Limits(keep_closed=-1)


# --- size -----------------------------------------------------------------------------------


def test_a_typical_customer_stays_under_3_kb() -> None:
    events: list[dict] = []
    for n in range(3):
        o, s, at = f"ORD-2026-{n:06d}", f"SHP-2026-{n:06d}", T0 + n * 60 * MIN
        lines = [
            {"sku": "SKU-10023", "quantity": 1, "unit_price_cents": 2499},
            {"sku": "SKU-20077", "quantity": 2, "unit_price_cents": 999},
        ]
        # the shop sends its whole order each time
        whole = dict(
            order_id=o,
            items=lines,
            promised_by=at + 3 * 1440 * MIN,
            customer_name="Ann Smith",
            customer_email="ann@example.com",
        )
        events += [order("PLACED", at, **whole), order("COMPLETED", at + 2880 * MIN, **whole)]
        for k, type_ in enumerate(("CREATED", "DISPATCHED", "IN_TRANSIT", "DELIVERED")):
            events.append(
                shipment(
                    type_,
                    at + (k + 1) * 600 * MIN,
                    order_id=o,
                    shipment_id=s,
                    tracking_number="00340434161094022115",
                    expected_by=at + 2880 * MIN,
                )
            )
    for n in range(2):
        k, at = f"CASE-{n:07d}", T0 + n * 1440 * MIN
        about = dict(contact_id=k, order_id="ORD-2026-000000", topic="delivery", agent="ann")
        events += [
            contact("OPENED", at, note="Customer asks where the parcel is.", **about),
            contact("NOTE_ADDED", at + 30 * MIN, note="Called the carrier.", **about),
            contact("RESOLVED", at + 60 * MIN, note="Parcel arrived.", **about),
        ]
    for e in events:
        e["event_id"] = str(uuid.uuid4())
    state = build(*events)
    assert len(view(state)["orders"]) == 3 and len(view(state)["contacts"]) == 2
    assert len(orjson.dumps(state)) < 3000


# --- properties: the state depends only on the set of events --------------------------------


def content(state: dict) -> dict:
    """The view without the two fields that depend on arrival."""
    v = view(state)
    del v["version"], v["updated_at"]
    return v


def apply_all(history: list[KindEvent], limits: Limits = DEFAULT_LIMITS) -> dict:
    state = empty_state(CID)
    for now, (kind, event) in enumerate(history):
        state, _ = apply_event(state, kind, event, now, limits)
    return state


one_customer = histories(customers=(CID,))


@settings(max_examples=200, deadline=None)
@given(one_customer, st.data())
def test_any_permutation_gives_the_same_state(
    history: list[KindEvent], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(history))
    assert content(apply_all(shuffled)) == content(apply_all(history))


@settings(max_examples=200, deadline=None)
@given(one_customer, st.data())
def test_duplicates_change_nothing(history: list[KindEvent], data: st.DataObject) -> None:
    extra = data.draw(st.lists(st.sampled_from(history), max_size=10))
    positions = data.draw(st.lists(st.integers(0, len(history)), min_size=len(extra)))
    with_dupes = list(history)
    for item, at in zip(extra, positions, strict=False):
        with_dupes.insert(at, item)
    assert content(apply_all(with_dupes)) == content(apply_all(history))


@settings(max_examples=200, deadline=None)
@given(one_customer, st.sampled_from((Limits(), Limits(keep_closed=1, max_notes=2))))
def test_each_event_applies_once_and_never_mutates_its_input(
    history: list[KindEvent], limits: Limits
) -> None:
    state = empty_state(CID)
    for now, (kind, event) in enumerate(history):
        before = copy.deepcopy(state)
        new, changed = apply_event(state, kind, event, now, limits)
        assert state == before  # the input is untouched
        assert new["version"] == state["version"] + changed
        again, changed_again = apply_event(new, kind, event, now + 1, limits)
        assert not changed_again and again is new
        assert orjson.loads(orjson.dumps(new)) == new  # survives the table's JSON
        state = new


@settings(max_examples=200, deadline=None)
@given(one_customer, st.integers(0, 2))
def test_retention_bounds_closed_entities(history: list[KindEvent], keep: int) -> None:
    v = view(apply_all(history, Limits(keep_closed=keep)))
    closed_orders = [o for o in v["orders"] if o["status"] in ("CANCELLED", "COMPLETED")]
    assert len(closed_orders) <= keep
    assert len([c for c in v["contacts"] if c["status"] == "RESOLVED"]) <= keep
    assert v["open_orders"] == len(v["orders"]) - len(closed_orders)


@settings(max_examples=200, deadline=None)
@given(one_customer)
def test_state_matches_the_rules_computed_from_the_set_of_events(
    history: list[KindEvent],
) -> None:
    assert content(apply_all(history)) == expected(history)


def expected(history: list[KindEvent]) -> dict:
    """docs/contract.md §5 computed naively from the set of events (no retention: few entities)."""

    def stamp(e: dict) -> tuple[int, str]:
        return e["occurred_at"], e["event_id"]

    def latest(evs: list[dict], name: str | None = None) -> Any:
        having = [e for e in evs if name is None or e[name] is not None]
        top = max(having, key=stamp, default=None)
        return top if name is None or top is None else top[name]

    def start(evs: list[dict], type_: str) -> int:
        marked = [e for e in evs if e["type"] == type_]
        return (max(marked, key=stamp) if marked else min(evs, key=stamp))["occurred_at"]

    by_kind: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for kind, e in history:
        key = {"order": "order_id", "shipment": "shipment_id", "contact": "contact_id"}[kind]
        by_kind[kind][e[key]].append(e)

    shipments: dict[str, list[tuple[int, str, dict]]] = defaultdict(list)
    for sid, evs in by_kind["shipment"].items():
        top = latest(evs)
        first = min(e["occurred_at"] for e in evs)
        shipments[top["order_id"]].append(
            (
                first,
                sid,
                {
                    "shipment_id": sid,
                    "status": top["type"],
                    "carrier": top["carrier"],
                    "tracking_number": latest(evs, "tracking_number"),
                    "expected_by": latest(evs, "expected_by"),
                    "replaces_shipment_id": latest(evs, "replaces_shipment_id"),
                    "updated_at": top["occurred_at"],
                },
            )
        )

    orders = []
    for oid, evs in by_kind["order"].items():
        top = latest(evs)
        orders.append(
            {
                "order_id": oid,
                "status": top["type"],
                "channel": top["channel"],
                "placed_at": start(evs, "PLACED"),
                "updated_at": top["occurred_at"],
                "total_cents": top["total_cents"],
                "currency": top["currency"],
                "items": top["items"],
                "promised_by": latest(evs, "promised_by"),
                "shipments": [s for *_, s in sorted(shipments[oid], key=lambda x: x[:2])],
            }
        )
    orders.sort(key=lambda o: (o["placed_at"], o["order_id"]))

    contacts = []
    for cid, evs in by_kind["contact"].items():
        top = latest(evs)
        notes = sorted((stamp(e), e["agent"], e["note"]) for e in evs if e["note"] is not None)
        contacts.append(
            {
                "contact_id": cid,
                "status": "RESOLVED" if top["type"] == "RESOLVED" else "OPEN",
                "channel": top["channel"],
                "kind": top["kind"],
                "topic": latest(evs, "topic"),
                "order_id": latest(evs, "order_id"),
                "agent": latest(evs, "agent"),
                "opened_at": start(evs, "OPENED"),
                "updated_at": top["occurred_at"],
                "notes": [{"at": s[0], "agent": a, "text": t} for s, a, t in notes[-20:]],
            }
        )
    contacts.sort(key=lambda c: (c["opened_at"], c["contact_id"]))

    order_events = [e for k, e in history if k == "order"]
    ours = [e for k, e in history if k == "contact" and e["customer_id"] == CID]
    emails = {normalize_email(e["customer_email"]) for e in order_events}
    emails |= {normalize_email(e["email"]) for e in ours}
    phones = {normalize_phone(e["customer_phone"]) for e in order_events}
    phones |= {normalize_phone(e["phone"]) for e in ours}
    last_event_at: dict[str, int] = {}
    for _, e in history:
        last_event_at[e["source"]] = max(last_event_at.get(e["source"], 0), e["occurred_at"])
    return {
        "customer_id": CID,
        "name": latest(order_events, "customer_name") if order_events else None,
        "emails": sorted(emails - {None}),  # type: ignore[type-var]
        "phones": sorted(phones - {None}),  # type: ignore[type-var]
        "orders": orders,
        "contacts": contacts,
        "signals": [],
        "open_orders": sum(o["status"] in ("PLACED", "AMENDED") for o in orders),
        "open_contacts": sum(c["status"] == "OPEN" for c in contacts),
        "total_spent_cents": sum(o["total_cents"] for o in orders if o["status"] != "CANCELLED"),
        "last_event_at": last_event_at,
        "linked": [],  # links come from identity records (tests/unit/test_links.py)
        "identity_guards": [],
    }


REQUIRED = {"event_id", "occurred_at", "source"}
FIELDS = {
    "order": REQUIRED
    | {"type", "order_id", "customer_id", "channel", "items", "total_cents", "currency"}
    | {"promised_by", "customer_name", "customer_email", "customer_phone"},
    "shipment": REQUIRED
    | {"type", "shipment_id", "order_id", "carrier", "tracking_number", "expected_by"}
    | {"replaces_shipment_id", "note"},
    "contact": REQUIRED
    | {"type", "contact_id", "channel", "kind", "customer_id", "email", "phone", "order_id"}
    | {"topic", "agent", "note"},
}
NON_NULL = {
    "order": REQUIRED | {"type", "order_id", "customer_id", "channel", "items", "total_cents"},
    "shipment": REQUIRED | {"type", "shipment_id", "order_id", "carrier"},
    "contact": REQUIRED | {"type", "contact_id", "channel", "kind"},
}
ENUMS = {
    ("order", "type"): ORDER_TYPES,
    ("order", "channel"): SALES_CHANNELS,
    ("shipment", "type"): SHIPMENT_TYPES,
    ("contact", "type"): CONTACT_TYPES,
    ("contact", "channel"): CONTACT_CHANNELS,
    ("contact", "kind"): CONTACT_KINDS,
}


@settings(max_examples=50, deadline=None)
@given(histories())
def test_generated_events_follow_the_contract(history: list[KindEvent]) -> None:
    """Later tests trust tests/strategies.py to produce only valid events."""
    assert len({e["event_id"] for _, e in history}) == len(history)
    for kind, event in history:
        assert set(event) == FIELDS[kind]
        assert all(event[f] is not None for f in NON_NULL[kind])
        assert isinstance(event["occurred_at"], int)
        for (k, f), symbols in ENUMS.items():
            assert k != kind or event[f] in symbols
        if kind == "order":
            assert event["items"] and all(
                set(line) == {"sku", "quantity", "unit_price_cents"} for line in event["items"]
            )


# --- a state bigger than Kafka takes (streams/domain/state.py bound) ------------------------------


def _long_history(contacts: int, notes: int, text: int, closed_orders: int = 0) -> dict:
    from tests.builders import contact, order

    state = empty_state("c-big")
    events = [
        order("c-big", f"o-{i}", "COMPLETED", at=T0 + i) for i in range(closed_orders)
    ] + [
        contact(f"k-{i}", at=T0 + 1000 + i * 100 + n, customer_id="c-big",
                event_id=f"e-{i}-{n}", note=f"{i}/{n} " + "x" * text)
        for i in range(contacts)
        for n in range(notes)
    ]  # fmt: skip
    for kind, event in events:
        state, _ = apply_event(state, kind, event, now_ms=0)
    return state


def test_a_state_over_the_limit_sheds_closed_then_notes_then_open_and_says_so() -> None:
    import orjson

    from streams.domain.bounding import bound

    state = _long_history(contacts=40, notes=10, text=3000, closed_orders=30)
    size = len(orjson.dumps(state))
    assert size > 1_000_000  # what Kafka would refuse as one record
    limit = 256 * 1024
    given = copy.deepcopy(state)
    cut = bound(state, limit)
    assert len(orjson.dumps(cut)) <= limit
    dropped = cut["_bounded"]["dropped"]
    assert dropped["closed"] == 30 and dropped["notes_cut"] > 0 and dropped["notes"] > 0
    assert not cut["_orders"] and cut["_contacts"], "open contacts go last"
    assert all(len(n[3]) <= 1001 for c in cut["_contacts"].values() for n in c["notes"])
    assert cut["_retired"]["order"].keys() == {f"o-{i}" for i in range(30)}
    assert state == given, "bound must not change the state it was given"
    assert bound(cut, limit) is cut  # under the limit: the very same state
    view(cut)  # still a state the public view takes


def test_only_a_state_over_the_limit_changes() -> None:
    from streams.domain.bounding import bound

    state = _long_history(contacts=3, notes=2, text=100)
    assert bound(state, 16 * 1024) is state and "_bounded" not in state
