"""A department's answer to a desk command (CommandOutcome), in the state and its signals.

What is checked is what the desk reads: the COMMAND_PENDING / COMMAND_FAILED signals of the
state, whichever order the command, its answers and the department's events arrive in.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from connectors.sinks.webhook import refusal_reason
from streams.domain.commands import (
    KEPT_OUTCOMES,
    apply_command,
    apply_outcome,
    build_command,
    command_answer,
)
from streams.domain.signals import DEFAULT_WINDOWS, active_signals, apply_signals, next_check_ms
from streams.domain.state import apply_event, empty_state
from streams.encoding.codec import get_codec
from tests.builders import T0, order

MIN = 60_000
CID = "c-1"
LINES = [{"sku": "lamp", "quantity": 1, "unit_price_cents": 4900}]
ASKED = T0 + 60 * MIN
TIMEOUT = DEFAULT_WINDOWS.command_timeout_ms


def cancel(command_id: str = "x-1", order_id: str = "o-1", at: int = ASKED) -> dict[str, Any]:
    body = {"command_id": command_id, "type": "CANCEL_ORDER", "order_id": order_id,
            "reason": "duplicate"}  # fmt: skip
    return build_command(CID, body, "rep-7", now_ms=at)


def answer(
    result: str, at: int, command_id: str = "x-1", connector: str = "webhook",
    reason: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    return {"command_id": command_id, "customer_id": CID, "outcome": result, "reason": reason,
            "connector": connector, "at": at}  # fmt: skip


REFUSED = answer("REJECTED", ASKED + 2_000, reason="order o-1 has already shipped (HTTP 409)")


def placed_state() -> dict[str, Any]:
    state, _ = apply_event(empty_state(CID), *order(CID, "o-1", "PLACED", T0, lines=LINES), 0)
    return state


def apply_all(state: dict[str, Any], records: list[tuple[str, dict[str, Any]]]) -> dict:
    for kind, record in records:
        if kind == "command":
            state, _ = apply_command(state, record, now_ms=0)
        elif kind == "outcome":
            state, _ = apply_outcome(state, record, now_ms=0)
        else:
            state, _ = apply_event(state, kind, record, now_ms=0)
    return state


def command_signals(state: dict[str, Any], now: int) -> list[tuple[str, int, str]]:
    return [
        (s["type"], s["raised_at"], s["detail"])
        for s in active_signals(state, now)
        if s["type"].startswith("COMMAND_")
    ]


def test_a_rejection_fails_the_command_at_once_with_the_departments_reason() -> None:
    state = apply_all(placed_state(), [("command", cancel())])
    assert [t for t, _, _ in command_signals(state, ASKED + 1_000)] == ["COMMAND_PENDING"]

    state, changed = apply_outcome(state, REFUSED, now_ms=0)
    assert changed
    ((kind, raised_at, detail),) = command_signals(state, ASKED + 3_000)  # long before timeout
    assert (kind, raised_at) == ("COMMAND_FAILED", REFUSED["at"])
    assert detail.endswith(
        ": the web shop refused it: order o-1 has already shipped (HTTP 409)."
    ), detail
    assert "cancellation of order o-1 asked by rep-7" in detail
    # nothing waits for a timeout any more: a refused command needs no recheck
    assert next_check_ms(state, ASKED + 3_000) is None


def test_a_rejection_that_arrives_before_its_command_waits_for_it() -> None:
    early = apply_all(placed_state(), [("outcome", REFUSED)])
    assert command_signals(early, ASKED) == []  # no command yet: nothing to show it on
    assert command_answer(early, "x-1") == ("REJECTED", REFUSED["at"], "webhook",
                                            REFUSED["reason"])  # fmt: skip
    before = apply_all(early, [("command", cancel())])
    after = apply_all(placed_state(), [("command", cancel()), ("outcome", REFUSED)])
    assert command_signals(before, ASKED + 3_000) == command_signals(after, ASKED + 3_000)
    assert command_signals(before, ASKED + 3_000)[0][0] == "COMMAND_FAILED"


def test_the_same_answer_twice_or_an_older_one_changes_nothing() -> None:
    state = apply_all(placed_state(), [("command", cancel()), ("outcome", REFUSED)])
    assert apply_outcome(state, REFUSED, now_ms=5) == (state, False)
    older = {**REFUSED, "at": REFUSED["at"] - 1, "reason": "something else"}
    assert apply_outcome(state, older, now_ms=5) == (state, False)
    # a later refusal through the same connector is its answer now (e.g. after a redelivery)
    later = {**REFUSED, "at": REFUSED["at"] + 1, "reason": "order o-1 is already COMPLETED"}
    new, changed = apply_outcome(state, later, now_ms=5)
    assert changed and new["version"] == state["version"] + 1
    assert "already COMPLETED" in command_signals(new, ASKED + 3_000)[0][2]


def test_delivered_keeps_it_pending_with_a_note_until_the_shops_event() -> None:
    delivered = answer("DELIVERED", ASKED + 500)
    state = apply_all(placed_state(), [("command", cancel()), ("outcome", delivered)])
    ((kind, raised_at, detail),) = command_signals(state, ASKED + MIN)
    assert (kind, raised_at) == ("COMMAND_PENDING", ASKED)
    assert "delivered by the webhook at" in detail and "waiting for the web shop's event" in detail
    assert next_check_ms(state, ASKED + MIN) == ASKED + TIMEOUT + 1  # the timeout still holds
    assert command_signals(state, ASKED + TIMEOUT + 1)[0][0] == "COMMAND_FAILED"

    cancelled = order(CID, "o-1", "CANCELLED", ASKED + MIN, lines=LINES)[1]
    done = apply_all(state, [("order", cancelled)])
    assert command_signals(done, ASKED + 2 * MIN) == []
    assert command_signals(done, ASKED + TIMEOUT + 1) == []


def test_a_refusal_through_one_path_wins_over_a_delivery_through_another() -> None:
    """make run delivers by inbox and webhook: the inbox row is written (DELIVERED), the shop
    refuses the webhook's POST (REJECTED). The refusal is the department's answer."""
    inbox = answer("DELIVERED", REFUSED["at"] + 5_000, connector="postgres_inbox")
    for records in itertools.permutations([("command", cancel()), ("outcome", inbox),
                                           ("outcome", REFUSED)]):  # fmt: skip
        state = apply_all(placed_state(), list(records))
        ((kind, raised_at, _),) = command_signals(state, ASKED + MIN)
        assert (kind, raised_at) == ("COMMAND_FAILED", REFUSED["at"]), records


def test_the_departments_event_wins_over_a_refusal() -> None:
    """Refused through one path, carried out through the other: the CANCELLED is the truth."""
    cancelled = order(CID, "o-1", "CANCELLED", ASKED + MIN, lines=LINES)[1]
    state = apply_all(placed_state(), [("command", cancel()), ("outcome", REFUSED),
                                       ("order", cancelled)])  # fmt: skip
    assert command_signals(state, ASKED + 2 * MIN) == []


def test_a_refusal_without_a_reason_says_so() -> None:
    quiet = {**REFUSED, "reason": None}
    state = apply_all(placed_state(), [("command", cancel()), ("outcome", quiet)])
    assert command_signals(state, ASKED + MIN)[0][2].endswith("the web shop refused it (no "
                                                              "reason given).")  # fmt: skip


def test_the_failed_signal_is_raised_once_at_the_refusal_and_cleared_by_the_cancel() -> None:
    state = apply_all(placed_state(), [("command", cancel())])
    state, changes = apply_signals(state, ASKED + 1_000)
    assert [(c["status"], c["type"]) for c in changes] == [("RAISED", "COMMAND_PENDING")]
    state, _ = apply_outcome(state, REFUSED, now_ms=ASKED + 2_000)
    state, changes = apply_signals(state, ASKED + 2_000)
    assert [(c["status"], c["type"], c["at"]) for c in changes] == [
        ("CLEARED", "COMMAND_PENDING", ASKED + 2_000),
        ("RAISED", "COMMAND_FAILED", REFUSED["at"]),
    ]
    assert apply_signals(state, ASKED + 3_000) == (state, [])  # replay-safe: nothing moves
    codec = get_codec()
    for change in changes:
        assert codec.decode(codec.encode("CustomerSignal", change), "CustomerSignal") == change


def test_answers_are_bounded_and_the_result_does_not_depend_on_their_order() -> None:
    answers = [
        answer(result, ASKED + i * 1_000 + j, command_id=f"x-{i}", connector=connector,
               reason=f"r{i}" if result == "REJECTED" else None)
        for i in range(KEPT_OUTCOMES)
        for j, (result, connector) in enumerate([("DELIVERED", "postgres_inbox"),
                                                 ("REJECTED", "webhook")])
    ]  # fmt: skip
    answers += answers[:7]  # duplicates
    rng = random.Random(12)
    results = []
    for _ in range(5):
        shuffled = answers[:]
        rng.shuffle(shuffled)
        results.append(apply_all(placed_state(), [("outcome", a) for a in shuffled])["_outcomes"])
    assert all(r == results[0] for r in results)
    kept = [(c, k) for c, by in results[0].items() for k in by]
    assert len(kept) == KEPT_OUTCOMES
    assert min(int(c.split("-")[1]) for c, _ in kept) == KEPT_OUTCOMES // 2  # the newest half


def test_an_outcome_record_encodes_as_its_schema() -> None:
    codec = get_codec()
    assert codec.decode(codec.encode("CommandOutcome", REFUSED), "CommandOutcome") == REFUSED


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (409, '{"error": "order o-1 is COMPLETED"}', "order o-1 is COMPLETED (HTTP 409)"),
        (422, "not\n a   command", "not a command (HTTP 422)"),
        (403, "", "HTTP 403, no reason given"),
        (400, '["a list"]', '["a list"] (HTTP 400)'),
    ],
)  # fmt: skip
def test_the_webhook_reads_the_departments_reason_from_its_answer(
    status: int, body: str, reason: str
) -> None:
    assert refusal_reason(status, body) == reason
    assert len(refusal_reason(409, "x" * 5000)) <= 300
