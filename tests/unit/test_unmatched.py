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

import orjson
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from streams.domain.join import mark_held, route
from streams.domain.links import Guards
from streams.domain.unmatched import add_event, forget, page
from streams.worker import emit, params
from streams.worker import messages as msg
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


def test_a_contact_given_up_is_not_lost_at_a_stale_copy_of_it_down_its_chain() -> None:
    """The counterexample hypothesis found (seed 6016): k-0 (an unknown e-mail, the phone of
    c-1's o-3 and c-2's o-7) is placed on c-1 through the phone; a crashed batch had sent its
    lookup on to the e-mail twice, so a plain copy waits there again next to the watching
    one. Once o-7 links the phone, c-1 gives k-0 up and resolves it again: the new lookup
    must pass the e-mail (where an older copy of the same version waits) on to the phone and
    end on the list, not stop as if it had gone down the chain already."""
    sent = [order("c-1", "o-0", event_id="e-o0"),
            order("c-1", "o-3", event_id="e-o3", phone="+49 30 123"),
            order("c-1", "o-3", event_id="e-o3", phone="+49 30 123"),
            contact("k-0", event_id="e-k0", email="home@example.com", phone="+49 30 123"),
            order("c-1", "o-1", event_id="e-o1"), order("c-2", "o-5", event_id="e-o5"),
            order("c-1", "o-6", event_id="e-o6"),
            order("c-2", "o-7", event_id="e-o7", phone="+49 30 123"),
            order("c-1", "o-2", event_id="e-o2"), contact("k-1", event_id="e-k1"),
            contact("k-2", event_id="e-k2"), order("c-1", "o-4", event_id="e-o4")]  # fmt: skip
    worker = Worker(6016, crash_rate=0.2).run(sent, T0 + 30 * MIN)
    want = ({}, {"k-0": [{"type": "PHONE", "value": SHOP, "guard": "LINKED",
                          "candidates": ["c-1", "c-2"]}]})  # fmt: skip
    assert expected_contacts(sent) == want
    assert placed_and_unmatched(worker) == want
    assert worker.deadletters == []


def test_a_contact_resolved_again_passes_a_copy_of_it_already_held_down_its_chain() -> None:
    """The same, on the handlers alone: what an earlier pass left at the e-mail (a copy
    watching for it on behalf of c-1, and a plain one of the same version a re-delivered
    lookup put back) does not stop the lookup c-1 sent when it gave the contact up."""
    _, call = contact("k-0", event_id="e-k0", email="home@example.com", phone=SHOP)
    (case, email, phone) = route("contact", call).refs
    plain = msg.lookup("contact", call, "contacts.v1", [list(phone)])
    watching = mark_held(None, {"kind": "contact", "event": call, "topic": "contacts.v1"}, "c-1")
    rows = {
        ("email-held", email[1]): [*watching, plain],
        ("phone-owners", phone[1]): "c-1",
        ("phone-identities", phone[1]): {"v": 2, "m": {"c-1": T0, "c-2": T0}},
    }
    worker = Worker(1, rows={k: orjson.dumps(v) for k, v in rows.items()})
    again = msg.lookup("contact", call, "contacts.v1", [list(email), list(phone)], fresh=True)
    worker._send(emit.REF_TOPIC[case[0]], case[1], again)
    worker.run([], T0)
    why = {"type": "PHONE", "value": SHOP, "guard": "LINKED", "candidates": ["c-1", "c-2"]}
    assert placed_and_unmatched(worker) == ({}, {"k-0": [why]})


def test_a_contact_moved_onto_a_customer_that_refuses_it_does_not_leave_its_case_there() -> None:
    """A sibling (seed 15672): k-1, on c-1 through its phone, moves to c-5 when c-5 binds its
    e-mail, which c-2 binds in the same batch (linked). c-1's rebind gives the case to c-5,
    but c-5 knows the e-mail is ambiguous and resolves k-1 again; the case must not still
    name c-5 then, or k-1 joins c-5 through it instead of ending on the list."""
    sent = [order("c-1", "o-2", at=T0 + 3 * MIN, event_id="e-o2", email="noreply@shop.example"),
            contact("k-1", at=T0 + 3 * MIN, event_id="e-k1", email="home@example.com",
                    phone="0170 22"),
            order("c-1", "o-2", at=T0 + 3 * MIN, event_id="e-o2", email="noreply@shop.example"),
            contact("k-0", at=T0 + 7 * MIN, event_id="e-k0", order_id="o-0"),
            order("c-5", "o-5", at=T0 + 3 * MIN, event_id="e-o5", phone="+49 30 123"),
            order("c-4", "o-0", at=T0 + 14 * MIN, event_id="e-o0"),
            order("c-1", "o-6", at=T0 + 16 * MIN, event_id="e-o6", email="ann@example.com",
                  phone="0170 22"),
            contact("k-2", at=T0 + 7 * MIN, event_id="e-k2", order_id="o-1",
                    email="home@example.com"),
            order("c-5", "o-3", at=T0 + 11 * MIN, event_id="e-o3", email="home@example.com"),
            order("c-2", "o-1", at=T0 + 14 * MIN, event_id="e-o1", email="home@example.com",
                  phone="0170 22"),
            order("c-4", "o-4", at=T0 + 5 * MIN, event_id="e-o4", email="noreply@shop.example",
                  phone="0170 22")]  # fmt: skip
    worker = Worker(15672, crash_rate=0.2).run(sent, T0 + 30 * MIN)
    want = ({"k-0": "c-4", "k-2": "c-2"}, {"k-1": [
        {"type": "EMAIL", "value": "home@example.com", "guard": "LINKED",
         "candidates": ["c-2", "c-5"]},
        {"type": "PHONE", "value": "017022", "guard": "LINKED",
         "candidates": ["c-1", "c-2", "c-4"]}]})  # fmt: skip
    assert expected_contacts(sent) == want
    assert placed_and_unmatched(worker) == want
    assert worker.deadletters == []


def test_a_customer_refusing_a_contact_moved_to_it_releases_the_case_the_move_gave_it() -> None:
    """The same, on the handlers alone: the case names c-5 (the rebind of a move) and the
    moved event reaches c-5 through an e-mail c-5 knows links c-2 too."""
    email = "home@example.com"
    worker = Worker(1).run([order("c-5", "o-5", event_id="e-5", email=email),
                            order("c-2", "o-2", event_id="e-2", email=email)], T0)  # fmt: skip
    worker.rows[("contact-owners", "k-1")] = orjson.dumps("c-5")  # what the rebind did
    _, call = contact("k-1", at=T0 + MIN, event_id="e-k1", email=email)
    worker._send(emit.CUSTOMER_EVENTS, "c-5", msg.event("contact", call, "contacts.v1", 2))
    worker.run([], T0 + 2 * MIN)
    why = {"type": "EMAIL", "value": email, "guard": "LINKED", "candidates": ["c-2", "c-5"]}
    assert placed_and_unmatched(worker) == ({}, {"k-1": [why]})
    assert "k-1" not in worker.table("contact-owners")


@pytest.mark.parametrize("seed", range(5))
def test_a_contact_that_comes_back_to_a_customer_it_left_stays_there(seed: int) -> None:
    """A sibling (seed 728 found it): k-1 joins c-1 by its phone, moves to c-4 by its e-mail,
    then back to c-1 by its order. c-1 remembers it moved to c-4, and must take it through
    the stronger reference now instead of sending it back to c-4, which sent it on to c-1
    again, for ever."""
    call = contact("k-1", at=T0 + MIN, event_id="e-k1", order_id="o-1",
                   email="ann@example.com", phone=SHOP)  # fmt: skip
    worker = Worker(seed, crash_rate=0.2, max_batches=2000).run([call], T0 + MIN)
    worker.run([order("c-1", "o-3", event_id="e-o3", phone=SHOP)], T0 + 2 * MIN)
    assert placed_and_unmatched(worker) == ({"k-1": "c-1"}, {})
    worker.run([order("c-4", "o-5", event_id="e-o5", email="ann@example.com")], T0 + 3 * MIN)
    assert placed_and_unmatched(worker) == ({"k-1": "c-4"}, {})
    worker.run([order("c-1", "o-1", event_id="e-o1")], T0 + 4 * MIN)
    assert placed_and_unmatched(worker) == ({"k-1": "c-1"}, {})
    assert worker.table("contact-owners")["k-1"] == "c-1"
    assert worker.views()["c-4"]["contacts"] == [] and worker.held_count() == 0


def test_a_case_a_late_rebind_gives_to_a_customer_that_gave_the_contact_up_is_released() -> None:
    """A sibling (seed 58779): k-1 reaches c-3 through its e-mail (a plain copy held there)
    while c-2, which had it by its phone, moves it to c-3 too. c-3 gives it up when the
    e-mail links c-5 (its release finds the case still c-2's), and c-2's rebind then gives
    the case to c-3: what the case sends c-3 must not go round between them for ever."""
    sent = [contact("k-3", at=T0 + 7 * MIN, event_id="e-k3", email="ann@example.com"),
            contact("k-1", at=T0 + 8 * MIN, event_id="e-k1", email="home@example.com",
                    phone="+49 30 123"),
            order("c-5", "o-0", at=T0 + 20 * MIN, event_id="e-o0", email="ann@example.com",
                  phone="0170 22"),
            order("c-5", "o-0", at=T0 + 20 * MIN, event_id="e-o0", email="ann@example.com",
                  phone="0170 22"),
            order("c-2", "o-3", at=T0 + 5 * MIN, event_id="e-o3", phone="+49 30 123"),
            order("c-3", "o-5", at=T0 + 13 * MIN, event_id="e-o5", email="home@example.com"),
            contact("k-2", at=T0 + 6 * MIN, event_id="e-k2", phone="0170 22"),
            order("c-2", "o-3", at=T0 + 5 * MIN, event_id="e-o3", phone="+49 30 123"),
            order("c-5", "o-6", at=T0 + 2 * MIN, event_id="e-o6", email="home@example.com"),
            order("c-4", "o-4", at=T0 + 19 * MIN, event_id="e-o4", email="home@example.com",
                  phone="0170 22"),
            order("c-2", "o-3", at=T0 + 5 * MIN, event_id="e-o3", phone="+49 30 123"),
            order("c-1", "o-8", at=T0 + 17 * MIN, event_id="e-o8", email="noreply@shop.example"),
            order("c-4", "o-2", at=T0 + 20 * MIN, event_id="e-o2"),
            order("c-1", "o-1", at=T0 + 13 * MIN, event_id="e-o1", email="ann@example.com"),
            order("c-5", "o-7", at=T0 + 20 * MIN, event_id="e-o7", email="noreply@shop.example",
                  phone="0170 22"),
            contact("k-0", at=T0 + 7 * MIN, event_id="e-k0", email="ann@example.com")]  # fmt: skip
    worker = Worker(58779, crash_rate=0.2, max_batches=5000).run(sent, T0 + 30 * MIN)
    assert placed_and_unmatched(worker) == expected_contacts(sent)
    assert placed_and_unmatched(worker)[0] == {"k-1": "c-2"}  # its phone is c-2's alone
    assert worker.deadletters == []


def test_a_customer_that_gave_a_contact_up_releases_its_case_when_the_case_sends_it_back() -> None:
    """The same, on the handlers alone: c-3 gave k-1 up (its e-mail links c-5 now), and the
    case names c-3 all the same (a rebind that came after c-3's release)."""
    email = "home@example.com"
    call = contact("k-1", at=T0 + MIN, event_id="e-k1", email=email)
    worker = Worker(1, max_batches=500)
    worker.run([order("c-3", "o-5", event_id="e-5", email=email), call], T0 + MIN)
    assert placed_and_unmatched(worker) == ({"k-1": "c-3"}, {})
    worker.run([order("c-5", "o-6", event_id="e-6", email=email)], T0 + 2 * MIN)
    why = {"type": "EMAIL", "value": email, "guard": "LINKED", "candidates": ["c-3", "c-5"]}
    assert placed_and_unmatched(worker) == ({}, {"k-1": [why]})
    worker.rows[("contact-owners", "k-1")] = orjson.dumps("c-3")  # the late rebind
    worker._send(emit.CUSTOMER_EVENTS, "c-3", msg.event("contact", call[1], "contacts.v1", 4))
    worker.run([], T0 + 3 * MIN)
    assert placed_and_unmatched(worker) == ({}, {"k-1": [why]})
    assert "k-1" not in worker.table("contact-owners")


def test_an_event_passed_on_after_a_move_keeps_the_rank_of_the_move() -> None:
    """A sibling (seed 1245): k-3 (e-mail and phone each of c-1 and c-3 in the end) is on c-1
    by its phone and moves to c-3 by its e-mail, just as the e-mail links them. c-1 passes a
    copy that reached it through the case on to c-3; as a case event c-3 took it, its case
    with it, though the e-mail it went there by names no one now."""
    sent = [contact("k-3", at=T0 + 13 * MIN, event_id="e-k3", email="ann@example.com",
                    phone="+49 30 123"),
            contact("k-1", at=T0 + 8 * MIN, event_id="e-k1", order_id="o-unknown",
                    email="noreply@shop.example"),
            order("c-2", "o-0", at=T0 + 12 * MIN, event_id="e-o0", email="noreply@shop.example",
                  phone="0170 22"),
            contact("k-2", at=T0 + 4 * MIN, event_id="e-k2", order_id="o-unknown",
                    email="ann@example.com", phone="0170 22"),
            order("c-1", "o-2", at=T0 + 1 * MIN, event_id="e-o2", phone="+49 30 123"),
            order("c-1", "o-3", at=T0 + 13 * MIN, event_id="e-o3", email="noreply@shop.example",
                  phone="0170 22"),
            order("c-3", "o-5", at=T0 + 7 * MIN, event_id="e-o5", email="ann@example.com",
                  phone="0170 22"),
            contact("k-0", at=T0, event_id="e-k0", email="noreply@shop.example",
                    phone="0170 22"),
            order("c-1", "o-1", at=T0 + 5 * MIN, event_id="e-o1", email="ann@example.com",
                  phone="+49 30 123"),
            order("c-3", "o-4", at=T0 + 9 * MIN, event_id="e-o4", phone="+49 30 123")]  # fmt: skip
    worker = Worker(1245, crash_rate=0.2, max_batches=5000).run(sent, T0 + 30 * MIN)
    assert placed_and_unmatched(worker) == expected_contacts(sent)
    assert "k-3" in placed_and_unmatched(worker)[1]
    assert worker.deadletters == []


def test_a_contact_resolved_again_onto_a_customer_that_has_it_takes_its_case_off_the_list() -> None:
    """A sibling (seed 3131): k-4 (its order o-0 is c-4's, its phone c-1's and c-4's) is on
    c-1 by its phone, then on c-4 by its order, whose bind of the case lost to c-1's. c-1
    refuses a late copy and releases the case; a stale lookup ends unmatched at the case
    meanwhile (listed), and the copy c-1 resolved again reaches c-4 through the order: c-4,
    which has k-4, must take its case back, so k-4 leaves the list."""
    sent = [order("c-1", "o-3", at=T0 + 20 * MIN, event_id="e-o3", email="noreply@shop.example",
                  phone="+49 30 123"),
            order("c-1", "o-1", at=T0 + 19 * MIN, event_id="e-o1", email="home@example.com",
                  phone="0170 22"),
            order("c-1", "o-3", at=T0 + 20 * MIN, event_id="e-o3", email="noreply@shop.example",
                  phone="+49 30 123"),
            contact("k-1", at=T0 + 19 * MIN, event_id="e-k1", email="noreply@shop.example"),
            contact("k-0", at=T0 + 11 * MIN, event_id="e-k0", order_id="o-0",
                    phone="+49 30 123"),
            order("c-1", "o-4", at=T0 + 16 * MIN, event_id="e-o4", email="ann@example.com"),
            order("c-3", "o-2", at=T0 + 6 * MIN, event_id="e-o2"),
            contact("k-2", at=T0 + 6 * MIN, event_id="e-k2", order_id="o-0",
                    email="noreply@shop.example", phone="+49 30 123"),
            contact("k-3", at=T0 + 20 * MIN, event_id="e-k3", email="home@example.com",
                    phone="+49 30 123"),
            contact("k-4", at=T0 + 1 * MIN, event_id="e-k4", order_id="o-0", phone="+49 30 123"),
            order("c-1", "o-4", at=T0 + 16 * MIN, event_id="e-o4", email="ann@example.com"),
            order("c-1", "o-4", at=T0 + 16 * MIN, event_id="e-o4", email="ann@example.com"),
            order("c-4", "o-0", at=T0 + 5 * MIN, event_id="e-o0", phone="+49 30 123")]  # fmt: skip
    worker = Worker(3131, crash_rate=0.2, max_batches=5000).run(sent, T0 + 30 * MIN)
    assert placed_and_unmatched(worker) == expected_contacts(sent)
    assert placed_and_unmatched(worker)[0]["k-4"] == "c-4"
    assert worker.table("contact-owners")["k-4"] == "c-4"
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
