"""The signal clock's index of due times (streams/worker/due_index.py): what a tick asks to
recheck."""

from __future__ import annotations

from streams.worker.due_index import DueIndex


def _index(items: list[tuple[str, int]]) -> DueIndex:
    index = DueIndex()
    for customer_id, when in items:
        index.note(customer_id, when)
    return index


def test_only_passed_deadlines_are_rechecked_earliest_first() -> None:
    index = _index([("c-1", 100), ("c-2", 300), ("c-3", 200)])
    assert index.take(200, 0.0) == ["c-1", "c-3"]


def test_a_recheck_on_its_way_is_not_sent_again_every_tick() -> None:
    index = _index([("c-1", 100)])
    assert index.take(200, 0.0) == ["c-1"]
    for tick in range(1, 12):  # five-second ticks for 55 s: still in flight
        assert index.take(200 + tick, 5.0 * tick) == []
    index.note("c-1", 150)  # a deadline that moved is a new recheck at once
    assert index.take(300, 56.0) == ["c-1"]


def test_a_recheck_that_changed_nothing_for_a_minute_is_sent_again() -> None:
    index = _index([("c-1", 100)])
    index.take(200, 0.0)
    assert index.take(200, 61.0, resend_after_s=60.0) == ["c-1"]


def test_at_most_limit_per_tick_and_the_rest_next_time() -> None:
    index = _index([(f"c-{i}", 1) for i in range(25)])
    first, second, third = (index.take(10, t, limit=10) for t in (0.0, 5.0, 10.0))
    assert (len(first), len(second), len(third)) == (10, 10, 5)
    assert len(set(first) | set(second) | set(third)) == 25


def test_moved_and_deleted_due_times_are_not_offered_stale() -> None:
    index = _index([("c-1", 10), ("c-2", 20)])
    index.note("c-1", 500)
    index.note("c-2", None)
    assert index.take(100, 0.0) == []
    assert index.take(500, 1.0) == ["c-1"]
    assert len(index) == 1


def test_a_tick_costs_what_is_due_not_the_table() -> None:
    index = _index([(f"c-{i}", 1_000 + i) for i in range(50_000)])
    assert index.take(999, 0.0) == []
    assert len(index._heap) == 50_000  # nothing popped, nothing scanned
    assert index.take(1_002, 1.0) == ["c-0", "c-1", "c-2"]


def test_unsent_rechecks_are_offered_at_the_next_tick() -> None:
    index = _index([("c-1", 5)])
    assert index.take(10, 0.0) == ["c-1"]
    index.unsent(["c-1"])
    assert index.take(10, 1.0) == ["c-1"]


def test_writes_during_a_rebuild_scan_win_over_what_the_scan_read() -> None:
    index = DueIndex()
    index.begin_rebuild()
    index.note("c-1", 900)  # a batch stored while the scan ran
    index.note("c-2", None)
    index.rebuild([("c-1", 5), ("c-2", 5), ("c-3", 5)], generation=3)
    assert index.take(10, 0.0) == ["c-3"]
    assert index.generation == 3 and index.current == {"c-1": 900, "c-3": 5}
