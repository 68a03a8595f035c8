"""Keeping a customer's stored state under the size Kafka takes in one record.

A state travels whole (its changelog record, its customer-state.v1 record) and Kafka refuses
records over ~1 MB: a customer whose history outgrew that would stop its partition. The join
(streams/worker/customers.py) passes every changed state through :func:`bound` before it
stores it; the signal STATE_BOUNDED (streams/domain/signals.py) tells the desk what was shed.
"""

from __future__ import annotations

import orjson

from streams.domain.state import (
    CLOSED_CONTACT_TYPES,
    CLOSED_ORDER_TYPES,
    DEFAULT_LIMITS,
    State,
    last_event_at_of,
    remember_retired,
)

__all__ = ["BOUND_TARGET", "NOTE_CUT", "bound"]


#: a note's text kept when a state must shrink (:func:`bound`), in characters
NOTE_CUT = 1000
#: a state :func:`bound` shrank is cut to this share of its limit, so the next event fits
BOUND_TARGET = 0.75


def bound(state: State, max_bytes: int, keep_retired: int = DEFAULT_LIMITS.keep_retired) -> State:
    """``state``, or a copy cut to at most ``max_bytes`` of stored JSON when it is bigger.

        A state travels whole (its changelog record, its customer-state.v1 record) and Kafka
        refuses records over ~1 MB: a customer whose history outgrew that would stop its
        partition. So a state over ``max_bytes`` sheds, least useful first, until it is under
        ``BOUND_TARGET`` of it: 1. closed orders (with their shipments) and resolved contacts,
        least recently updated first, retired as retention retires them; 2. note texts cut to
        ``NOTE_CUT`` characters, then every contact's notes but its newest; 3. the retired-entity
        records, oldest first; 4. open orders and contacts, least recently updated first (retired
        too). ``_bounded`` says when it first happened and adds up what each step dropped
    (``{"at": ms, "dropped": {"closed": n, "notes_cut": n, "notes": n, "retired": n, "open": n}}``;
    the signal STATE_BOUNDED tells the desk). Which
        parts go depends on how big the state was when it was cut, so a bounded state is the one
        state that may depend on the order events came in.
    """
    size = len(orjson.dumps(state))
    if size <= max_bytes:
        return state
    target = int(max_bytes * BOUND_TARGET)
    new = {**state, "_orders": dict(state["_orders"]), "_shipments": dict(state["_shipments"]),
           "_contacts": dict(state["_contacts"])}  # fmt: skip
    before = state.get("_bounded") or {}
    cut: dict[str, int] = dict(before.get("dropped") or {})
    # when it first happened, in event time: the newest event any department had sent then
    at = before.get("at") or max(state["last_event_at"].values(), default=0)

    def count(what: str, n: int = 1) -> None:
        cut[what] = cut.get(what, 0) + n

    def retire(kind: str, entity_id: str) -> int:
        """Drop one order (its shipments along) or contact; the bytes it took, about."""
        table = new["_orders"] if kind == "order" else new["_contacts"]
        entity = table.pop(entity_id)
        freed = len(orjson.dumps(entity)) + len(entity_id) + 6
        remember_retired(new, kind, {entity_id: entity["at"]}, keep_retired)
        if kind == "order":
            gone = {k: x for k, x in new["_shipments"].items() if x["order_id"] == entity_id}
            for k in gone:
                freed += len(orjson.dumps(new["_shipments"].pop(k))) + len(k) + 6
            remember_retired(new, "shipment", {k: x["at"] for k, x in gone.items()}, keep_retired)
        # its kept events (streams/domain/placement.py)
        elif entity_id in (new.get("_joined") or {}):
            joined = dict(new["_joined"])
            events = joined.pop(entity_id)
            freed += len(orjson.dumps(events))
            new["last_event_at"] = last_event_at_of({"last_event_at": new["last_event_at"],
                                                   "_joined": {entity_id: events}})
            if joined:
                new["_joined"] = joined
            else:
                del new["_joined"]
        return freed

    def oldest(closed: bool) -> list[tuple[int, str, str]]:
        found = [(o["at"][0], "order", k) for k, o in new["_orders"].items()
                 if (o["type"] in CLOSED_ORDER_TYPES) == closed]  # fmt: skip
        found += [(c["at"][0], "contact", k) for k, c in new["_contacts"].items()
                  if (c["type"] in CLOSED_CONTACT_TYPES) == closed]  # fmt: skip
        return sorted(found)

    for _, kind, entity_id in oldest(closed=True):  # 1.
        if size <= target:
            break
        size -= retire(kind, entity_id)
        count("closed")
    if size > target:  # 2. long note texts cut, then all but each contact's newest note
        for contact_id, c in list(new["_contacts"].items()):
            notes = [
                [*n[:3], n[3][:NOTE_CUT] + "…"] if len(n[3]) > NOTE_CUT else n for n in c["notes"]
            ]
            shortened = sum(a is not b for a, b in zip(notes, c["notes"], strict=True))
            if shortened:
                count("notes_cut", shortened)
                new["_contacts"][contact_id] = {**c, "notes": notes}
        size = len(orjson.dumps(new))
        by_age = sorted(new["_contacts"].items(), key=lambda kv: (kv[1]["at"], kv[0]))
        for contact_id, c in by_age:
            if size <= target:
                break
            if len(c["notes"]) > 1:
                size -= len(orjson.dumps(c["notes"][:-1]))
                count("notes", len(c["notes"]) - 1)
                new["_contacts"][contact_id] = {**c, "notes": c["notes"][-1:]}
    if size > target and new.get("_retired"):  # 3.
        count("retired", sum(len(v) for v in new["_retired"].values()))
        new["_retired"] = {}
        size = len(orjson.dumps(new))
    for _, kind, entity_id in oldest(closed=False):  # 4.
        if size <= target:
            break
        size -= retire(kind, entity_id)
        count("open")
    new["_bounded"] = {"at": at, "dropped": cut}
    return new
