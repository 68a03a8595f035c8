"""Properties of the whole design: routing + merge + signals against the reference model.

tests/join_harness.py runs the worker's own join agent (streams/worker/agent.py ``handle_batch`` and
every handler, streams/worker/checkpoint.py's batch and commit) on in-memory tables and topics,
with a seeded scheduler that interleaves the partitions adversarially and crashes batches;
tests/oracle.py says what every customer's state must be, computed from the set of events
alone. docs/contract.md §4: "The final state depends only on the set of events, never on their
interleaving or on duplicates" — so for any arrival order, any interleaving of internal
messages, any crash and any re-sent events, the two must agree exactly (except
``version``/``updated_at``, and signal wording, which tests/unit/test_signals.py reads). The
histories include contacts whose identifiers name two customers (an order of one, an e-mail
or phone of another), events days late, and re-sends after retention retired their entity.

The event times lie on a 12-minute grid, so the rules run with windows of a few minutes (and
sometimes the contract's defaults) and the clock is drawn from the same span: every signal is
seen both before and after its deadline.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain.identity import normalize_email, normalize_phone
from streams.domain.signals import (
    DEFAULT_WINDOWS,
    Windows,
    active_signals,
    apply_signals,
    next_check_ms,
)
from streams.domain.state import Limits, apply_event, empty_state
from tests.join_harness import Worker
from tests.oracle import content, expected_views
from tests.strategies import (
    BASE_MS,
    MINUTE_MS,
    KindEvent,
    conflicting_histories,
    histories,
    lost_parcel_histories,
    signal_histories,
    with_days_late,
)

SHORT = Windows(
    duplicate_order_ms=5 * MINUTE_MS,
    repeat_contact_ms=6 * MINUTE_MS,
    complaint_unresolved_ms=3 * MINUTE_MS,
)
windows = st.sampled_from((SHORT, SHORT, DEFAULT_WINDOWS))
# on, just after (1 ms) and between the whole minutes the events and deadlines lie on, over
# the events' span and a bit beyond
clock = st.builds(
    lambda k, ms: BASE_MS + k * MINUTE_MS + ms, st.integers(0, 17), st.sampled_from((0, 1, 30_000))
)
any_history = (
    signal_histories()
    | signal_histories(customers=("c-1",))
    | lost_parcel_histories()
    | histories()
    | conflicting_histories()
    | conflicting_histories().flatmap(with_days_late)
    | histories().flatmap(with_days_late)
)

PROPERTY = settings(max_examples=200, deadline=None)
#: the tests that run the whole join (each example runs tens of batches)
JOIN = settings(max_examples=150, deadline=None)


@dataclass(frozen=True)
class Pace:
    """How a simulated run goes: its scheduling seed and how its clock moves while it works.

    A clock that stays behind (step 0) leaves every deadline to the timer at the end, which
    checks ``next_check_ms``; a fast one passes deadlines between events.
    """

    seed: int
    start_ms: int
    max_step_ms: int
    crash_rate: float = 0.0

    def worker(self, now: int, w: Windows, limits: Limits | None = None) -> Worker:
        start = min(self.start_ms, now)
        return Worker(
            self.seed, windows=w, start_ms=start, max_step_ms=self.max_step_ms,
            crash_rate=self.crash_rate, **({"limits": limits} if limits else {}),
        )  # fmt: skip


paces = st.builds(
    Pace,
    st.integers(0, 2**32 - 1),
    st.integers(-4, 34).map(lambda k: BASE_MS + k * MINUTE_MS // 2),
    st.sampled_from((0, 1_000, 30_000)),
)
#: paces whose batches crash now and then (before or after their outputs were confirmed)
crashing = st.builds(
    Pace,
    st.integers(0, 2**32 - 1),
    st.integers(-4, 34).map(lambda k: BASE_MS + k * MINUTE_MS // 2),
    st.sampled_from((0, 1_000, 30_000)),
    st.sampled_from((0.0, 0.1, 0.3)),
)


def simulate(history: list[KindEvent], pace: Pace, now: int, w: Windows) -> Worker:
    return pace.worker(now, w).run(history, now)


def contents(worker: Worker) -> dict[str, dict]:
    return {customer_id: content(v) for customer_id, v in worker.views().items()}


@JOIN
@given(any_history, st.data(), crashing, clock, windows)
def test_any_arrival_order_and_interleaving_gives_the_oracle_state(
    history: list[KindEvent], data: st.DataObject, pace: Pace, now: int, w: Windows
) -> None:
    shuffled = data.draw(st.permutations(history))
    assert contents(simulate(shuffled, pace, now, w)) == expected_views(history, now, windows=w)


@JOIN
@given(any_history, st.data(), crashing, clock, windows)
def test_re_sent_events_change_nothing(
    history: list[KindEvent], data: st.DataObject, pace: Pace, now: int, w: Windows
) -> None:
    extra = data.draw(st.lists(st.sampled_from(history), min_size=1, max_size=10))
    positions = data.draw(st.lists(st.integers(0, len(history)), min_size=len(extra)))
    with_dupes = list(history)
    for item, at in zip(extra, positions, strict=False):
        with_dupes.insert(at, item)
    assert contents(simulate(with_dupes, pace, now, w)) == expected_views(history, now, windows=w)


@JOIN
@given(any_history, crashing, crashing, clock, windows)
def test_orders_arriving_last_release_what_waited_for_them(
    history: list[KindEvent], pace_a: Pace, pace_b: Pace, now: int, w: Windows
) -> None:
    orders = [ke for ke in history if ke[0] == "order"]
    others = [ke for ke in history if ke[0] != "order"]
    last = pace_a.worker(now, w).run(others, now).run(orders, now)
    first = pace_b.worker(now, w).run(orders, now).run(others, now)
    assert contents(last) == contents(first) == expected_views(history, now, windows=w)
    order_ids = {e["order_id"] for _, e in orders}
    if any(kind == "shipment" and e["order_id"] in order_ids for kind, e in others):
        assert last.held_seen > 0  # the shipments really were held, then released


@JOIN
@given(conflicting_histories(), st.data(), crashing, crashing, clock)
def test_a_contact_lands_on_the_customer_of_its_strongest_reference_whatever_comes_first(
    history: list[KindEvent], data: st.DataObject, pace_a: Pace, pace_b: Pace, now: int
) -> None:
    """An order of one customer and an e-mail or phone of another: the order wins (§4),
    whether the e-mail's customer became known first (the contact then moves) or not, and
    the other customer shows no trace of it."""
    identities = [ke for ke in history if ke[0] == "order"]
    contacts = [ke for ke in history if ke[0] != "order"]
    weak_first = sorted(identities, key=lambda ke: ke[1]["order_id"] in _contact_orders(history))
    a = pace_a.worker(now, DEFAULT_WINDOWS).run(contacts, now).run(weak_first, now)
    b = pace_b.worker(now, DEFAULT_WINDOWS).run(data.draw(st.permutations(history)), now)
    expected = expected_views(history, now)
    assert contents(a) == expected
    assert contents(b) == expected


def _contact_orders(history: list[KindEvent]) -> set[str]:
    return {e["order_id"] for k, e in history if k == "contact" and e["order_id"]}


@JOIN
@given(histories(max_events=40), st.data(), paces, clock, st.integers(0, 2))
def test_re_sends_after_retention_retired_their_entity_change_nothing(
    history: list[KindEvent], data: st.DataObject, pace: Pace, now: int, keep: int
) -> None:
    """With retention as short as 0-2 closed entities, events sent again once everything
    they caused is done (their entity may be retired by then) change no state."""
    worker = pace.worker(now, DEFAULT_WINDOWS, Limits(keep_closed=keep))
    worker.run(sorted(history, key=lambda ke: ke[1]["occurred_at"]), now)
    before = contents(worker)
    again = data.draw(st.lists(st.sampled_from(history), min_size=1, max_size=10))
    assert contents(worker.run(again, now)) == before


@PROPERTY
@given(signal_histories(customers=("c-1",)), clock, windows)
def test_signals_follow_the_rules_at_any_time(
    history: list[KindEvent], now: int, w: Windows
) -> None:
    """The rules straight on one customer's merged state, no routing: what the oracle says."""
    # every contact names its customer, so all events are this customer's without a join
    history = [(k, {**e, "customer_id": "c-1"} if k == "contact" else e) for k, e in history]
    state = empty_state("c-1")
    for kind, event in history:
        state, _ = apply_event(state, kind, event, now_ms=0)
    found = active_signals(state, now, w)
    expected = expected_views(history, now, windows=w)
    assert [{k: v for k, v in s.items() if k != "detail"} for s in found] == (
        expected["c-1"]["signals"] if expected else []
    )
    secrets = _personal_data(history)
    for s in found:
        assert s["detail"] and "@" not in s["detail"]
        assert not any(secret in s["detail"] for secret in secrets), s["detail"]


@PROPERTY
@given(any_history, st.data(), paces, clock, windows)
def test_every_change_of_a_signal_is_published_once(
    history: list[KindEvent], data: st.DataObject, pace: Pace, now: int, w: Windows
) -> None:
    """Across a whole run, per signal: RAISED and CLEARED alternate, starting with RAISED, and
    a signal ends RAISED exactly when it is active in the final state. And every state
    published (once per batch that changed it) is newer than the last, the last one stored.

    Half the runs feed events in event-time order, as departments mostly send them, so that
    signals rise and then clear while the clock moves; the other half in any order.
    """
    if data.draw(st.booleans()):
        arrival = sorted(history, key=lambda ke: ke[1]["occurred_at"])
    else:
        arrival = data.draw(st.permutations(history))
    sim = simulate(arrival, pace, now, w)
    statuses: dict[tuple, list[str]] = defaultdict(list)
    for record in sim.signals:
        key = (record["customer_id"], record["type"], record["order_id"])
        statuses[(*key, record["shipment_id"], record["contact_id"])].append(record["status"])
    active = {
        (customer_id, s["type"], s["order_id"], s["shipment_id"], s["contact_id"])
        for customer_id, v in sim.views().items()
        for s in v["signals"]
    }
    for key, seen in statuses.items():
        assert seen == ["RAISED", "CLEARED"] * (len(seen) // 2) + ["RAISED"] * (len(seen) % 2)
        assert (seen[-1] == "RAISED") == (key in active)
    assert active <= set(statuses)
    versions: dict[str, list[int]] = defaultdict(list)
    for published in sim.published:
        versions[published["customer_id"]].append(published["version"])
    views = sim.views()
    for customer_id, seen_versions in versions.items():  # once per batch, each a newer one
        assert seen_versions == sorted(set(seen_versions))
        assert seen_versions[-1] == views[customer_id]["version"]


@PROPERTY
@given(signal_histories(customers=("c-1",)), clock, windows)
def test_next_check_is_exactly_when_the_signals_next_change(
    history: list[KindEvent], now: int, w: Windows
) -> None:
    state = empty_state("c-1")
    for kind, event in history:
        state, _ = apply_event(state, kind, event, now_ms=0)

    def at(t: int) -> list[dict]:
        return active_signals(state, t, w)

    due = next_check_ms(state, now, w)
    if due is None:
        assert at(now) == at(now + 365 * 24 * 60 * MINUTE_MS)
    else:
        assert due > now
        assert at(due - 1) == at(now) != at(due)


@PROPERTY
@given(signal_histories(customers=("c-1",)), st.data(), windows)
def test_apply_signals_records_exactly_what_appeared_and_disappeared(
    history: list[KindEvent], data: st.DataObject, w: Windows
) -> None:
    """Event by event, with a clock that moves on: one RAISED per identity that appeared, one
    CLEARED per identity that disappeared, nothing for a signal whose detail merely changed;
    the stored list is what the rules say; the input is never mutated; a second call is a
    no-op returning the very same state."""
    times = sorted(data.draw(st.lists(clock, min_size=len(history), max_size=len(history))))

    def ids(signals: list[dict]) -> set[tuple]:
        return {(s["type"], s["order_id"], s["shipment_id"], s["contact_id"]) for s in signals}

    state = empty_state("c-1")
    for (kind, event), now in zip(history, times, strict=True):
        state, _ = apply_event(state, kind, event, now_ms=now)
        before = copy.deepcopy(state)
        new, changes = apply_signals(state, now, w)
        assert state == before
        assert new["signals"] == active_signals(state, now, w)
        raised = {
            (c["type"], c["order_id"], c["shipment_id"], c["contact_id"]): c
            for c in changes
            if c["status"] == "RAISED"
        }
        cleared = {
            (c["type"], c["order_id"], c["shipment_id"], c["contact_id"]): c
            for c in changes
            if c["status"] == "CLEARED"
        }
        assert len(raised) + len(cleared) == len(changes)
        assert set(raised) == ids(new["signals"]) - ids(state["signals"])
        assert set(cleared) == ids(state["signals"]) - ids(new["signals"])
        for s in new["signals"]:
            key = (s["type"], s["order_id"], s["shipment_id"], s["contact_id"])
            if key in raised:
                assert raised[key]["at"] == s["raised_at"] and raised[key]["customer_id"] == "c-1"
        assert all(c["at"] == now for c in cleared.values())
        assert (new is state) == (new["signals"] == state["signals"])
        assert apply_signals(new, now, w) == (new, [])
        state = new


def _personal_data(history: list[KindEvent]) -> set[str]:
    """Names, e-mails and phone numbers as sent and as normalised (what no detail may show)."""
    found: set[str | None] = set()
    for _, e in history:
        found.add(e.get("customer_name"))
        for email in (e.get("customer_email"), e.get("email")):
            found |= {email, normalize_email(email)}
        for phone in (e.get("customer_phone"), e.get("phone")):
            found |= {phone, normalize_phone(phone)}
    return {x.strip() for x in found if x and x != "n/a"}
