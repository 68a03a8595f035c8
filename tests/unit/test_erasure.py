"""Erasure on request (issue #14 §2): the customer is gone from every table, and stays gone.

These run the worker's own join agent (tests/join_harness.py: streams/worker/agent.py's
handlers on a real checkpoint.Transaction, in-memory tables and topics, an adversarial scheduler
that interleaves partitions and crashes batches), so what is checked is what the worker
stores and publishes.
"""

from __future__ import annotations

import random

import pytest

from streams.domain.erasure import CUSTOMER, erased_refs, event_refs, suppression_key
from streams.domain.join import CONTACT, EMAIL, ORDER, PHONE
from streams.domain.state import apply_event, empty_state
from tests.builders import T0, contact, order, shipment
from tests.join_harness import Worker

ANN, BO = "c-ann", "c-bo"
EMAIL_ANN, PHONE_ANN = "ann@example.com", "+4915112345678"
ERASED_AT = T0 + 3_600_000
MIN = 60_000
# what must not be anywhere in a table once Ann is erased
TRACES = [ANN, EMAIL_ANN, PHONE_ANN, "o-ann", "o-ann-2", "k-ann", "k-mail", "s-ann"]


def erasure(customer_id: str = ANN, at: int = ERASED_AT, request_id: str = "r-1") -> tuple:
    return "erasure", {"request_id": request_id, "customer_id": customer_id,
                       "requested_by": "dpo", "requested_at": at, "reason": "DSR-118"}  # fmt: skip


def ann_history() -> list[tuple[str, dict]]:
    """Ann: two orders (one completed), parcels, a contact by her e-mail, one by her case."""
    return [
        order(ANN, "o-ann", at=T0, event_id="e-1", email=EMAIL_ANN, phone=PHONE_ANN),
        order(ANN, "o-ann", "COMPLETED", at=T0 + 5 * MIN, event_id="e-2"),
        order(ANN, "o-ann-2", at=T0 + 6 * MIN, event_id="e-3"),
        shipment("o-ann", "s-ann", at=T0 + MIN, event_id="e-4"),
        contact("k-mail", at=T0 + 2 * MIN, event_id="e-5", email=" Ann@Example.com",
                kind="COMPLAINT", note="Ann here, my parcel?"),  # fmt: skip
        contact("k-ann", at=T0 + 3 * MIN, event_id="e-6", customer_id=ANN, phone=PHONE_ANN),
        contact("k-ann", "NOTE_ADDED", at=T0 + 4 * MIN, event_id="e-7", note="called back"),
    ]


def bo_history() -> list[tuple[str, dict]]:
    return [
        order(BO, "o-bo", at=T0, event_id="e-b1", email="bo@example.com"),
        shipment("o-bo", "s-bo", at=T0 + MIN, event_id="e-b2"),
    ]


def traces(worker: Worker) -> list[str]:
    """Which of :data:`TRACES` some table row still holds, in its key or its value."""
    found = []
    for (table, key), value in worker.rows.items():
        text = f"{table} {key} {value.decode()}".lower()
        found += [t for t in TRACES if t.lower() in text]
    return sorted(set(found))


@pytest.mark.parametrize("seed", range(30))
def test_an_erased_customer_leaves_no_trace_in_any_table_and_others_are_untouched(
    seed: int,
) -> None:
    worker = Worker(seed, crash_rate=0.2)
    worker.run(ann_history() + bo_history(), T0 + 10 * MIN)
    assert set(worker.views()) == {ANN, BO}
    bo_before = worker.views()[BO]
    worker.run([erasure()], ERASED_AT)
    assert set(worker.views()) == {BO}
    assert worker.views()[BO] == bo_before
    assert traces(worker) == []
    assert worker.held_count() == 0 and worker.deadletters == []
    assert worker.published[-1] == {"customer_id": ANN, "tombstone": True} or any(
        p == {"customer_id": ANN, "tombstone": True} for p in worker.published
    )
    erased = worker.table("erased")
    assert erased[suppression_key(CUSTOMER, ANN)] == ERASED_AT
    assert erased[suppression_key(EMAIL, EMAIL_ANN)] == ERASED_AT
    assert erased[suppression_key(ORDER, "o-ann")] == ERASED_AT  # completed, still known


@pytest.mark.parametrize("seed", range(30))
def test_a_replay_of_everything_brings_nothing_back_in_any_order(seed: int) -> None:
    """The input topics read again from offset 0, the erasure request among them, in any
    interleaving (also the request first, before any state exists): no trace, nothing held
    that could expire into a dead letter, nothing published for Ann but tombstones."""
    everything = ann_history() + bo_history() + [erasure()]
    random.Random(seed).shuffle(everything)
    worker = Worker(seed, crash_rate=0.2)
    worker.run(everything, ERASED_AT)
    first_views = worker.views()
    assert set(first_views) == {BO}
    worker.published.clear()
    worker.run(ann_history() + [erasure()], ERASED_AT + MIN)  # and once more
    assert worker.views() == first_views
    assert traces(worker) == []
    assert worker.held_count() == 0 and worker.deadletters == []
    assert [p for p in worker.published if p["customer_id"] == ANN and "tombstone" not in p] == []


@pytest.mark.parametrize("seed", range(20))
def test_the_person_comes_back_after_the_erasure_with_a_new_empty_state(seed: int) -> None:
    worker = Worker(seed, crash_rate=0.2)
    worker.run(ann_history(), T0 + 10 * MIN).run([erasure()], ERASED_AT)
    again = order(ANN, "o-new", at=ERASED_AT + MIN, event_id="e-new", email=EMAIL_ANN)
    parcel = shipment("o-new", "s-new", at=ERASED_AT + 2 * MIN, event_id="e-new-s")
    late = shipment("o-ann", "s-ann", "DELIVERED", at=T0 + 9 * MIN, event_id="e-late")
    worker.run([again, parcel, late, *ann_history(), erasure()], ERASED_AT + 3 * MIN)
    [ann] = [v for c, v in worker.views().items() if c == ANN]
    assert [o["order_id"] for o in ann["orders"]] == ["o-new"]
    assert [s["shipment_id"] for s in ann["orders"][0]["shipments"]] == ["s-new"]
    assert ann["contacts"] == [] and ann["emails"] == [EMAIL_ANN]
    assert worker.held_count() == 0 and worker.deadletters == []
    # a contact by her e-mail from before the erasure stays out; a new one joins the new state
    worker.run([contact("k-old", at=T0 + 8 * MIN, event_id="e-ko", email=EMAIL_ANN),
                contact("k-new", at=ERASED_AT + 5 * MIN, event_id="e-kn", email=EMAIL_ANN)],
               ERASED_AT + 6 * MIN)  # fmt: skip
    assert [c["contact_id"] for c in worker.views()[ANN]["contacts"]] == ["k-new"]


def test_events_waiting_for_the_erased_customers_references_are_dropped_not_held() -> None:
    """A shipment of her order and a contact by her e-mail, held because they arrived first
    (or replayed after the erasure): dropped with every copy their chains left, so none can
    expire into a dead letter that would still carry her e-mail."""
    for seed in range(20):
        worker = Worker(seed, crash_rate=0.2)
        waiting = [shipment("o-ann", "s-x", at=T0 + MIN, event_id="e-sx"),
                   contact("k-x", at=T0 + MIN, event_id="e-kx", order_id="o-zz",
                           email=EMAIL_ANN, phone=PHONE_ANN)]  # fmt: skip
        worker.run(ann_history()[:1], T0).run([erasure()], ERASED_AT).run(waiting, ERASED_AT)
        assert worker.held_count() == 0, seed
        assert traces(worker) == [] and worker.deadletters == []


def test_the_references_of_a_state_include_its_retired_orders_and_contacts() -> None:
    state = empty_state(ANN)
    for kind, event in ann_history():
        state = apply_event(state, kind, event, T0)[0]
    state["_retired"] = {"order": {"o-gone": [T0, "e"]}, "contact": {"k-gone": [T0, "e"]}}
    refs = erased_refs(state)
    assert (ORDER, "o-gone") in refs and (CONTACT, "k-gone") in refs
    assert {(EMAIL, EMAIL_ANN), (PHONE, PHONE_ANN), (ORDER, "o-ann"), (CONTACT, "k-ann")} <= set(
        refs
    )
    kind, event = contact("k-x", event_id="e", order_id="o-1", email=EMAIL_ANN)
    expected = {(CONTACT, "k-x"), (ORDER, "o-1"), (EMAIL, EMAIL_ANN)}
    assert set(event_refs(ANN, kind, event)) == expected


def test_suppression_records_name_no_one() -> None:
    key = suppression_key(EMAIL, EMAIL_ANN)
    assert EMAIL_ANN not in key and key.startswith("email:") and len(key) == len("email:") + 32
    assert suppression_key(CUSTOMER, ANN) != suppression_key(ORDER, ANN)
