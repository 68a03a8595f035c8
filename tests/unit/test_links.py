"""Identity resolution with guards (issue #14 §1): links, shared and blocked identifiers.

The join runs for real (tests/join_harness.py: the handlers of streams/worker/agent.py on a real
checkpoint.Transaction, in-memory tables, an adversarial scheduler that interleaves partitions and
crashes batches); tests/oracle.py ``expected_identities`` says from the set of events alone
which customers each one is linked to and which of its identifiers are shared or blocked.
"""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain.links import DEFAULT_GUARDS, Guards, bind_record, blocked_by, forget_member
from streams.worker import params
from tests.builders import T0, contact, order
from tests.join_harness import Worker
from tests.oracle import content, expected_identities

MIN = 60_000
CUSTOMERS = ("c-1", "c-2", "c-3", "c-4", "c-5")
EMAILS = ("home@example.com", " Home@Example.com", "ann@example.com", "noreply@shop.example")
PHONES = ("+49 170 1", "+491701", "+0000 000", "0170 22")


def identity_views(worker: Worker) -> dict[str, dict]:
    """Each customer's ``linked`` and ``identity_guards`` (without the wording)."""
    return {
        c: {k: content(v)[k] for k in ("linked", "identity_guards")}
        for c, v in worker.views().items()
    }


def expected(events: list, customers: set[str], shared_after: int = 3) -> dict[str, dict]:
    found = expected_identities(events, shared_after)
    empty = {"linked": [], "identity_guards": []}
    return {c: found.get(c, empty) for c in sorted(customers)}


@st.composite
def identity_histories(draw: st.DrawFn) -> list[tuple[str, dict]]:
    """Orders and named contacts of a few customers over a few e-mails and phones (one of
    each blocked), at times on a minute grid, some ids re-sent (also with another time)."""
    events = []
    for n in range(draw(st.integers(1, 14))):
        customer = draw(st.sampled_from(CUSTOMERS))
        at = T0 + draw(st.integers(0, 20)) * MIN
        email = draw(st.none() | st.sampled_from(EMAILS))
        phone = draw(st.none() | st.sampled_from(PHONES))
        if draw(st.booleans()):
            events.append(order(customer, f"o-{n}", at=at, event_id=f"e-{n}", email=email,
                                phone=phone))  # fmt: skip
        else:
            events.append(contact(f"k-{n}", at=at, event_id=f"e-{n}", customer_id=customer,
                                  email=email, phone=phone))  # fmt: skip
    for kind, event in draw(st.lists(st.sampled_from(events), max_size=3)):
        events.append((kind, {**event, "occurred_at": event["occurred_at"] + MIN}))
    return events


@settings(max_examples=120, deadline=None)
@given(identity_histories(), st.randoms(use_true_random=False), st.integers(0, 2**16))
def test_links_and_guards_depend_only_on_the_set_of_events(
    history: list, rnd: random.Random, seed: int
) -> None:
    sent = list(history)
    rnd.shuffle(sent)
    worker = Worker(seed, crash_rate=0.2).run(sent, T0 + 30 * MIN)
    customers = {e["customer_id"] for _, e in history}
    assert identity_views(worker) == expected(history, customers)


@pytest.mark.parametrize("shared_after", [1, 2, 3])
def test_an_identifier_crossing_the_sharing_limit_in_any_order_ends_shared_for_everyone(
    shared_after: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four customers with one phone, each permutation of who comes first, crashes included:
    once more than ``shared_after`` were seen it links no one, and each of them says so."""
    monkeypatch.setattr(params, "guards", Guards(shared_after=shared_after))
    history = [order(c, f"o-{c}", at=T0 + i * MIN, event_id=f"e-{c}", phone="+49 30 123")
               for i, c in enumerate(CUSTOMERS[:4])]  # fmt: skip
    customers = set(CUSTOMERS[:4])
    want = expected(history, customers, shared_after)
    assert all(v["linked"] == [] for v in want.values())
    assert all(v["identity_guards"] == [{"via": {"type": "PHONE", "value": "+4930123"},
                                         "guard": "SHARED"}] for v in want.values())  # fmt: skip
    for n, sent in enumerate(itertools.permutations(history)):
        worker = Worker(n, crash_rate=0.3).run(list(sent), T0 + 10 * MIN)
        assert identity_views(worker) == want, sent
        why = worker.views()["c-1"]["identity_guards"][0]["why"]
        assert f"more than {shared_after} customers" in why and "KEEL_IDENTITY_SHARED_AFTER" in why
    records = worker.table("phone-identities")
    assert records == {"+4930123": {"v": records["+4930123"]["v"], "shared": shared_after}}


@pytest.mark.parametrize("seed", range(15))
def test_two_accounts_of_one_person_are_linked_since_the_later_first_sighting(seed: int) -> None:
    """A guest checkout and a registered account with one e-mail: each lists the other, via
    the e-mail, since the later of the two accounts' first events with it — also when an
    earlier event of an account arrives after a later one."""
    guest = order("c-guest", "o-g", at=T0 + 10 * MIN, event_id="e-g", email="Ann@Example.com")
    early = order("c-guest", "o-g0", at=T0 + 2 * MIN, event_id="e-g0", email="ann@example.com ")
    account = order("c-acct", "o-a", at=T0 + 5 * MIN, event_id="e-a", email="ann@example.com")
    other = order("c-bo", "o-b", at=T0, event_id="e-b", email="bo@example.com")
    worker = Worker(seed, crash_rate=0.2)
    worker.run([guest, account, other], T0 + 20 * MIN)
    via = {"type": "EMAIL", "value": "ann@example.com"}
    views = worker.views()
    since = T0 + 10 * MIN
    assert views["c-guest"]["linked"] == [{"customer_id": "c-acct", "via": via, "since": since}]
    assert views["c-acct"]["linked"] == [{"customer_id": "c-guest", "via": via, "since": since}]
    assert views["c-bo"]["linked"] == []
    worker.run([early], T0 + 20 * MIN)  # the guest's first event with it was earlier
    views = worker.views()
    assert views["c-guest"]["linked"][0]["since"] == T0 + 5 * MIN
    assert views["c-acct"]["linked"][0]["since"] == T0 + 5 * MIN
    published = [p for p in worker.published if p["customer_id"] == "c-acct"]
    assert published[-1]["linked"] == views["c-acct"]["linked"]  # on customer-state.v1 too


def test_a_blocked_identifier_never_links_and_says_why() -> None:
    a = order("c-1", "o-1", event_id="e-1", email="noreply@shop.example", phone="+0000 1")
    b = order("c-2", "o-2", event_id="e-2", email="NoReply@Shop.example", phone="+0000 1")
    worker = Worker(3).run([a, b], T0)
    views = worker.views()
    assert views["c-1"]["linked"] == [] and views["c-2"]["linked"] == []
    guards = views["c-1"]["identity_guards"]
    assert [(g["via"]["type"], g["guard"]) for g in guards] == [("EMAIL", "BLOCKED"),
                                                                ("PHONE", "BLOCKED")]  # fmt: skip
    assert "'noreply@*'" in guards[0]["why"] and "KEEL_IDENTITY_BLOCKLIST" in guards[0]["why"]
    # it is never bound: no record, and no owner either (a contact by it joins no one)
    assert worker.table("email-identities") == {} and worker.table("email-owners") == {}


def test_an_erased_customer_disappears_from_the_links_of_the_others() -> None:
    for seed in range(15):
        ann = order("c-ann", "o-ann", event_id="e-1", email="ann@example.com", phone="+4930 5")
        bo = order("c-bo", "o-bo", at=T0 + MIN, event_id="e-2", phone="+49305")
        cy = order("c-cy", "o-cy", at=T0 + MIN, event_id="e-3", phone="+49305")
        worker = Worker(seed, crash_rate=0.2).run([ann, bo, cy], T0 + 2 * MIN)
        assert [x["customer_id"] for x in worker.views()["c-bo"]["linked"]] == ["c-ann", "c-cy"]
        request = {"request_id": "r-1", "customer_id": "c-ann", "requested_by": "dpo",
                   "requested_at": T0 + 5 * MIN, "reason": "DSR-1"}  # fmt: skip
        worker.run([("erasure", request)], T0 + 5 * MIN)
        views = worker.views()
        assert set(views) == {"c-bo", "c-cy"}
        assert [x["customer_id"] for x in views["c-bo"]["linked"]] == ["c-cy"], seed
        assert [x["customer_id"] for x in views["c-cy"]["linked"]] == ["c-bo"], seed
        rows = " ".join(f"{t} {k} {v.decode()}" for (t, k), v in worker.rows.items())
        assert "c-ann" not in rows and "ann@example.com" not in rows, seed
        assert worker.table("phone-identities")["+49305"]["m"] == {"c-bo": T0 + MIN,
                                                                   "c-cy": T0 + MIN}  # fmt: skip
        last_bo = [p for p in worker.published if p["customer_id"] == "c-bo"][-1]
        assert [x["customer_id"] for x in last_bo["linked"]] == ["c-cy"]


def test_records_are_bounded_and_order_independent() -> None:
    binds = [("a", 5), ("b", 3), ("a", 2), ("c", 9), ("b", 7)]
    results = set()
    for sent in itertools.permutations(binds):
        record = None
        for customer, at in sent:
            record, _ = bind_record(record, customer, at, shared_after=3)
        assert record is not None
        results.add(tuple(sorted(record["m"].items())))
    assert results == {(("a", 2), ("b", 3), ("c", 9))}
    shared, changed = bind_record({"v": 4, "m": {"a": 1, "b": 1}}, "c", 1, shared_after=2)
    assert shared == {"v": 5, "shared": 2} and changed
    assert forget_member(shared, "a") == (shared, False)
    assert forget_member({"v": 2, "m": {"a": 1}}, "a") == (None, True)
    assert forget_member({"v": 2, "m": {"a": 1, "b": 2}}, "a") == ({"v": 3, "m": {"b": 2}}, True)


def test_the_default_block_list() -> None:
    assert blocked_by("no-reply@x.example", DEFAULT_GUARDS.blocklist) == "no-reply@*"
    assert blocked_by("+00001234", DEFAULT_GUARDS.blocklist) == "+0000*"
    assert blocked_by("ann@example.com", DEFAULT_GUARDS.blocklist) is None
    assert params.guards == DEFAULT_GUARDS  # the worker's, from the defaults of streams/config.py


def test_an_identifier_only_one_customer_has_costs_no_extra_state_change() -> None:
    """The identity message of a record naming only the customer itself is not kept: the
    state (and customer-state.v1) changes once per event, as without identity records."""
    for seed in range(10):
        worker = Worker(seed, crash_rate=0.2)
        worker.run([order("c-1", "o-1", event_id="e-1", email="a@example.com", phone="0170 1")],
                   T0)  # fmt: skip
        assert worker.views()["c-1"]["version"] == 1, seed
        assert len([p for p in worker.published if p["customer_id"] == "c-1"]) == 1
        assert "_ids" not in worker.table("customers")["c-1"]
        assert worker.table("email-identities") == {"a@example.com": {"v": 1, "m": {"c-1": T0}}}
