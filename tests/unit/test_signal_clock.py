"""The signal clock's choice of rechecks (streams/agents.py ``due_rechecks``)."""

from __future__ import annotations

from streams.agents import due_rechecks


def test_only_passed_deadlines_are_rechecked() -> None:
    sent: dict[str, tuple[int, float]] = {}
    assert due_rechecks([("c-1", 100), ("c-2", 300), ("c-3", 200)], 200, sent, 0.0) == [
        "c-1", "c-3"
    ]


def test_a_recheck_on_its_way_is_not_sent_again_every_tick() -> None:
    sent: dict[str, tuple[int, float]] = {}
    items = [("c-1", 100)]
    assert due_rechecks(items, 200, sent, 0.0) == ["c-1"]
    for tick in range(1, 12):  # five-second ticks for 55 s: still in flight
        assert due_rechecks(items, 200 + tick, sent, 5.0 * tick) == []
    # a deadline that moved is a new recheck at once
    assert due_rechecks([("c-1", 150)], 300, sent, 56.0) == ["c-1"]


def test_a_recheck_that_changed_nothing_for_a_minute_is_sent_again() -> None:
    sent: dict[str, tuple[int, float]] = {}
    due_rechecks([("c-1", 100)], 200, sent, 0.0)
    assert due_rechecks([("c-1", 100)], 200, sent, 61.0, resend_after_s=60.0) == ["c-1"]


def test_at_most_limit_per_tick_and_the_rest_next_time() -> None:
    sent: dict[str, tuple[int, float]] = {}
    items = [(f"c-{i}", 1) for i in range(25)]
    first = due_rechecks(items, 10, sent, 0.0, limit=10)
    second = due_rechecks(items, 10, sent, 5.0, limit=10)
    third = due_rechecks(items, 10, sent, 10.0, limit=10)
    assert (len(first), len(second), len(third)) == (10, 10, 5)
    assert len(set(first) | set(second) | set(third)) == 25
