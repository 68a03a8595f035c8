"""A contact whose identifiers name two customers lands on the stronger one's (issue #11 §1).

docs/contract.md §4: a contact belongs to the customer of its ``order_id``, else of its e-mail,
else of its phone. The join learns references one at a time, so it may first apply a contact
through its e-mail (customer B) and learn only later that its order is A's: then the contact
moves to A and B's state is as if it had never had it. These run the worker's own join agent
(tests/join_harness.py: streams/worker/agent.py's handlers on a real checkpoint.Transaction,
in-memory tables and topics, an adversarial scheduler that also crashes batches).
"""

from __future__ import annotations

import pytest

from streams.domain.placement import (
    BY_CASE,
    BY_EMAIL,
    BY_ORDER,
    NAMED,
    apply_placed,
    move_out,
    moved_to,
)
from streams.domain.state import empty_state, view
from tests.builders import T0, contact, order
from tests.join_harness import Worker
from tests.oracle import content, expected_views

A, B = "c-ann", "c-bo"
B_EMAIL = "bo@example.com"
SEEDS = range(40)


def _conflicting(event_id: str = "e-k1", **fields: object) -> tuple[str, dict]:
    return contact("k-1", at=T0, event_id=event_id, order_id="o-ann", email=" BO@example.com",
                   kind="COMPLAINT", note="where is it", **fields)  # type: ignore[arg-type]  # fmt: skip


def _orders() -> tuple[tuple[str, dict], tuple[str, dict]]:
    a = order(A, "o-ann", at=T0 - 60_000, event_id="e-oa")
    b = order(B, "o-bo", at=T0 - 60_000, event_id="e-ob", email=B_EMAIL)
    return a, b


def _contacts_of(worker: Worker) -> dict[str, list[str]]:
    return {c: [x["contact_id"] for x in v["contacts"]] for c, v in worker.views().items()}


@pytest.mark.parametrize("crash_rate", [0.0, 0.3])
def test_sent_before_either_order_with_the_e_mails_customer_first_it_ends_on_the_orders(
    crash_rate: float,
) -> None:
    """The issue's reproduction: on main this ended on B only (or, in a race, on both)."""
    a, b = _orders()
    history = [_conflicting(), b, a]
    expected = expected_views(history, now_ms=T0)
    moved = 0
    for seed in SEEDS:
        worker = Worker(seed, crash_rate=crash_rate)
        worker.run([_conflicting()], T0).run([b], T0)
        assert _contacts_of(worker) == {B: ["k-1"]}  # placed through the e-mail, for now
        worker.run([a], T0)
        assert _contacts_of(worker) == {A: ["k-1"], B: []}, seed
        assert {c: content(v) for c, v in worker.views().items()} == expected
        moved += 1
    assert moved == len(SEEDS)


def test_the_old_customer_keeps_no_trace_and_a_late_re_send_does_not_bring_it_back() -> None:
    a, b = _orders()
    for seed in SEEDS:
        worker = Worker(seed).run([_conflicting(), b], T0).run([a], T0)
        bo = worker.views()[B]
        assert bo["contacts"] == [] and bo["open_contacts"] == 0
        assert bo["last_event_at"] == {"webshop": T0 - 60_000}  # not the call centre's
        assert not [s for s in bo["signals"] if s["contact_id"] == "k-1"]
        # the same event again, later; and a note on the case with no identifiers at all
        note = contact("k-1", "NOTE_ADDED", at=T0 + 1, event_id="e-k2", note="sorted")
        worker.run([_conflicting(), note], T0 + 2)
        assert _contacts_of(worker) == {A: ["k-1"], B: []}
        assert [n["text"] for n in worker.views()[A]["contacts"][0]["notes"]] == [
            "where is it", "sorted"
        ]  # fmt: skip
        assert worker.views()[B]["last_event_at"] == {"webshop": T0 - 60_000}


def test_whatever_arrives_first_the_order_wins() -> None:
    a, b = _orders()
    note = contact("k-1", "NOTE_ADDED", at=T0 + 1, event_id="e-k2", note="sorted")
    history = [_conflicting(), b, a, note]
    expected = expected_views(history, now_ms=T0 + 2)
    assert [c["contact_id"] for c in expected[A]["contacts"]] == ["k-1"]
    assert expected[B]["contacts"] == []
    orders = [[_conflicting(), note, b, a], [b, _conflicting(), note, a], [a, b, _conflicting()],
              [b, note, a, _conflicting()], [note, b, _conflicting(), a]]  # fmt: skip
    for seed in SEEDS:
        for sent in orders:
            got = Worker(seed, crash_rate=0.2).run(sent, T0 + 2).run([note], T0 + 2)
            assert {c: content(v) for c, v in got.views().items()} == expected, (seed, sent)


def test_a_phone_placement_moves_to_the_e_mail_and_then_to_the_order() -> None:
    c = "c-cy"
    kc = contact("k-1", at=T0, event_id="e-k1", order_id="o-ann", email=B_EMAIL,
                 phone="+49 170 1234")  # fmt: skip
    cy = order(c, "o-cy", at=T0 - 60_000, event_id="e-oc", phone="+49 170 1234")
    a, b = _orders()
    for seed in SEEDS:
        worker = Worker(seed).run([kc, cy], T0)
        assert _contacts_of(worker) == {c: ["k-1"]}
        worker.run([b], T0)
        assert _contacts_of(worker) == {B: ["k-1"], c: []}
        worker.run([a], T0)
        assert _contacts_of(worker) == {A: ["k-1"], B: [], c: []}
        assert not [m for m in worker.held_messages() if not m.get("placed_on")]


def test_a_watching_copy_expires_without_a_dead_letter() -> None:
    """The contact was applied through its e-mail; its order never comes: no dead letter."""
    from streams.domain.join import ORDER
    from streams.worker import emit

    _, b = _orders()
    worker = Worker(1).run([_conflicting(), b], T0)
    [watching] = worker.held_messages()
    assert watching["placed_on"] == B
    worker._send(emit.REF_TOPIC[ORDER], "o-ann", {"op": "expire", "before": T0 + 1})
    worker.run([], T0)
    assert worker.held_messages() == [] and worker.deadletters == []
    assert _contacts_of(worker) == {B: ["k-1"]}


def test_move_out_is_idempotent_and_only_goes_to_a_stronger_reference() -> None:
    _, event = _conflicting()
    on_b, _ = apply_placed(empty_state(B), "contact", event, BY_EMAIL, now_ms=1)
    assert view(on_b)["last_event_at"] == {"callcenter": T0}
    assert on_b["last_event_at"] == {}  # kept apart while it may move
    assert move_out(on_b, "k-1", A, BY_EMAIL, now_ms=2) is None  # no stronger
    gone, events = move_out(on_b, "k-1", A, BY_ORDER, now_ms=2) or (None, [])
    assert gone is not None and events == [event]
    assert moved_to(gone, "k-1") == (A, BY_ORDER)
    assert move_out(gone, "k-1", A, BY_ORDER, now_ms=3) is None
    on_a, _ = apply_placed(empty_state(A), "contact", event, BY_ORDER, now_ms=1)
    assert "_joined" not in on_a and on_a["last_event_at"] == {"callcenter": T0}
    assert move_out(on_a, "k-1", B, BY_ORDER, now_ms=2) is None  # an order never moves


def test_a_movable_contact_delivered_again_through_its_case_changes_nothing() -> None:
    """Found by test_scale_out on the real stack: a contact placed through its e-mail and
    delivered again through its case (the case's bind releases the copy held there) bumped
    the version with no change: its time, counted through ``_joined``, looked new to
    ``last_event_at``. Desks saw version and updated_at move on a state that had not."""
    kind, event = contact("k-1", at=T0, event_id="e-k1", email=B_EMAIL, note="where is it")
    state, _ = apply_placed(empty_state(B), "order", _orders()[1][1], NAMED, T0)
    placed, changed = apply_placed(state, kind, event, BY_EMAIL, T0 + 1)
    assert changed and placed["version"] == state["version"] + 1
    for rank in (BY_CASE, BY_EMAIL):  # again, through its case and through its e-mail
        assert apply_placed(placed, kind, event, rank, T0 + 2) == (placed, False)


def test_a_contact_event_released_again_through_its_case_changes_not_even_the_version() -> None:
    """Joined by its e-mail, the event is also held at its case, which the state then binds:
    the copy released there reaches the state again and must change nothing (it used to
    raise the version alone, a state change with nothing in it)."""
    for seed in range(10):
        history = [order("c-a", "o-a", event_id="e-1", email="a@example.com"),
                   contact("k-a", at=T0 + 60_000, event_id="e-2",
                           email="a@example.com")]  # fmt: skip
        worker = Worker(seed, crash_rate=0.2).run(history, T0 + 60_000)
        assert [c["contact_id"] for c in worker.views()["c-a"]["contacts"]] == ["k-a"]
        assert worker.views()["c-a"]["version"] == 2, seed
