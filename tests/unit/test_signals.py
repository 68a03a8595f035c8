"""Signal rules (docs/contract.md §6), each raised and cleared by hand-written events.

What is checked is what a service agent sees in the state (``signals``) and what a subscriber of
customer-signals.v1 receives (the RAISED/CLEARED records of ``apply_signals``).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from streams.domain.signals import (
    DEFAULT_WINDOWS,
    Windows,
    active_signals,
    apply_signals,
    next_check_ms,
)
from streams.domain.state import apply_event, empty_state, view
from streams.encoding.codec import get_codec
from tests.builders import T0, contact, order, shipment

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
CID = "c-1"
LINES = [{"sku": "kettle", "quantity": 2, "unit_price_cents": 2999}]


def state_of(*events: tuple[str, dict]) -> dict:
    state = empty_state(CID)
    for kind, event in events:
        state, _ = apply_event(state, kind, event, now_ms=0)
    return state


def signals_at(now: int, *events: tuple[str, dict], windows: Windows = DEFAULT_WINDOWS) -> list:
    """(type, order_id, shipment_id, contact_id, raised_at) of what is active at ``now``."""
    return [
        (s["type"], s["order_id"], s["shipment_id"], s["contact_id"], s["raised_at"])
        for s in active_signals(state_of(*events), now, windows)
    ]


def placed(order_id: str, at: int, lines: list[dict] | None = None, **kw: Any) -> tuple[str, dict]:
    return order(CID, order_id, "PLACED", at, lines=lines or LINES, **kw)


def line(sku: str, quantity: int, price: int = 100) -> dict:
    return {"sku": sku, "quantity": quantity, "unit_price_cents": price}


# --- DUPLICATE_ORDER ------------------------------------------------------------------------


def test_same_lines_within_30_minutes_flag_the_later_order() -> None:
    events = (placed("o-1", T0), placed("o-2", T0 + 10 * MIN))
    assert signals_at(T0 + DAY, *events) == [("DUPLICATE_ORDER", "o-2", None, None, T0 + 10 * MIN)]
    [signal] = active_signals(state_of(*events), T0)
    assert "o-2" in signal["detail"] and "o-1" in signal["detail"]


def test_lines_compare_as_sku_to_total_quantity() -> None:
    split = [line("kettle", 1, 10), line("mug", 1), line("kettle", 1, 20)]
    same = [line("mug", 1), line("kettle", 2)]
    other = [line("mug", 1), line("kettle", 3)]
    assert signals_at(T0, placed("o-1", T0, split), placed("o-2", T0 + MIN, same)) == [
        ("DUPLICATE_ORDER", "o-2", None, None, T0 + MIN)
    ]
    assert signals_at(T0, placed("o-1", T0, split), placed("o-2", T0 + MIN, other)) == []


def test_the_window_is_inclusive_and_ends_there() -> None:
    assert signals_at(T0, placed("o-1", T0), placed("o-2", T0 + 30 * MIN)) != []
    assert signals_at(T0, placed("o-1", T0), placed("o-2", T0 + 30 * MIN + 1)) == []
    small = Windows(duplicate_order_ms=5 * MIN)
    assert signals_at(T0, placed("o-1", T0), placed("o-2", T0 + 6 * MIN), windows=small) == []


def test_ties_on_placed_at_flag_the_greater_order_id() -> None:
    assert signals_at(T0, placed("o-b", T0), placed("o-a", T0)) == [
        ("DUPLICATE_ORDER", "o-b", None, None, T0)
    ]


def test_three_same_orders_flag_each_later_one() -> None:
    events = (placed("o-1", T0), placed("o-2", T0 + 20 * MIN), placed("o-3", T0 + 40 * MIN))
    # o-3 is 40 min after o-1 but only 20 after o-2
    assert [s[1] for s in signals_at(T0, *events)] == ["o-2", "o-3"]


def test_duplicate_is_cleared_when_either_order_is_cancelled() -> None:
    first, second = placed("o-1", T0), placed("o-2", T0 + MIN)
    for cancelled in ("o-1", "o-2"):
        cancel = order(CID, cancelled, "CANCELLED", T0 + HOUR, lines=LINES)
        assert signals_at(T0, first, second, cancel) == []
    completed = order(CID, "o-1", "COMPLETED", T0 + HOUR, lines=LINES)
    assert signals_at(T0, first, second, completed) != []  # only cancelling clears


def test_an_amendment_that_changes_the_lines_clears_the_duplicate() -> None:
    amended = order(CID, "o-2", "AMENDED", T0 + 5 * MIN, lines=[line("mug", 1)])
    assert signals_at(T0, placed("o-1", T0), placed("o-2", T0 + MIN), amended) == []


# --- SHIPMENT_LATE --------------------------------------------------------------------------


def test_a_shipment_is_late_once_past_its_expected_by() -> None:
    events = (
        placed("o-1", T0),
        shipment("o-1", "s-1", "IN_TRANSIT", T0 + HOUR, expected_by=T0 + DAY),
    )
    assert signals_at(T0 + DAY, *events) == []  # at the deadline: not yet
    late = [("SHIPMENT_LATE", "o-1", "s-1", None, T0 + DAY)]
    assert signals_at(T0 + DAY + 1, *events) == late
    [signal] = active_signals(state_of(*events), T0 + 2 * DAY)
    assert "s-1" in signal["detail"] and "in transit" in signal["detail"]


def test_expected_by_wins_over_promised_by_which_is_the_fallback() -> None:
    promised = placed("o-1", T0, promised_by=T0 + 3 * DAY)
    with_eta = shipment("o-1", "s-1", "DISPATCHED", T0 + HOUR, expected_by=T0 + 5 * DAY)
    without = shipment("o-1", "s-1", "DISPATCHED", T0 + HOUR)
    assert signals_at(T0 + 4 * DAY, promised, with_eta) == []
    assert signals_at(T0 + 4 * DAY, promised, without) == [
        ("SHIPMENT_LATE", "o-1", "s-1", None, T0 + 3 * DAY)
    ]
    assert signals_at(T0 + 99 * DAY, placed("o-1", T0), without) == []  # no deadline at all


@pytest.mark.parametrize("arrived", ["DELIVERED", "RETURNED"])
def test_late_is_cleared_when_delivered_or_returned(arrived: str) -> None:
    events = [placed("o-1", T0), shipment("o-1", "s-1", "IN_TRANSIT", T0, expected_by=T0 + HOUR)]
    assert signals_at(T0 + DAY, *events) != []
    events.append(shipment("o-1", "s-1", arrived, T0 + 2 * HOUR))
    assert signals_at(T0 + DAY, *events) == []
    # a scan that happened earlier but arrives later does not make it late again
    events.append(shipment("o-1", "s-1", "OUT_FOR_DELIVERY", T0 + HOUR))
    assert signals_at(T0 + DAY, *events) == []


def test_a_lost_shipment_past_its_deadline_is_late() -> None:
    events = (placed("o-1", T0), shipment("o-1", "s-1", "LOST", T0, expected_by=T0 + HOUR))
    assert [s[0] for s in signals_at(T0 + DAY, *events)] == ["SHIPMENT_LATE"]


def test_a_shipment_whose_order_is_not_here_raises_nothing() -> None:
    events = (
        shipment("o-9", "s-1", "LOST", T0, expected_by=T0),
        shipment("o-9", "s-1", "DELIVERED", T0 + 1),
    )
    assert signals_at(T0 + DAY, *events) == []
    assert next_check_ms(state_of(*events), T0 - DAY) is None


# --- LOST_SHIPMENT_DELIVERED ----------------------------------------------------------------


def test_delivered_after_lost_is_raised_at_the_delivery() -> None:
    events = (
        placed("o-1", T0),
        shipment("o-1", "s-1", "LOST", T0 + DAY),
        shipment("o-1", "s-2", "DISPATCHED", T0 + DAY + HOUR, replaces="s-1"),
        shipment("o-1", "s-1", "DELIVERED", T0 + 2 * DAY),
    )
    assert signals_at(T0 + 2 * DAY, *events) == [
        ("LOST_SHIPMENT_DELIVERED", "o-1", "s-1", None, T0 + 2 * DAY)
    ]
    [signal] = active_signals(state_of(*events), T0)
    assert "s-1" in signal["detail"] and "replacement s-2" in signal["detail"]


def test_delivered_before_or_with_the_lost_report_is_no_signal() -> None:
    for delivered_at in (T0 - MIN, T0):
        events = (
            placed("o-1", T0),
            shipment("o-1", "s-1", "LOST", T0),
            shipment("o-1", "s-1", "DELIVERED", delivered_at),
        )
        assert signals_at(T0, *events) == []


def test_any_lost_before_any_delivery_counts() -> None:
    events = (
        placed("o-1", T0),
        shipment("o-1", "s-1", "LOST", T0 + HOUR),
        shipment("o-1", "s-1", "DELIVERED", T0 + 2 * HOUR),
        shipment("o-1", "s-1", "LOST", T0 + 3 * HOUR),  # the carrier re-reports it lost
    )
    assert [s[0] for s in signals_at(T0, *events)] == ["LOST_SHIPMENT_DELIVERED"]


def test_a_contact_resolved_at_the_delivery_time_does_not_clear() -> None:
    events = (
        placed("o-1", T0),
        shipment("o-1", "s-1", "LOST", T0 + HOUR),
        shipment("o-1", "s-1", "DELIVERED", T0 + 2 * HOUR),
        contact("k-1", "RESOLVED", T0 + 2 * HOUR, customer_id=CID, order_id="o-1"),
    )
    assert [s[0] for s in signals_at(T0, *events)] == ["LOST_SHIPMENT_DELIVERED"]


def test_lost_delivered_is_cleared_by_a_contact_about_the_order_resolved_after_it() -> None:
    events = [
        placed("o-1", T0),
        shipment("o-1", "s-1", "LOST", T0 + HOUR),
        shipment("o-1", "s-1", "DELIVERED", T0 + 2 * HOUR),
        contact("k-1", "OPENED", T0 + 90 * MIN, customer_id=CID, order_id="o-1"),
        contact("k-1", "RESOLVED", T0 + 100 * MIN, customer_id=CID),  # before the delivery
        contact("k-2", "RESOLVED", T0 + 3 * HOUR, customer_id=CID, order_id="o-other"),
    ]
    assert [s[0] for s in signals_at(T0, *events)] == ["LOST_SHIPMENT_DELIVERED"]
    events.append(contact("k-1", "REOPENED", T0 + 3 * HOUR, customer_id=CID))
    events.append(contact("k-1", "RESOLVED", T0 + 4 * HOUR, customer_id=CID))
    assert signals_at(T0, *events) == []
    events.append(contact("k-1", "REOPENED", T0 + 5 * HOUR, customer_id=CID))
    assert [s[0] for s in signals_at(T0, *events)] == ["LOST_SHIPMENT_DELIVERED"]


# --- REPEAT_CONTACT -------------------------------------------------------------------------


def test_a_second_contact_about_the_same_order_within_14_days() -> None:
    first = contact("k-1", "OPENED", T0, customer_id=CID, order_id="o-1")
    second = contact("k-2", "OPENED", T0 + 14 * DAY, customer_id=CID, order_id="o-1")
    assert signals_at(T0, first, second) == [("REPEAT_CONTACT", "o-1", None, "k-2", T0 + 14 * DAY)]
    [signal] = active_signals(state_of(first, second), T0)
    assert "k-1" in signal["detail"] and "order o-1" in signal["detail"]
    too_late = contact("k-2", "OPENED", T0 + 14 * DAY + 1, customer_id=CID, order_id="o-1")
    assert signals_at(T0, first, too_late) == []
    other_order = contact("k-2", "OPENED", T0 + DAY, customer_id=CID, order_id="o-2")
    assert signals_at(T0, first, other_order) == []


def test_without_an_order_contacts_repeat_by_topic() -> None:
    first = contact("k-1", "OPENED", T0, customer_id=CID, topic="billing")
    second = contact("k-2", "OPENED", T0 + DAY, customer_id=CID, topic="billing")
    assert signals_at(T0, first, second) == [("REPEAT_CONTACT", None, None, "k-2", T0 + DAY)]
    other = contact("k-2", "OPENED", T0 + DAY, customer_id=CID, topic="delivery")
    assert signals_at(T0, first, other) == []
    about_an_order = contact(
        "k-2", "OPENED", T0 + DAY, customer_id=CID, topic="billing", order_id="o-1"
    )
    assert signals_at(T0, first, about_an_order) == []
    nothing = contact("k-2", "OPENED", T0 + DAY, customer_id=CID)
    assert signals_at(T0, contact("k-1", "OPENED", T0, customer_id=CID), nothing) == []


def test_repeat_contact_is_cleared_only_when_all_of_them_are_resolved() -> None:
    events = [
        contact("k-1", "OPENED", T0, customer_id=CID, order_id="o-1"),
        contact("k-2", "OPENED", T0 + HOUR, customer_id=CID, order_id="o-1"),
        contact("k-2", "RESOLVED", T0 + 2 * HOUR, customer_id=CID),
    ]
    assert [s[3] for s in signals_at(T0, *events)] == ["k-2"]  # k-1 still open
    events.append(contact("k-1", "RESOLVED", T0 + 3 * HOUR, customer_id=CID))
    assert signals_at(T0, *events) == []


# --- COMPLAINT_UNRESOLVED -------------------------------------------------------------------


def test_a_complaint_open_longer_than_24_hours() -> None:
    opened = contact("k-1", "OPENED", T0, customer_id=CID, kind="COMPLAINT", order_id="o-1")
    assert signals_at(T0 + DAY, opened) == []
    assert signals_at(T0 + DAY + 1, opened) == [
        ("COMPLAINT_UNRESOLVED", "o-1", None, "k-1", T0 + DAY)
    ]
    noted = contact("k-1", "NOTE_ADDED", T0 + 2 * DAY, customer_id=CID, kind="COMPLAINT")
    assert len(signals_at(T0 + 3 * DAY, opened, noted)) == 1
    resolved = contact("k-1", "RESOLVED", T0 + 2 * DAY, customer_id=CID, kind="COMPLAINT")
    assert signals_at(T0 + 3 * DAY, opened, resolved) == []
    question = contact("k-1", "OPENED", T0, customer_id=CID, kind="QUESTION")
    assert signals_at(T0 + 3 * DAY, question) == []


def test_the_complaint_window_is_configurable() -> None:
    opened = contact("k-1", "OPENED", T0, customer_id=CID, kind="COMPLAINT")
    four_hours = Windows(complaint_unresolved_ms=4 * HOUR)
    assert [s[4] for s in signals_at(T0 + 5 * HOUR, opened, windows=four_hours)] == [T0 + 4 * HOUR]


# --- next_check_ms --------------------------------------------------------------------------


def test_next_check_is_the_first_deadline_still_ahead() -> None:
    state = state_of(
        placed("o-1", T0, promised_by=T0 + 3 * DAY),
        shipment("o-1", "s-1", "DISPATCHED", T0, expected_by=T0 + 2 * DAY),
        shipment("o-1", "s-2", "DISPATCHED", T0),  # falls back to the promise
        shipment("o-1", "s-3", "DELIVERED", T0, expected_by=T0 + HOUR),  # arrived: no deadline
        contact("k-1", "OPENED", T0 + HOUR, customer_id=CID, kind="COMPLAINT"),
        contact("k-2", "OPENED", T0, customer_id=CID, kind="COMPLAINT"),
        contact("k-2", "RESOLVED", T0 + MIN, customer_id=CID, kind="COMPLAINT"),
    )
    assert next_check_ms(state, T0) == T0 + HOUR + DAY + 1  # k-1's complaint
    assert next_check_ms(state, T0 + HOUR + DAY) == T0 + HOUR + DAY + 1
    assert next_check_ms(state, T0 + HOUR + DAY + 1) == T0 + 2 * DAY + 1  # s-1
    assert next_check_ms(state, T0 + 2 * DAY + 1) == T0 + 3 * DAY + 1  # s-2
    assert next_check_ms(state, T0 + 3 * DAY + 1) is None
    assert next_check_ms(empty_state(CID), T0) is None


def test_next_check_is_when_active_signals_change() -> None:
    state = state_of(
        placed("o-1", T0), shipment("o-1", "s-1", "CREATED", T0, expected_by=T0 + HOUR)
    )
    at = next_check_ms(state, T0)
    assert at is not None
    assert active_signals(state, at - 1) == [] and active_signals(state, at) != []


# --- apply_signals: the records on customer-signals.v1 --------------------------------------


def test_apply_signals_raises_then_clears_with_event_time_and_clock() -> None:
    late = state_of(
        placed("o-1", T0), shipment("o-1", "s-1", "IN_TRANSIT", T0, expected_by=T0 + HOUR)
    )
    raised, changes = apply_signals(late, T0 + 2 * HOUR)
    assert [(c["status"], c["type"], c["at"]) for c in changes] == [
        ("RAISED", "SHIPMENT_LATE", T0 + HOUR)
    ]
    assert changes[0]["customer_id"] == CID and changes[0]["shipment_id"] == "s-1"
    assert raised["version"] == late["version"] + 1 and raised["updated_at"] == T0 + 2 * HOUR
    assert view(raised)["signals"] == raised["signals"] != []

    delivered, _ = apply_event(
        raised, *shipment("o-1", "s-1", "DELIVERED", T0 + 3 * HOUR), now_ms=0
    )
    cleared, changes = apply_signals(delivered, T0 + 4 * HOUR)
    assert [(c["status"], c["type"], c["at"]) for c in changes] == [
        ("CLEARED", "SHIPMENT_LATE", T0 + 4 * HOUR)
    ]
    assert cleared["signals"] == []


def test_apply_signals_returns_the_same_state_when_nothing_changed() -> None:
    state = state_of(placed("o-1", T0), placed("o-2", T0 + MIN))
    once, changes = apply_signals(state, T0)
    assert len(changes) == 1
    snapshot = copy.deepcopy(once)
    again, more = apply_signals(once, T0 + DAY)
    assert again is once and more == []
    assert once == snapshot and state["signals"] == []  # inputs untouched


def test_a_changed_detail_updates_the_signal_without_a_record() -> None:
    events = [placed("o-1", T0), shipment("o-1", "s-1", "IN_TRANSIT", T0, expected_by=T0 + HOUR)]
    state, _ = apply_signals(state_of(*events), T0 + 2 * HOUR)
    delayed, _ = apply_event(state, *shipment("o-1", "s-1", "DELAYED", T0 + 90 * MIN), now_ms=0)
    updated, changes = apply_signals(delayed, T0 + 2 * HOUR)
    assert changes == []
    assert updated is not delayed and "delayed" in updated["signals"][0]["detail"]


def test_signals_and_records_fit_the_schemas() -> None:
    codec = get_codec()
    state = state_of(
        placed("o-1", T0, email="ada@example.com", phone="+49 30 1234", name="Ada Okafor"),
        placed("o-2", T0 + MIN),
        shipment("o-1", "s-1", "LOST", T0, expected_by=T0 + HOUR),
        shipment("o-1", "s-1", "DELIVERED", T0 + 2 * HOUR),
        shipment("o-2", "s-2", "CREATED", T0, expected_by=T0 + HOUR),
        contact("k-1", "OPENED", T0, customer_id=CID, kind="COMPLAINT", order_id="o-1"),
        contact("k-2", "OPENED", T0 + HOUR, customer_id=CID, order_id="o-1"),
    )
    state, changes = apply_signals(state, T0 + 2 * DAY)
    assert sorted({c["type"] for c in changes}) == [
        "COMPLAINT_UNRESOLVED",
        "DUPLICATE_ORDER",
        "LOST_SHIPMENT_DELIVERED",
        "REPEAT_CONTACT",
        "SHIPMENT_LATE",
    ]
    public = view(state)
    assert codec.decode(codec.encode("CustomerState", public), "CustomerState") == public
    for change in changes:
        assert codec.decode(codec.encode("CustomerSignal", change), "CustomerSignal") == change
        assert not any(pii in change["detail"] for pii in ("ada", "Ada", "Okafor", "1234"))


def test_windows_must_not_be_negative() -> None:
    with pytest.raises(ValueError):
        Windows(repeat_contact_ms=-1)


# --- COMMAND_PENDING / COMMAND_FAILED (desk commands, streams/domain/commands.py) -----------------


def commanded(state: dict, body: dict, at: int, agent: str = "rep-7") -> dict:
    from streams.domain.commands import apply_command, build_command

    command = build_command(CID, {"reason": "asked by the customer", **body}, agent, now_ms=at)
    state, changed = apply_command(state, command, now_ms=at)
    assert changed
    return state


def command_signals(state: dict, now: int) -> list[tuple[str, str | None, str | None, int]]:
    return [
        (s["type"], s["order_id"], s["contact_id"], s["raised_at"])
        for s in active_signals(state, now)
        if s["type"].startswith("COMMAND_")
    ]


def test_a_cancel_is_pending_until_the_shops_cancelled_arrives() -> None:
    asked = T0 + HOUR
    cancel = {"command_id": "k-1", "type": "CANCEL_ORDER", "order_id": "o-1"}
    state = commanded(state_of(placed("o-1", T0)), cancel, asked)
    assert command_signals(state, asked + MIN) == [("COMMAND_PENDING", "o-1", None, asked)]
    (signal,) = [s for s in active_signals(state, asked + MIN) if s["type"] == "COMMAND_PENDING"]
    assert "cancellation of order o-1 asked by rep-7" in signal["detail"]
    state, _ = apply_event(state, *order(CID, "o-1", "CANCELLED", asked + 2 * MIN), now_ms=0)
    assert command_signals(state, asked + 3 * MIN) == []


def test_a_command_no_department_answers_fails_after_the_timeout() -> None:
    asked = T0 + HOUR
    state = commanded(
        state_of(contact("k-1", customer_id=CID)),
        {"command_id": "x-1", "type": "RESOLVE_CONTACT", "contact_id": "k-1"},
        asked,
    )
    timeout = DEFAULT_WINDOWS.command_timeout_ms
    assert command_signals(state, asked + timeout) == [("COMMAND_PENDING", None, "k-1", asked)]
    assert next_check_ms(state, asked + MIN) == asked + timeout + 1
    late = command_signals(state, asked + timeout + 1)
    assert late == [("COMMAND_FAILED", None, "k-1", asked + timeout)]
    (signal,) = [s for s in active_signals(state, asked + timeout + 1) if s["type"] == late[0][0]]
    assert "the contact centre did not act on it within 10 min" in signal["detail"]
    # the department acts after all: the failure goes away
    state, _ = apply_event(state, *contact("k-1", "RESOLVED", asked + HOUR, customer_id=CID), 0)
    assert command_signals(state, asked + 2 * HOUR) == []


def test_a_cancel_of_an_order_completed_meanwhile_fails_at_once() -> None:
    asked = T0 + HOUR
    cancel = {"command_id": "k-1", "type": "CANCEL_ORDER", "order_id": "o-1"}
    state = commanded(state_of(placed("o-1", T0)), cancel, asked)
    state, _ = apply_event(state, *order(CID, "o-1", "COMPLETED", asked + MIN), now_ms=0)
    assert command_signals(state, asked + 2 * MIN) == [("COMMAND_FAILED", "o-1", None, asked)]
    (signal,) = [s for s in active_signals(state, asked + 2 * MIN) if s["type"] == "COMMAND_FAILED"]
    assert signal["detail"].endswith(": the order was completed instead.")


def test_a_note_is_done_once_a_contact_carries_its_text() -> None:
    asked = T0 + HOUR
    state = commanded(
        state_of(placed("o-1", T0)),
        {"command_id": "n-1", "type": "ADD_NOTE", "note": "Call back on Monday", "order_id": "o-1"},
        asked,
    )
    assert command_signals(state, asked) == [("COMMAND_PENDING", "o-1", None, asked)]
    other = contact("k-9", customer_id=CID, note="something else", at=asked + MIN)
    state, _ = apply_event(state, *other, now_ms=0)
    assert command_signals(state, asked + 2 * MIN) == [("COMMAND_PENDING", "o-1", None, asked)]
    opened = contact("k-10", customer_id=CID, note="Call back on Monday", at=asked + 2 * MIN)
    state, _ = apply_event(state, *opened, now_ms=0)
    assert command_signals(state, asked + 3 * MIN) == []


def test_commands_on_one_target_share_one_signal_and_the_same_id_counts_once() -> None:
    from streams.domain.commands import apply_command

    asked = T0 + HOUR
    state = state_of(contact("k-1", customer_id=CID))
    for i, body in enumerate(
        [
            {"command_id": "n-1", "type": "ADD_NOTE", "contact_id": "k-1", "note": "first"},
            {"command_id": "n-2", "type": "ADD_NOTE", "contact_id": "k-1", "note": "second"},
        ]
    ):
        state = commanded(state, body, asked + i * MIN)
    again, changed = apply_command(state, {"command_id": "n-1", **state["_commands"]["n-1"]}, 0)
    assert (again, changed) == (state, False)
    assert command_signals(state, asked + 2 * MIN) == [("COMMAND_PENDING", None, "k-1", asked)]
    (signal,) = [
        s for s in active_signals(state, asked + 2 * MIN) if s["type"] == "COMMAND_PENDING"
    ]
    assert "(n-1)" in signal["detail"] and "(n-2)" in signal["detail"]


def test_a_state_keeps_the_most_recent_commands_whatever_their_order() -> None:
    from streams.domain.commands import KEPT_COMMANDS, apply_command, build_command

    commands = [
        build_command(
            CID,
            {"command_id": f"n-{i}", "type": "ADD_NOTE", "note": f"t{i}", "reason": "r"},
            "rep-7",
            now_ms=T0 + i,
        )  # fmt: skip
        for i in range(KEPT_COMMANDS + 5)
    ]
    kept = []
    for ordering in (commands, commands[::-1]):
        state = empty_state(CID)
        for command in ordering:
            state, _ = apply_command(state, command, now_ms=0)
        kept.append(sorted(state["_commands"]))
    assert kept[0] == kept[1] == sorted(f"n-{i}" for i in range(5, KEPT_COMMANDS + 5))
