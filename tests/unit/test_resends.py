"""Re-sent events (CONTRACT.md §3 "keel applies each id once"), as a desk would read them.

Two ways an id comes back: under another ``occurred_at`` (a department that re-stamps a retried
event), and after retention dropped what it was about.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.state import DEFAULT_LIMITS, Limits, apply_event, view
from tests.strategies import BASE_MS, MINUTE_MS, KindEvent, histories, with_retimed_resends
from tests.unit.test_state import CID, apply_all, contact, content, order

T0, MIN = BASE_MS, MINUTE_MS


def build(events: list[dict], limits: Limits = DEFAULT_LIMITS) -> dict:
    kinds = {True: "contact", False: "order"}
    return apply_all([(kinds["contact_id" in e], e) for e in events], limits)


# --- the same event_id under another occurred_at: the latest stamp wins, applied once --------


def test_a_re_stamped_note_shows_once_at_its_latest_time_whatever_arrives_first() -> None:
    opened = contact("OPENED", T0, event_id="e-open")
    first = contact("NOTE_ADDED", T0 + 1 * MIN, event_id="e-note", note="refund issued")
    again = {**first, "occurred_at": T0 + 3 * MIN}
    one_way = build([opened, first, again])
    other_way = build([opened, again, first])
    notes = [{"at": T0 + 3 * MIN, "agent": None, "text": "refund issued"}]
    assert view(one_way)["contacts"][0]["notes"] == notes
    assert view(other_way)["contacts"][0]["notes"] == notes
    assert content(one_way) == content(other_way)


def test_an_earlier_stamp_of_an_applied_id_changes_nothing_it_shows() -> None:
    placed = order("PLACED", T0, event_id="e-1")
    completed = order("COMPLETED", T0 + 5 * MIN, event_id="e-2")
    state = build([placed, completed])
    after, _ = apply_event(state, "order", {**completed, "occurred_at": T0 + 1 * MIN}, 99)
    assert content(after) == content(state)
    assert view(after)["orders"][0]["status"] == "COMPLETED"


re_stamped = histories(customers=(CID,)).flatmap(
    lambda h: st.tuples(st.just(h), with_retimed_resends(h))
)


@settings(max_examples=300, deadline=None)
@given(re_stamped)
def test_re_stamped_re_sends_in_any_order_give_one_state(
    case: tuple[list[KindEvent], list[KindEvent]],
) -> None:
    """The final state depends only on the set of versions sent, never on their order."""
    history, sent = case
    in_order = sorted(sent, key=lambda ke: (ke[1]["event_id"], ke[1]["occurred_at"]))
    assert content(apply_all(sent)) == content(apply_all(in_order))
    assert content(apply_all(sent, Limits(max_notes=2))) == content(
        apply_all(list(reversed(in_order)), Limits(max_notes=2))
    )
