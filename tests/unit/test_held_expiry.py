"""Held events that wait too long go to the dead letters (issue #11 §6, docs/contract.md §4).

The join agent's handlers run here on a real :class:`streams.worker.checkpoint.Transaction` with the
tables
and Kafka replaced by recorders, so what is checked is what the worker does: which dead
letter it produces, with which reason and headers, what it leaves in the held tables, what
``keel_held_events`` says, and that the dead letter is confirmed before the held row goes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain.join import CONTACT, EMAIL, ORDER, expired_held, held_expiry
from streams.encoding.codec import get_codec
from streams.ops import metrics
from streams.worker import agent as agents
from streams.worker import checkpoint, clock, emit, tables
from streams.worker.held_index import HeldIndex
from streams.worker.intake import first_hop
from tests.builders import T0, contact, shipment

DAY_MS = 86_400_000
NAMES = {"customer": emit.CUSTOMER_EVENTS, **emit.REF_TOPIC}


class _Outbox:
    def __init__(self, log: list[tuple[str, str, Any, Any, Any]], name: str) -> None:
        self.log, self.name = log, name
        self.offsets: dict[tuple[str, int], int] = {}

    def produce(
        self, topic: str, key: Any, value: Any, headers: Any = None, partition: int | None = None
    ) -> None:
        self.log.append((self.name, topic, key, value, headers))
        self.offsets[(topic, partition or 0)] = 1

    async def confirmed(self) -> None:
        self.log.append((self.name, "confirmed", None, None, None))


class _Emitter:
    def __init__(self, log: list) -> None:
        self.log = log

    def outbox(self) -> _Outbox:
        return _Outbox(self.log, "changelog")


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> dict[tuple[str, str], Any]:
    """(table name, key) -> value: the tables, read by the handlers and written at commit."""
    monkeypatch.setattr(clock, "event_clock", {})  # no event time seen yet
    rows: dict[tuple[str, str], Any] = {}
    monkeypatch.setattr(tables, "read",
                        lambda table, partition, key: (rows.get((table.name, key)), 0))
    monkeypatch.setattr(checkpoint.read_cache, "budget", 0)  # rows are changed by hand too

    def write(table: Any, partition: int, changed: list, offset: int) -> None:
        for key, value in changed:
            if value is None:
                rows.pop((table.name, key.decode()), None)
            else:
                rows[(table.name, key.decode())] = orjson.loads(value)

    monkeypatch.setattr(tables, "write", write)
    return rows


def _hold(kind_event: tuple[str, dict], log: list) -> None:
    """Send an event through its join as the intake would, while none of its refs is known."""
    kind, event = kind_event
    topic, key, message = first_hop(kind, event, f"{kind}s.v1", NAMES)
    pending = [(topic, key, message)]
    while pending:  # the chain: each lookup holds and passes the event on
        topic, key, message = pending.pop()
        batch = checkpoint.Transaction(_Outbox(log, "outputs"))  # type: ignore[arg-type]
        batch.at(tables.partition_of(key))  # as the agent does for its record
        agents.HANDLERS[topic](batch, key, message)
        batch.internal.flush()
        assert asyncio.run(checkpoint.commit(batch, _Emitter(log), lambda: True))  # type: ignore[arg-type]
        for _, t, _, value, _ in [x for x in log if x[0] == "outputs" and x[1] in NAMES.values()]:
            pending += [(t, k, m) for k, m in orjson.loads(value)]
        log.clear()


def _handle(topic: str, key: str, message: dict, log: list) -> None:
    batch = checkpoint.Transaction(_Outbox(log, "outputs"))  # type: ignore[arg-type]
    batch.at(tables.partition_of(key))
    agents.HANDLERS[topic](batch, key, message)
    assert asyncio.run(checkpoint.commit(batch, _Emitter(log), lambda: True))  # type: ignore[arg-type]


def test_a_shipment_whose_order_never_comes_is_a_dead_letter_after_the_hold_time(
    store: dict,
) -> None:
    log: list = []
    kind_event = shipment("o-never", "s-1", at=T0)
    _hold(kind_event, log)
    assert len(store[("order-held", "o-never")]) == 1
    held_before = metrics.HELD._value.get()

    before = T0 + 1  # the cutoff the clock sends: events older than this have waited too long
    _handle(emit.REF_TOPIC[ORDER], "o-never", {"op": "expire", "before": before}, log)

    letters = [x for x in log if x[1] == emit.DEADLETTER_TOPIC]
    assert len(letters) == 1
    _, _, key, value, headers = letters[0]
    h = dict(headers)
    assert key == b"o-never"
    assert get_codec().decode(value, "ShipmentEvent") == kind_event[1]  # the event itself
    assert h["x-error"].decode().startswith("no customer ever became known for order o-never")
    assert h["x-source-topic"] == b"shipments.v1"
    assert {"x-source-partition", "x-source-offset", "x-failed-at"} <= set(h)
    assert ("order-held", "o-never") not in store
    assert metrics.HELD._value.get() == held_before - 1
    # the dead letter is confirmed before the held row is deleted (a crash in between: again)
    steps = [x[0] if x[1] != "confirmed" else f"{x[0]} confirmed" for x in log]
    assert steps.index("outputs confirmed") < steps.index("changelog")


def test_a_contact_is_dead_lettered_once_and_dropped_at_every_reference_it_waited_at(
    store: dict,
) -> None:
    log: list = []
    _hold(contact("k-1", at=T0, order_id="o-9", email="Nobody@Example.com"), log)
    assert {k for k in store if k[0].endswith("-held")} == {
        ("contact-held", "k-1"),
        ("order-held", "o-9"),
        ("email-held", "nobody@example.com"),
    }
    # the copies further down the chain do not expire by themselves: no second dead letter
    _handle(emit.REF_TOPIC[EMAIL], "nobody@example.com", {"op": "expire", "before": T0 + 1}, log)
    assert not [x for x in log if x[1] == emit.DEADLETTER_TOPIC]
    log.clear()
    _handle(emit.REF_TOPIC[CONTACT], "k-1", {"op": "expire", "before": T0 + 1}, log)
    [letter] = [x for x in log if x[1] == emit.DEADLETTER_TOPIC]
    assert (
        dict(letter[4])["x-error"]
        .decode()
        .startswith(
            "no customer ever became known for case k-1/order o-9/e-mail nobody@example.com"
        )
    )
    unholds = [
        (t, k, m) for x in log if x[0] == "outputs" and x[1] in emit.REF_TOPIC.values()
        for t in [x[1]] for k, m in orjson.loads(x[3])
    ]  # fmt: skip
    for topic, key, message in unholds:
        _handle(topic, key, message, [])
    assert not [k for k in store if k[0].endswith("-held")]


def test_what_is_younger_than_the_cutoff_keeps_waiting(store: dict) -> None:
    log: list = []
    _hold(shipment("o-late", "s-1", at=T0), log)
    _handle(emit.REF_TOPIC[ORDER], "o-late", {"op": "expire", "before": T0}, log)
    assert not [x for x in log if x[1] == emit.DEADLETTER_TOPIC]
    assert len(store[("order-held", "o-late")]) == 1


def test_a_backfilled_event_waits_its_hold_time_from_when_it_was_held(store: dict) -> None:
    """Held by the event time its partition had seen then, not by its own (old) occurred_at."""
    log: list = []
    month = 30 * DAY_MS
    clock.saw(tables.partition_of("o-old"), T0 + month)  # live traffic went on
    _hold(shipment("o-old", "s-1", at=T0), log)  # a department's backfill
    [waiting] = store[("order-held", "o-old")]
    assert waiting["held_at"] == T0 + month
    _handle(emit.REF_TOPIC[ORDER], "o-old", {"op": "expire", "before": T0 + 1}, log)
    assert not [x for x in log if x[1] == emit.DEADLETTER_TOPIC]
    _handle(emit.REF_TOPIC[ORDER], "o-old", {"op": "expire", "before": T0 + month + 1}, log)
    assert len([x for x in log if x[1] == emit.DEADLETTER_TOPIC]) == 1


def test_the_clock_asks_for_expiry_by_the_event_time_its_partition_has_seen() -> None:
    waiting = [{"kind": "shipment", "event": shipment("o-1", "s-1", at=T0)[1], "refs": []}]
    rows = [(ORDER, "o-1", waiting)]
    week = 7 * DAY_MS
    assert held_expiry(rows, lambda ns, ref: T0 + week, week) == []  # exactly 7 days: not yet
    assert held_expiry(rows, lambda ns, ref: T0 + week + 1, week) == [(ORDER, "o-1", T0 + 1)]
    assert held_expiry(rows, lambda ns, ref: None, week) == []  # no event time seen yet
    assert expired_held(waiting, ORDER, "o-1", T0 + 1) == waiting
    assert expired_held(waiting, EMAIL, "o-1", T0 + 1) == []  # not where its chain starts


def test_a_backlog_running_a_partitions_clock_ahead_expires_nothing_held_moments_ago() -> None:
    """A replay or catch-up: the order-refs partition has seen events 30 days later than a
    held shipment within the same minute of wall time, while the order that binds it still
    waits in customer-events. Event time alone would dead-letter the shipment (the bench's
    200,000-event backlog lost 1,561 events so); it must also have waited by the wall clock."""
    month = 30 * 86_400_000
    hold = 7 * 86_400_000
    m = {"kind": "shipment", "event": {"order_id": "o-1", "occurred_at": T0},
         "held_at": T0, "held_wall": 1_000_000}  # fmt: skip
    rows = [(ORDER, "o-1", [m])]
    assert held_expiry(rows, lambda ns, ref: T0 + month, hold) == [
        (ORDER, "o-1", T0 + month - hold)
    ]
    assert held_expiry(rows, lambda ns, ref: T0 + month, hold, 1_000_000 + 60_000) == []
    assert expired_held([m], ORDER, "o-1", T0 + month - hold, 1_000_000 + 60_000 - hold) == []
    later = 1_000_000 + hold + 1
    assert held_expiry(rows, lambda ns, ref: T0 + month, hold, later) == [
        (ORDER, "o-1", T0 + month - hold)
    ]


# ------------------------------------------------------------------ the held clock's index

_REFS = [(ORDER, f"o-{i}") for i in range(4)] + [(EMAIL, f"e{i}@x") for i in range(3)]


def _held_row(ns: str, ref: str, times: list[tuple[int, int]], placed: bool) -> list[dict]:
    kind, field = ("shipment", "order_id") if ns == ORDER else ("contact", "email")
    return [
        {"kind": kind, "event": {field: ref, "occurred_at": at, "event_id": f"{ref}-{n}",
                                 "contact_id": f"k-{n}", "shipment_id": f"s-{n}"},
         "held_at": at, "held_wall": wall, **({"placed_on": "c-9"} if placed else {})}
        for n, (at, wall) in enumerate(times)
    ]  # fmt: skip


_times = st.lists(st.tuples(st.integers(0, 100), st.integers(0, 100)), max_size=3)
_write = st.tuples(st.sampled_from(_REFS), _times, st.booleans())
_tick = st.tuples(st.integers(0, 200), st.integers(0, 200), st.integers(1, 60))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(st.tuples(st.just("write"), _write), st.tuples(st.just("tick"), _tick),
                       st.tuples(st.just("rebuild"), st.lists(_write, max_size=3)))),
    st.dictionaries(st.sampled_from([ns for ns, _ in _REFS]), st.integers(0, 200)),
)  # fmt: skip
def test_the_held_index_finds_what_a_scan_of_the_held_tables_finds(
    steps: list, event_clock: dict
) -> None:
    """streams/worker/held_index.py against ``held_expiry`` (the scan it replaces) after any history
    of writes, deletes, ticks and rebuilds with writes landing during the rebuild's scan."""
    table: dict[tuple[str, str], list[dict]] = {}
    index = HeldIndex()

    def write(key: tuple[str, str], times: list, placed: bool) -> None:
        row = _held_row(*key, times, placed) or None
        if row:
            table[key] = row
        else:
            table.pop(key, None)
        index.note(*key, row)

    def clock(ns: str, ref: str) -> int | None:
        return event_clock.get(ns)

    for step, arg in steps:
        if step == "write":
            write(*arg)
        elif step == "rebuild":
            index.begin_rebuild()
            scanned = [(ns, ref, rows) for (ns, ref), rows in table.items()]
            for w in arg:  # a batch stored while the scan ran
                write(*w)
            index.rebuild(scanned)
        else:
            wall_now, hold, _ = arg
            rows = [(ns, ref, rows) for (ns, ref), rows in table.items()]
            assert sorted(index.take(clock, hold, wall_now)) == sorted(
                held_expiry(rows, clock, hold, wall_now)
            )


def test_a_tick_with_nothing_held_long_enough_by_the_wall_clock_looks_at_no_row() -> None:
    index = HeldIndex()
    for i in range(1000):
        index.note(ORDER, f"o-{i}", _held_row(ORDER, f"o-{i}", [(0, 1000 + i)], False))
    assert index.take(lambda ns, ref: 10**9, hold_max_ms=100, wall_now_ms=1050) == []
    assert index.ripe == set()  # the heap stopped at its first row
    assert len(index.take(lambda ns, ref: 10**9, 100, 1150, limit=20)) == 20
    assert len(index.ripe) == 50  # held before 1050: ripe until a batch rewrites them
    index.note(ORDER, "o-0", None)  # expired and deleted by the agent
    assert ("order", "o-0") not in index.ripe and len(index) == 999
