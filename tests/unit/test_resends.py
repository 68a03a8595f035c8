"""Re-sent events (docs/contract.md §3 "keel applies each id once"), as a desk would read them.

Two ways an id comes back: under another ``occurred_at`` (a department that re-stamps a retried
event), and after retention dropped what it was about.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain.state import DEFAULT_LIMITS, Limits, apply_event, view
from tests.strategies import BASE_MS, MINUTE_MS, KindEvent, histories, with_retimed_resends
from tests.unit.test_state import CID, apply_all, contact, content, order

T0, MIN = BASE_MS, MINUTE_MS


def build(events: list[dict], limits: Limits = DEFAULT_LIMITS) -> dict:
    kinds = {True: "contact", False: "order"}
    return apply_all([(kinds["contact_id" in e], e) for e in events], limits)


# --- the same event_id under another occurred_at: the latest stamp wins, applied once --------


def test_a_re_stamped_note_shows_once_at_its_latest_time_whatever_arrives_first() -> None:
    opened = contact("OPENED", T0, event_id="e-open")
    first = contact("NOTE_ADDED", T0 + 1 * MIN, event_id="e-note", note="refund issued")
    again = {**first, "occurred_at": T0 + 3 * MIN}
    one_way = build([opened, first, again])
    other_way = build([opened, again, first])
    notes = [{"at": T0 + 3 * MIN, "agent": None, "text": "refund issued"}]
    assert view(one_way)["contacts"][0]["notes"] == notes
    assert view(other_way)["contacts"][0]["notes"] == notes
    assert content(one_way) == content(other_way)


def test_an_earlier_stamp_of_an_applied_id_changes_nothing_it_shows() -> None:
    placed = order("PLACED", T0, event_id="e-1")
    completed = order("COMPLETED", T0 + 5 * MIN, event_id="e-2")
    state = build([placed, completed])
    after, _ = apply_event(state, "order", {**completed, "occurred_at": T0 + 1 * MIN}, 99)
    assert content(after) == content(state)
    assert view(after)["orders"][0]["status"] == "COMPLETED"


re_stamped = histories(customers=(CID,)).flatmap(
    lambda h: st.tuples(st.just(h), with_retimed_resends(h))
)


@settings(max_examples=300, deadline=None)
@given(re_stamped)
def test_re_stamped_re_sends_in_any_order_give_one_state(
    case: tuple[list[KindEvent], list[KindEvent]],
) -> None:
    """The final state depends only on the set of versions sent, never on their order."""
    history, sent = case
    in_order = sorted(sent, key=lambda ke: (ke[1]["event_id"], ke[1]["occurred_at"]))
    assert content(apply_all(sent)) == content(apply_all(in_order))
    assert content(apply_all(sent, Limits(max_notes=2))) == content(
        apply_all(list(reversed(in_order)), Limits(max_notes=2))
    )


# --- an id re-sent after retention dropped its entity: recognised, nothing comes back --------

KEEP_ONE = Limits(keep_closed=1)


def test_a_re_sent_placed_of_a_dropped_order_does_not_bring_it_back_open() -> None:
    placed = order("PLACED", T0, order_id="o-1")
    state = build(
        [
            placed,
            order("COMPLETED", T0 + 1 * MIN, order_id="o-1"),
            order("PLACED", T0 + 2 * MIN, order_id="o-2"),
            order("COMPLETED", T0 + 3 * MIN, order_id="o-2"),  # o-1 dropped (KEEL_KEEP_CLOSED=1)
        ],
        KEEP_ONE,
    )
    assert [o["order_id"] for o in view(state)["orders"]] == ["o-2"]
    again, changed = apply_event(state, "order", placed, 99, KEEP_ONE)
    assert view(again)["open_orders"] == 0
    assert [o["order_id"] for o in view(again)["orders"]] == ["o-2"]
    assert not changed and again is state


def test_late_events_of_a_dropped_order_and_its_shipments_are_recognised() -> None:
    state = build(
        [
            order("COMPLETED", T0 + 1 * MIN, order_id="o-1"),
            order("COMPLETED", T0 + 3 * MIN, order_id="o-2"),
        ],
        KEEP_ONE,
    )
    late = order("AMENDED", T0, order_id="o-1")  # never seen, but older than its completion
    parcel = {
        "event_id": "e-parcel", "occurred_at": T0 + MIN // 2, "source": "carrier-dhl",
        "type": "DELIVERED", "shipment_id": "s-1", "order_id": "o-1", "carrier": "dhl",
        "tracking_number": None, "expected_by": None, "replaces_shipment_id": None, "note": None,
    }  # fmt: skip
    after, _ = apply_event(state, "order", late, 99, KEEP_ONE)
    after, _ = apply_event(after, "shipment", parcel, 100, KEEP_ONE)
    assert view(after)["orders"] == view(state)["orders"]
    assert after["_orders"] == state["_orders"]
    assert after["_shipments"] == {}  # nothing waits for an order that is gone
    assert after["last_event_at"]["carrier-dhl"] == T0 + MIN // 2  # the carrier was heard from


def test_a_re_sent_event_of_a_dropped_contact_does_not_reopen_it() -> None:
    opened = contact("OPENED", T0, contact_id="k-1", note="hello")
    state = build(
        [
            opened,
            contact("RESOLVED", T0 + 1 * MIN, contact_id="k-1"),
            contact("RESOLVED", T0 + 2 * MIN, contact_id="k-2"),
        ],
        KEEP_ONE,
    )
    again, changed = apply_event(state, "contact", opened, 99, KEEP_ONE)
    assert not changed and view(again)["open_contacts"] == 0


def test_an_event_later_than_a_dropped_entity_starts_it_afresh() -> None:
    state = build(
        [
            order("COMPLETED", T0 + 1 * MIN, order_id="o-1"),
            order("COMPLETED", T0 + 3 * MIN, order_id="o-2"),
        ],
        KEEP_ONE,
    )
    after, changed = apply_event(state, "order", order("AMENDED", T0 + 5 * MIN), 99, KEEP_ONE)
    assert changed and view(after)["open_orders"] == 1


def test_the_record_of_dropped_entities_is_bounded_and_keeps_the_latest() -> None:
    limits = Limits(keep_closed=0, keep_retired=2)
    placed = [order("PLACED", T0 + i * MIN, order_id=f"o-{i}") for i in range(5)]
    events = [*placed, *(order("COMPLETED", T0 + i * MIN + 1, order_id=f"o-{i}") for i in range(5))]
    state = build(events, limits)
    assert sorted(state["_retired"]["order"]) == ["o-3", "o-4"]
    forgotten, _ = apply_event(state, "order", placed[3], 99, limits)
    assert view(forgotten)["open_orders"] == 0
    forgotten, _ = apply_event(state, "order", placed[0], 99, limits)
    assert view(forgotten)["open_orders"] == 1  # beyond the bound: not recognised (documented)
    assert build(events, Limits(keep_closed=0, keep_retired=0)).get("_retired") is None


@settings(max_examples=300, deadline=None)
@given(histories(customers=(CID,), max_events=40), st.data(), st.integers(0, 2))
def test_re_sends_after_retention_change_nothing(
    history: list[KindEvent], data: st.DataObject, keep: int
) -> None:
    """However short retention is, sending any of a history's events again, at any time
    after it was first sent (before or after retention dropped what it was about), adds
    nothing."""
    limits = Limits(keep_closed=keep)
    sent = list(history)
    for original in data.draw(st.lists(st.sampled_from(history), max_size=10)):
        sent.insert(data.draw(st.integers(sent.index(original) + 1, len(sent))), original)
    assert content(apply_all(sent, limits)) == content(apply_all(history, limits))


def test_the_worker_counts_a_re_send_after_retention_as_a_duplicate_and_publishes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The join agent's own handler (streams/worker/agent.py) with KEEL_KEEP_CLOSED=1."""
    from streams.ops import metrics
    from streams.worker import agent as agents
    from streams.worker import checkpoint, params, tables

    rows: dict[str, dict] = {}
    monkeypatch.setattr(tables, "read", lambda table, partition, key: (rows.get(key), 0))
    monkeypatch.setattr(checkpoint.read_cache, "budget", 0)  # rows are changed by hand too
    monkeypatch.setattr(params, "limits", KEEP_ONE)
    placed = order("PLACED", T0, order_id="o-1")
    history = [
        placed,
        order("COMPLETED", T0 + 1 * MIN, order_id="o-1"),
        order("COMPLETED", T0 + 3 * MIN, order_id="o-2"),
    ]
    rows[CID] = build(history, KEEP_ONE)
    duplicates = metrics.EVENTS.labels("orders.v1", "duplicate")._value.get()
    produced: list = []

    class Outbox:
        def produce(self, *record: object) -> None:
            produced.append(record)

    batch = checkpoint.Transaction(Outbox())  # type: ignore[arg-type]
    agents.handle_customer_message(
        batch, CID, {"kind": "order", "event": placed, "topic": "orders.v1"}
    )
    batch.internal.flush()
    assert batch.published == [] and batch.changes() == [] and produced == []
    assert metrics.EVENTS.labels("orders.v1", "duplicate")._value.get() == duplicates + 1
