"""Join routing (docs/contract.md §4): which reference an event resolves through, in what order."""

from __future__ import annotations

from streams.domain.join import (
    CONTACT,
    EMAIL,
    ORDER,
    PHONE,
    add_held,
    known_refs,
    new_refs,
    new_state_refs,
    remove_held,
    route,
    state_refs,
    unhold_refs,
)
from streams.domain.state import apply_event, empty_state, view
from tests.builders import T0, contact, order, shipment


def test_an_order_goes_straight_to_its_customer() -> None:
    assert route(*order("c-1", "o-1")).customer_id == "c-1"


def test_a_shipment_resolves_through_its_order() -> None:
    r = route(*shipment("o-1", "s-1"))
    assert (r.customer_id, r.refs) == (None, ((ORDER, "o-1"),))


def test_a_contact_with_customer_id_needs_no_lookup() -> None:
    r = route(*contact("k-1", customer_id="c-9", email="a@b.c", order_id="o-1"))
    assert (r.customer_id, r.refs) == ("c-9", ())


def test_a_contact_resolves_by_case_then_order_then_email_then_phone() -> None:
    r = route(*contact("k-1", order_id="o-1", email=" A@B.C ", phone="+1 (555) 010-99"))
    assert r.customer_id is None
    assert r.refs == ((CONTACT, "k-1"), (ORDER, "o-1"), (EMAIL, "a@b.c"), (PHONE, "+155501099"))


def test_new_refs_lists_only_what_the_new_state_adds() -> None:
    before = {"orders": [{"order_id": "o-1"}], "contacts": [], "emails": ["a@b.c"], "phones": []}
    after = {
        "orders": [{"order_id": "o-1"}, {"order_id": "o-2"}],
        "contacts": [{"contact_id": "k-1"}],
        "emails": ["a@b.c"],
        "phones": ["+1"],
    }
    assert new_refs(before, after) == [(CONTACT, "k-1"), (ORDER, "o-2"), (PHONE, "+1")]
    assert len(new_refs(None, after)) == 5


def test_add_held_keeps_one_copy_per_event_id() -> None:
    m = {"event": {"event_id": "e-1"}}
    held = add_held(None, m)
    assert held == [m]
    assert add_held(held, {"event": {"event_id": "e-1"}}) is None
    assert add_held(held, {"event": {"event_id": "e-2"}}) == [m, {"event": {"event_id": "e-2"}}]


def test_a_held_event_re_sent_under_a_later_occurred_at_is_held_in_its_latest_version() -> None:
    early = {"event": {"event_id": "e-1", "occurred_at": T0}}
    late = {"event": {"event_id": "e-1", "occurred_at": T0 + 60_000}}
    assert add_held(add_held(None, early), late) == [late]
    assert add_held([late], early) is None  # whatever arrived first: the latest stamp waits


def test_unhold_drops_the_versions_no_later_than_the_one_applied() -> None:
    early = {"event": {"event_id": "e-1", "occurred_at": T0}}
    late = {"event": {"event_id": "e-1", "occurred_at": T0 + 60_000}}
    assert remove_held([late], "e-1", T0) is None  # a later version still waits for its customer
    assert remove_held([early], "e-1", T0 + 60_000) == []
    assert remove_held([late], "e-1") == []  # no time given: every version


def test_an_applied_contact_is_unheld_at_every_later_reference_of_its_chain() -> None:
    kind, event = contact("k-1", order_id="o-1", email="a@b.c")
    assert unhold_refs(kind, event) == [(ORDER, "o-1"), (EMAIL, "a@b.c")]
    assert unhold_refs(*contact("k-2", customer_id="c-1", email="a@b.c")) == []
    assert unhold_refs(*shipment("o-1", "s-1")) == []


def test_remove_held_drops_only_that_event() -> None:
    a, b = {"event": {"event_id": "e-1"}}, {"event": {"event_id": "e-2"}}
    assert remove_held([a, b], "e-1") == [b]
    assert remove_held([a], "e-1") == []
    assert remove_held([a], "e-9") is None
    assert remove_held(None, "e-1") is None


def test_state_refs_are_the_refs_of_the_view() -> None:
    before, _ = apply_event(
        empty_state("c-1"), *order("c-1", "o-1", email="A@Example.com", phone="+49 30 1"), 2
    )
    after, _ = apply_event(before, *order("c-1", "o-2", at=T0 + 5), 3)
    after, _ = apply_event(after, *contact("k-1", customer_id="c-1"), 4)
    assert state_refs(after) == known_refs(view(after))
    assert {(ORDER, "o-1"), (ORDER, "o-2"), (CONTACT, "k-1")} <= state_refs(after)
    assert new_state_refs(before, after) == new_refs(view(before), view(after))
    assert new_state_refs(before, after) == [(CONTACT, "k-1"), (ORDER, "o-2")]
    assert new_state_refs(None, before) == new_refs(None, view(before))


def test_a_contact_applied_through_its_e_mail_watches_its_order_and_drops_the_rest() -> None:
    from streams.domain.join import placement_refs

    _, event = contact("k-1", order_id="o-1", email="a@b.c", phone="+1 555")
    assert placement_refs("contact", event, 2) == ([(ORDER, "o-1")], [(EMAIL, "a@b.c"),
                                                                      (PHONE, "+1555")])
    assert placement_refs("contact", event, 1) == ([], [(ORDER, "o-1"), (EMAIL, "a@b.c"),
                                                       (PHONE, "+1555")])
    # through its case: each of its own references may still name another customer
    assert placement_refs("contact", event, 4)[0] == [(ORDER, "o-1"), (EMAIL, "a@b.c"),
                                                      (PHONE, "+1555")]
    assert placement_refs("shipment", shipment("o-1", "s-1")[1], 1) == ([], [])


def test_a_placed_copy_replaces_the_waiting_one_once() -> None:
    from streams.domain.join import mark_held

    kind, event = contact("k-1", order_id="o-1", email="a@b.c")
    waiting = [{"kind": kind, "event": event, "topic": "contacts.v1", "refs": [(EMAIL, "a@b.c")]}]
    marked = mark_held(waiting, {"kind": kind, "event": event, "topic": "contacts.v1"}, "c-b")
    assert [m.get("placed_on") for m in marked] == ["c-b"] and marked[0]["refs"] == []
    again = {"kind": kind, "event": event, "topic": "contacts.v1"}
    assert mark_held(marked, again, "c-b") == marked
