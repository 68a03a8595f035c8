"""Unmatched contacts (issue #14 §1): not guessed onto one of the customers an identifier names.

The join runs for real (tests/join_harness.py: the handlers of streams/worker/agent.py on a real
checkpoint.Transaction, in-memory tables, an adversarial scheduler that interleaves partitions and
crashes batches); tests/oracle.py ``expected_contacts`` says from the set of events alone
where each contact that does not name its customer ends: on a customer, or unmatched (and
why).
"""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from streams.domain.links import Guards
from streams.domain.unmatched import add_event, forget, page
from streams.worker import emit, params
from tests.builders import T0, contact, order
from tests.join_harness import Worker, assign
from tests.oracle import expected_contacts

MIN = 60_000
CUSTOMERS = ("c-1", "c-2", "c-3", "c-4", "c-5")
EMAILS = ("home@example.com", "ann@example.com", "noreply@shop.example")
PHONES = ("+49 30 123", "0170 22")
SHOP = "+4930123"


def placed_and_unmatched(worker: Worker) -> tuple[dict[str, str], dict[str, list[dict]]]:
    placed = {k["contact_id"]: c for c, v in worker.views().items() for k in v["contacts"]}
    return placed, {u["contact_id"]: u["why"] for u in worker.unmatched()}


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[str, dict]]:
    """Orders of a few customers over few e-mails and phones (so some link several customers
    or cross the sharing limit), and contacts naming no customer, by those identifiers and
    maybe an order (known or not); some events re-sent."""
    events = []
    for n in range(draw(st.integers(1, 9))):
        customer = draw(st.sampled_from(CUSTOMERS))
        at = T0 + draw(st.integers(0, 20)) * MIN
        events.append(order(customer, f"o-{n}", at=at, event_id=f"e-o{n}",
                            email=draw(st.none() | st.sampled_from(EMAILS)),
                            phone=draw(st.none() | st.sampled_from(PHONES))))  # fmt: skip
    for n in range(draw(st.integers(1, 5))):
        at = T0 + draw(st.integers(0, 20)) * MIN
        order_id = draw(st.none() | st.sampled_from(["o-0", "o-1", "o-unknown"]))
        events.append(contact(f"k-{n}", at=at, event_id=f"e-k{n}", order_id=order_id,
                              email=draw(st.none() | st.sampled_from(EMAILS)),
                              phone=draw(st.none() | st.sampled_from(PHONES))))  # fmt: skip
    events.extend(draw(st.lists(st.sampled_from(events), max_size=3)))
    return events


@settings(max_examples=150, deadline=None)
@given(histories(), st.randoms(use_true_random=False), st.integers(0, 2**16))
def test_placement_and_the_unmatched_list_depend_only_on_the_set_of_events(
    history: list, rnd: random.Random, seed: int
) -> None:
    sent = list(history)
    rnd.shuffle(sent)
    worker = Worker(seed, crash_rate=0.2).run(sent, T0 + 30 * MIN)
    note(f"sent {sent}, seed {seed}")
    assert placed_and_unmatched(worker) == expected_contacts(history)
    assert worker.deadletters == []


@pytest.mark.parametrize("shared_after", [1, 2, 3])
def test_a_phone_crossing_the_sharing_limit_in_any_order_leaves_its_contact_unmatched(
    shared_after: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four customers with one phone and a contact by it, every order of the five (the
    contact first: placed on the first owner, then given up), crashes included."""
    monkeypatch.setattr(params, "guards", Guards(shared_after=shared_after))
    orders = [order(c, f"o-{c}", at=T0 + i * MIN, event_id=f"e-{c}", phone="+49 30 123")
              for i, c in enumerate(CUSTOMERS[:4])]  # fmt: skip
    call = contact("k-1", at=T0 + 5 * MIN, event_id="e-k1", phone="+49 (30) 123")
    history = [*orders, call]
    want = expected_contacts(history, shared_after)
    assert want[0] == {} and list(want[1]) == ["k-1"]
    for n, sent in enumerate(itertools.permutations(history)):
        worker = Worker(n, crash_rate=0.3).run(list(sent), T0 + 10 * MIN)
        assert placed_and_unmatched(worker) == want, sent
    assert worker.held_count() == 1  # its copy at its case, waiting for an assignment


@pytest.mark.parametrize("seed", range(20))
def test_two_customers_of_one_phone_are_the_candidates_however_the_contact_arrived(
    seed: int,
) -> None:
    a = order("c-1", "o-1", at=T0, event_id="e-1", phone=SHOP)
    b = order("c-2", "o-2", at=T0 + MIN, event_id="e-2", phone=SHOP)
    call = contact("k-1", at=T0 + 2 * MIN, event_id="e-k1", phone=SHOP, channel="CHAT")
    worker = Worker(seed, crash_rate=0.2).run([a, call], T0 + 3 * MIN)
    assert placed_and_unmatched(worker) == ({"k-1": "c-1"}, {})  # the phone is c-1's alone
    worker.run([b], T0 + 3 * MIN)
    [entry] = worker.unmatched()
    assert entry == {"contact_id": "k-1", "channel": "CHAT", "opened_at": T0 + 2 * MIN,
                     "since": T0 + 2 * MIN, "candidates": ["c-1", "c-2"],
                     "why": [{"type": "PHONE", "value": SHOP, "guard": "LINKED",
                              "candidates": ["c-1", "c-2"]}]}  # fmt: skip
    assert worker.views()["c-1"]["contacts"] == []
    assert worker.views()["c-1"]["last_event_at"] == {"webshop": T0}  # no trace of the contact


@pytest.mark.parametrize("crash_rate", [0.0, 0.3])
def test_assign_contact_puts_it_on_the_customer_for_good_and_is_idempotent(
    crash_rate: float,
) -> None:
    orders = [order(c, f"o-{c}", at=T0, event_id=f"e-{c}", phone=SHOP) for c in CUSTOMERS]
    call = contact("k-1", at=T0 + MIN, event_id="e-k1", phone=SHOP)
    for seed in range(15):
        worker = Worker(seed, crash_rate=crash_rate).run([*orders, call], T0 + 2 * MIN)
        assert [u["contact_id"] for u in worker.unmatched()] == ["k-1"]
        worker.run([assign("x-1", "k-1", "c-2", at=T0 + 3 * MIN),
                    assign("x-1", "k-1", "c-2", at=T0 + 3 * MIN),  # the same command again
                    assign("x-2", "k-1", "c-3", at=T0 + 4 * MIN)], T0 + 5 * MIN)  # fmt: skip
        assert worker.unmatched() == []
        placed, _ = placed_and_unmatched(worker)
        assert placed == {"k-1": "c-2"}, seed
        audit = worker.table("unmatched")["k:k-1"]["assigned"]
        assert audit == {"command_id": "x-1", "customer_id": "c-2", "agent": "rep-7",
                         "reason": "called back", "requested_at": T0 + 3 * MIN}  # fmt: skip
        # later events of it join there; a stronger reference of it does not move it
        worker.run([order("c-4", "o-late", at=T0 + 6 * MIN, event_id="e-late"),
                    contact("k-1", "RESOLVED", at=T0 + 7 * MIN, event_id="e-k2", phone=SHOP,
                            order_id="o-late")], T0 + 8 * MIN)  # fmt: skip
        views = worker.views()
        assert [(k["contact_id"], k["status"]) for k in views["c-2"]["contacts"]] == [
            ("k-1", "RESOLVED")], seed  # fmt: skip
        assert views["c-4"]["contacts"] == []
        assert worker.held_count() == 0 and worker.deadletters == []


def test_a_stronger_reference_takes_an_unmatched_contact_off_the_list() -> None:
    for seed in range(20):
        a = order("c-1", "o-1", at=T0, event_id="e-1", phone=SHOP)
        b = order("c-2", "o-2", at=T0, event_id="e-2", phone=SHOP)
        call = contact("k-1", at=T0 + MIN, event_id="e-k1", phone=SHOP, order_id="o-9")
        worker = Worker(seed, crash_rate=0.2).run([a, b, call], T0 + 2 * MIN)
        assert [u["contact_id"] for u in worker.unmatched()] == ["k-1"]
        worker.run([order("c-3", "o-9", at=T0 + 3 * MIN, event_id="e-9")], T0 + 4 * MIN)
        assert placed_and_unmatched(worker) == ({"k-1": "c-3"}, {}), seed
        assert "k:k-1" not in worker.table("unmatched")


def test_an_unmatched_contact_never_expires_to_the_dead_letters() -> None:
    a = order("c-1", "o-1", at=T0, event_id="e-1", phone=SHOP)
    b = order("c-2", "o-2", at=T0, event_id="e-2", phone=SHOP)
    call = contact("k-1", at=T0 + MIN, event_id="e-k1", phone=SHOP)
    worker = Worker(1).run([a, b, call], T0 + 2 * MIN)
    held = worker.held_messages()
    assert len(held) == 1 and held[0]["unmatched"]
    late = T0 + 10**9  # whatever the held clock's cutoffs, by event time and the wall clock
    worker._send(emit.REF_TOPIC["contact"], "k-1",
                 {"op": "expire", "before": late, "wall_before": late})  # fmt: skip
    worker.run([], T0 + 2 * MIN)
    assert worker.deadletters == [] and worker.held_count() == 1
    assert [u["contact_id"] for u in worker.unmatched()] == ["k-1"]


def test_an_erased_customer_leaves_the_unmatched_list() -> None:
    for seed in range(15):
        orders = [order(c, f"o-{c}", at=T0, event_id=f"e-{c}", phone=SHOP)
                  for c in CUSTOMERS[:3]]  # fmt: skip
        calls = [contact("k-1", at=T0 + MIN, event_id="e-k1", phone=SHOP),
                 contact("k-2", at=T0 + MIN, event_id="e-k2", phone=SHOP)]  # fmt: skip
        worker = Worker(seed, crash_rate=0.2).run([*orders, *calls], T0 + 2 * MIN)
        worker.run([assign("x-1", "k-2", "c-1", at=T0 + 3 * MIN)], T0 + 3 * MIN)
        request = {"request_id": "r-1", "customer_id": "c-1", "requested_by": "dpo",
                   "requested_at": T0 + 5 * MIN, "reason": "DSR-1"}  # fmt: skip
        worker.run([("erasure", request)], T0 + 5 * MIN)
        [entry] = worker.unmatched()
        assert entry["candidates"] == ["c-2", "c-3"], seed
        rows = " ".join(f"{t} {k} {v.decode()}" for (t, k), v in worker.rows.items())
        assert "c-1" not in rows, seed


def test_rows_merge_by_identifier_and_forget_an_erased_customer() -> None:
    e1 = {"contact_id": "k-1", "event_id": "e-1", "occurred_at": 9, "type": "NOTE_ADDED",
          "channel": "CHAT"}  # fmt: skip
    e2 = {"contact_id": "k-1", "event_id": "e-2", "occurred_at": 5, "type": "OPENED",
          "channel": "PHONE"}  # fmt: skip
    linked = {"type": "PHONE", "value": "1", "guard": "LINKED", "candidates": ["a", "b"]}
    shared = {"type": "PHONE", "value": "1", "guard": "SHARED", "candidates": []}
    for first, second in ((e1, e2), (e2, e1)):
        row = add_event(add_event(None, first, [linked]), second, [shared])
        assert (row["channel"], row["opened_at"], row["since"]) == ("CHAT", 5, 5)
        assert row["why"] == [shared]
    row = add_event(None, e1, [linked])
    assert forget(row, "a")["why"][0]["candidates"] == ["b"]
    assert forget({**row, "assigned": {"customer_id": "a"}}, "a") is None
    assert page([{**row, "assigned": {"customer_id": "b"}}], None, 10) == ([], None)
