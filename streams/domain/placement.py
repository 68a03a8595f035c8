"""Where a joined contact sits, and how it moves when a stronger reference becomes known.

A contact event that does not name its customer belongs to the customer of its ``order_id``,
else of its e-mail, else of its phone (docs/contract.md §4); the case id only carries an event
whose own references are all unknown. References become known one by one, so the join may
first place a contact through a weaker one (its e-mail, customer B) and only later learn a
stronger one (its order, customer A). Then the contact *moves*: B gives it up, as if it had
never been there, and A gets every event B had of it.

For that a state remembers, per contact, the *rank* of the strongest reference that placed
one of its events (``via`` in the entity; absent: 0) ::

    0 named (its customer_id, or a shop order's)   1 order   2 e-mail   3 phone   4 case

and, for a contact that may still move (``via`` >= 2), its events themselves
(``_joined[contact_id]``), since the merged entity cannot be taken apart again. Their
``occurred_at`` counts for ``last_event_at`` only while they are there
(:func:`streams.domain.state.view` adds them), so a move takes them along too. A contact that
moved away leaves a record (``_moved[contact_id] = [customer_id, rank]``, the newest
``Limits.keep_retired``) so that an event of it still on its way to the old customer goes
on to the new one, and a second move (a re-sent message) changes nothing.

A move only goes to a stronger rank than the contact has where it is (:func:`move_out`), and
ranks only get stronger, so a contact moves at most four times. It may come back to a
customer it left, through a stronger reference of theirs (its phone was A's, its e-mail B's,
its order A's): A takes its events then, whatever ``_moved`` says.
Nothing here touches Faust or Kafka.
"""

from __future__ import annotations

from typing import Any

from streams.domain.state import DEFAULT_LIMITS, Limits, State, apply_event

#: the rank of a placement: lower is stronger (docs/contract.md §4's order of preference)
NAMED, BY_ORDER, BY_EMAIL, BY_PHONE, BY_CASE = 0, 1, 2, 3, 4
#: a contact placed at this rank or weaker may still move (an order may become known)
MOVABLE = BY_EMAIL


def apply_placed(
    state: State,
    kind: str,
    event: dict[str, Any],
    rank: int,
    now_ms: int,
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[State, bool]:
    """:func:`streams.domain.state.apply_event`, for an event placed at ``rank``.

    A contact keeps the strongest rank it was placed at; while that is ``MOVABLE`` or
    weaker, its events are kept (one per id, its latest ``occurred_at``) and stay out of
    the stored ``last_event_at``. Returns ``(state, changed)`` like ``apply_event``.
    """
    new, _ = apply_event(state, kind, event, now_ms, limits)
    if kind == "contact":
        new = _placed_contact(state, new, event, rank)
    new = _tidy(new)
    if new is state or _same_but_bookkeeping(new, state):
        # e.g. a movable contact delivered again: apply_event saw its time as new to
        # last_event_at, which counts it through _joined instead
        return state, False
    return {**new, "version": state["version"] + 1, "updated_at": now_ms}, True


def _same_but_bookkeeping(a: State, b: State) -> bool:
    """Whether two states differ in ``version`` and ``updated_at`` at most."""
    return a.keys() == b.keys() and all(
        a[k] is b[k] or a[k] == b[k] for k in a if k not in ("version", "updated_at")
    )


def _placed_contact(before: State, new: State, event: dict[str, Any], rank: int) -> State:
    contact_id = event["contact_id"]
    entity = new["_contacts"].get(contact_id)
    if entity is None:  # retired, or a re-send of what was retired
        return new
    old = before["_contacts"].get(contact_id)
    via = rank if old is None else min(old.get("via", NAMED), rank)
    new = {**new}
    if entity.get("via", NAMED) != via:
        entity = {k: v for k, v in entity.items() if k != "via"}
        if via:
            entity["via"] = via
        new["_contacts"] = {**new["_contacts"], contact_id: entity}
    joined = dict(new.get("_joined") or {})
    if via >= MOVABLE:
        new["last_event_at"] = before["last_event_at"]  # counted through _joined instead
        joined[contact_id] = _with_event(joined.get(contact_id, []), event)
    elif contact_id in joined:  # it can no longer move: its events count for good
        for e in joined.pop(contact_id):
            new["last_event_at"] = _with_time(new["last_event_at"], e)
    if joined:
        new["_joined"] = joined
    else:
        new.pop("_joined", None)
    return new


def _tidy(state: State) -> State:
    """Fold the kept events of contacts that retention or a bound dropped (they stay applied)."""
    joined = state.get("_joined")
    if not joined or all(k in state["_contacts"] for k in joined):
        return state
    new = {**state, "_joined": dict(joined)}
    for contact_id in [k for k in joined if k not in state["_contacts"]]:
        for e in new["_joined"].pop(contact_id):
            new["last_event_at"] = _with_time(new["last_event_at"], e)
    if not new["_joined"]:
        del new["_joined"]
    return new


def _with_time(times: dict[str, int], event: dict[str, Any]) -> dict[str, int]:
    source, at = event["source"], event["occurred_at"]
    if source in times and times[source] >= at:
        return times
    return {**times, source: at}


def _with_event(events: list[dict[str, Any]], event: dict[str, Any]) -> list[dict[str, Any]]:
    same = [e for e in events if e["event_id"] == event["event_id"]]
    if any(e["occurred_at"] >= event["occurred_at"] for e in same):
        return events
    return [*(e for e in events if e["event_id"] != event["event_id"]), event]


def moved_to(state: State, contact_id: str) -> tuple[str | None, int] | None:
    """``(customer_id, rank)`` a contact no longer here moved to; None if it did not move.
    ``customer_id`` None: it was given up to be resolved again (:func:`give_up`)."""
    if contact_id in state["_contacts"]:
        return None
    record = (state.get("_moved") or {}).get(contact_id)
    return (record[0], record[1]) if record else None


def move_out(
    state: State,
    contact_id: str,
    to: str,
    rank: int,
    now_ms: int,
    keep: int = DEFAULT_LIMITS.keep_retired,
) -> tuple[State, list[dict[str, Any]]] | None:
    """``state`` without the contact and the events to apply to ``to``; None: it stays.

    It moves only when ``rank`` (the reference that names ``to``) is stronger than what
    placed it here, so a re-sent move, or one through a reference no stronger, changes
    nothing. The events are those kept while it could move: all of its events here.

    >>> e = {"event_id": "e-1", "occurred_at": 5, "source": "cc", "type": "OPENED",
    ...      "contact_id": "k-1", "channel": "PHONE", "kind": "QUESTION", "customer_id": None,
    ...      "email": "b@x", "phone": None, "order_id": "o-1", "topic": None, "agent": None,
    ...      "note": None}
    >>> from streams.domain.state import empty_state
    >>> on_b, _ = apply_placed(empty_state("B"), "contact", e, BY_EMAIL, now_ms=1)
    >>> gone, events = move_out(on_b, "k-1", "A", BY_ORDER, now_ms=2)
    >>> gone["_contacts"], gone["last_event_at"], [x["event_id"] for x in events]
    ({}, {}, ['e-1'])
    >>> move_out(gone, "k-1", "A", BY_ORDER, now_ms=3) is None
    True
    """
    entity = state["_contacts"].get(contact_id)
    if entity is None or rank >= entity.get("via", NAMED) or to == state["customer_id"]:
        return None
    return _without(state, contact_id, [to, rank], now_ms, keep)


def placed_through(state: State, rank: int, ns_field: str, value: str, norm: Any) -> list[str]:
    """The contacts placed here at ``rank`` by an event whose ``ns_field`` (``email`` or
    ``phone``), normalised by ``norm``, is ``value``: those an identifier that became
    ambiguous had placed (streams/domain/unmatched.py)."""
    out = []
    for contact_id, events in (state.get("_joined") or {}).items():
        entity = state["_contacts"].get(contact_id)
        if entity is None or entity.get("via", NAMED) != rank:
            continue
        if any(norm(e.get(ns_field)) == value for e in events):
            out.append(contact_id)
    return sorted(out)


def give_up(
    state: State, contact_id: str, now_ms: int, keep: int = DEFAULT_LIMITS.keep_retired
) -> tuple[State, list[dict[str, Any]]] | None:
    """``state`` without a contact the identifier that placed it no longer resolves (it is
    shared, or links several customers), and its events, to be resolved again; None if it is
    not here or cannot move. It leaves ``_moved[contact_id] = [None, rank]``: an event of it
    still on its way here is resolved again too.
    """
    entity = state["_contacts"].get(contact_id)
    if entity is None or entity.get("via", NAMED) < MOVABLE:
        return None
    rank = entity["via"]
    return _without(state, contact_id, [None, rank], now_ms, keep)


def _without(
    state: State, contact_id: str, moved_to: list, now_ms: int, keep: int
) -> tuple[State, list[dict[str, Any]]]:
    """``state`` without the contact, ``_moved[contact_id] = moved_to`` (the newest of at
    most ``keep`` moves, the oldest dropped first), and the contact's events kept here."""
    joined = dict(state.get("_joined") or {})
    events = joined.pop(contact_id, [])
    moved = dict(state.get("_moved") or {})
    moved.pop(contact_id, None)
    moved[contact_id] = moved_to
    while len(moved) > max(keep, 1):
        del moved[next(iter(moved))]  # the oldest move first
    new = {
        **state,
        "_contacts": {k: c for k, c in state["_contacts"].items() if k != contact_id},
        "_moved": moved,
        "version": state["version"] + 1,
        "updated_at": now_ms,
    }
    if joined:
        new["_joined"] = joined
    else:
        new.pop("_joined", None)
    return new, events
