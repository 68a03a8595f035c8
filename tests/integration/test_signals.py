"""Signals (docs/contract.md §6) on the state and on customer-signals.v1, through the real
broker."""

from __future__ import annotations

import time

import pytest

from streams.encoding.codec import get_codec
from tests.builders import T0, order, shipment, unique
from tests.integration.harness import Departments, Worker, read_topic, wait_for

pytestmark = pytest.mark.integration

MIN = 60_000
HOUR = 60 * MIN


def signal_types(worker: Worker, customer_id: str) -> list[str]:
    status, state = worker.get(f"/customers/{customer_id}")
    return [s["type"] for s in state["signals"]] if status == 200 else []


def signal_records(bootstrap: str, customer_id: str) -> list[dict]:
    codec = get_codec()
    return [
        codec.decode(m.value(), "CustomerSignal")
        for m in read_topic(bootstrap, "customer-signals.v1")
        if m.key() == customer_id.encode()
    ]


def test_duplicate_order_is_raised_once_and_cleared_once_when_one_is_cancelled(
    worker: Worker, departments: Departments, kafka: object
) -> None:
    bootstrap = kafka.bootstrap  # type: ignore[attr-defined]
    cid, first, second = unique("c"), unique("o"), unique("o")
    basket = [
        {"sku": "kettle", "quantity": 1, "unit_price_cents": 2999},
        {"sku": "mug", "quantity": 4, "unit_price_cents": 499},
    ]
    departments.send(
        [
            order(cid, first, lines=basket),
            order(cid, second, at=T0 + 4 * MIN, lines=basket, channel="PHONE"),
        ]
    )

    wait_for("DUPLICATE_ORDER on the state", lambda: "DUPLICATE_ORDER" in signal_types(worker, cid))
    state = worker.get(f"/customers/{cid}")[1]
    [dup] = [s for s in state["signals"] if s["type"] == "DUPLICATE_ORDER"]
    assert dup["order_id"] == second
    raised = wait_for("the RAISED record", lambda: signal_records(bootstrap, cid))
    assert [(r["status"], r["type"], r["order_id"]) for r in raised] == [
        ("RAISED", "DUPLICATE_ORDER", second)
    ]

    departments.send([order(cid, second, "CANCELLED", T0 + 10 * MIN, lines=basket)])
    wait_for(
        "the signal cleared on the state",
        lambda: "DUPLICATE_ORDER" not in signal_types(worker, cid),
    )
    records = wait_for(
        "the CLEARED record", lambda: (r := signal_records(bootstrap, cid)) and len(r) >= 2 and r
    )
    assert [(r["status"], r["type"]) for r in records] == [
        ("RAISED", "DUPLICATE_ORDER"),
        ("CLEARED", "DUPLICATE_ORDER"),
    ]


def test_a_shipment_becomes_late_without_any_new_event(
    worker: Worker, departments: Departments
) -> None:
    cid, oid, sid = unique("c"), unique("o"), unique("s")
    now = int(time.time() * 1000)
    departments.send(
        [
            order(cid, oid, at=now - HOUR),
            shipment(oid, sid, "IN_TRANSIT", now - MIN, expected_by=now + 3_000),
        ]
    )
    wait_for(
        "the shipment on the state",
        lambda: (
            (s := worker.get(f"/customers/{cid}")[1])
            and isinstance(s, dict)
            and s.get("orders")
            and s["orders"][0]["shipments"]
        ),
    )
    assert "SHIPMENT_LATE" not in signal_types(worker, cid)

    # the deadline passes 3 s after `now`; the signal must follow within 15 s of that
    deadline_left = max(0.0, (now + 3_000) / 1000 - time.time())
    wait_for(
        "SHIPMENT_LATE",
        lambda: "SHIPMENT_LATE" in signal_types(worker, cid),
        timeout=deadline_left + 15,
    )
    [late] = worker.get(f"/customers/{cid}")[1]["signals"]
    assert (late["order_id"], late["shipment_id"]) == (oid, sid)


def test_a_parcel_marked_lost_and_then_delivered_raises_lost_shipment_delivered(
    worker: Worker, departments: Departments
) -> None:
    cid, oid, sid = unique("c"), unique("o"), unique("s")
    departments.send(
        [
            shipment(oid, sid, "DELIVERED", T0 + 30 * 24 * HOUR),  # arrives first, happened last
            order(cid, oid),
            shipment(oid, sid, "LOST", T0 + 10 * 24 * HOUR),
            shipment(oid, unique("s"), "DISPATCHED", T0 + 11 * 24 * HOUR, replaces=sid),
        ]
    )
    wait_for(
        "LOST_SHIPMENT_DELIVERED", lambda: "LOST_SHIPMENT_DELIVERED" in signal_types(worker, cid)
    )
    state = worker.get(f"/customers/{cid}")[1]
    [signal] = [s for s in state["signals"] if s["type"] == "LOST_SHIPMENT_DELIVERED"]
    assert (signal["order_id"], signal["shipment_id"]) == (oid, sid)
