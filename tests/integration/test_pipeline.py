"""The customer-state pipeline end to end, through public interfaces only.

Events go in as Avro records on the input topics; what is checked is what a service desk
reads from the API and what a subscriber reads from customer-state.v1.
"""

from __future__ import annotations

import itertools

import pytest

from streams.encoding.codec import get_codec
from streams.encoding.jsonconv import to_json
from tests.builders import T0, contact, order, shipment, unique
from tests.integration.harness import (
    Departments,
    Worker,
    customer_when,
    metric_value,
    read_topic,
    wait_for,
)

pytestmark = pytest.mark.integration

HOUR = 3_600_000



def has_all_three(state: dict) -> bool:
    return bool(state["orders"] and state["orders"][0]["shipments"] and state["contacts"])


@pytest.mark.parametrize("arrival", list(itertools.permutations(range(3))))
def test_order_shipment_and_phone_contact_join_in_any_arrival_order(
    worker: Worker, departments: Departments, arrival: tuple[int, ...]
) -> None:
    cid, oid, sid, kid = unique("c"), unique("o"), unique("s"), unique("k")
    digits = "".join(str(i) for i in arrival)  # a phone number of this customer's own
    events = [
        order(cid, oid, phone=f"+49 30 1234{digits}"),
        shipment(oid, sid, "IN_TRANSIT", T0 + HOUR, expected_by=T0 + 72 * HOUR),
        contact(
            kid,
            at=T0 + 2 * HOUR,
            phone=f"+49 (30) 123-4{digits}",
            topic="where is it",
            note="asks for tracking",
        ),
    ]
    departments.send(events[i] for i in arrival)

    state = customer_when(worker, cid, has_all_three)

    assert [o["order_id"] for o in state["orders"]] == [oid]
    assert state["orders"][0]["status"] == "PLACED"
    [ship] = state["orders"][0]["shipments"]
    assert (ship["shipment_id"], ship["status"]) == (sid, "IN_TRANSIT")
    [case] = state["contacts"]
    assert (case["contact_id"], case["status"]) == (kid, "OPEN")
    assert case["notes"][0]["text"] == "asks for tracking"
    assert state["phones"] == [f"+49301234{digits}"]
    assert state["open_orders"] == 1 and state["open_contacts"] == 1


def test_contact_with_only_an_email_joins_the_customer_of_that_address(
    worker: Worker, departments: Departments
) -> None:
    cid, other, kid = unique("c"), unique("c"), unique("k")
    departments.send(
        [
            order(cid, unique("o"), email=f"Grace.Hopper.{cid}@Example.com"),
            order(other, unique("o"), email="someone.else@example.com"),
            contact(kid, at=T0 + HOUR, email=f"  grace.hopper.{cid}@EXAMPLE.com ", channel="EMAIL"),
        ]
    )

    state = customer_when(worker, cid, lambda s: bool(s["contacts"]))

    assert [c["contact_id"] for c in state["contacts"]] == [kid]
    assert state["emails"] == [f"grace.hopper.{cid}@example.com"]
    status, found = worker.get(f"/customers?email=GRACE.HOPPER.{cid}@example.com")
    assert status == 200 and found["customer_id"] == cid
    assert worker.get(f"/customers/{other}")[1]["contacts"] == []


def test_resending_the_same_events_changes_nothing(
    worker: Worker, departments: Departments
) -> None:
    cid, oid, kid = unique("c"), unique("o"), unique("k")
    events = [
        order(cid, oid, phone="+44 20 7946 0999"),
        shipment(oid, unique("s"), "DELIVERED", T0 + HOUR),
        contact(kid, at=T0 + 2 * HOUR, order_id=oid, note="thanks"),
    ]
    departments.send(events)
    before = customer_when(worker, cid, has_all_three)
    duplicates_before = metric_value(
        worker.get("/metrics")[1], "keel_events_total", outcome="duplicate"
    )

    departments.send(events)
    departments.send(reversed(events))

    def all_six_seen_as_duplicates() -> bool:
        now = metric_value(worker.get("/metrics")[1], "keel_events_total", outcome="duplicate")
        return now - duplicates_before >= 6

    wait_for("six duplicates counted", all_six_seen_as_duplicates)
    after = worker.get(f"/customers/{cid}")[1]
    assert after == before
    assert after["version"] == before["version"]


def test_state_on_customer_state_topic_equals_the_api(
    worker: Worker, departments: Departments, kafka: object
) -> None:
    cid, oid = unique("c"), unique("o")
    departments.send(
        [
            order(cid, oid, email=f"lin.{cid}@example.com", promised_by=T0 + 48 * HOUR),
            order(
                cid,
                oid,
                "AMENDED",
                T0 + HOUR,
                lines=[{"sku": "kettle", "quantity": 2, "unit_price_cents": 2999}],
            ),
            shipment(oid, unique("s"), "DISPATCHED", T0 + 2 * HOUR),
            contact(
                unique("k"), at=T0 + 3 * HOUR, email=f"lin.{cid}@example.com", note="change address"
            ),
        ]
    )
    api = customer_when(
        worker, cid, lambda s: has_all_three(s) and s["orders"][0]["status"] == "AMENDED"
    )

    def latest_on_topic() -> dict | None:
        codec = get_codec()
        mine = [
            m
            for m in read_topic(kafka.bootstrap, "customer-state.v1")  # type: ignore[attr-defined]
            if m.key() == cid.encode()
        ]
        if not mine:
            return None
        latest = to_json("CustomerState", codec.decode(mine[-1].value(), "CustomerState"))
        return latest if latest["version"] == api["version"] else None

    published = wait_for("latest state on customer-state.v1", latest_on_topic)
    assert published == api
    assert api["total_spent_cents"] == 2 * 2999
