"""The join's internal messages keep their wire format (streams/worker/messages.py).

A running deployment has records in flight on its internal topics, written by the dict
literals the constructors replaced: each constructor must give the same bytes (orjson keeps
a dict's key order), so a worker of either version decodes what the other wrote. The
literals below are copied from the code before the constructors existed.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streams.worker import messages as m

EVENT = {"event_id": "e-1", "occurred_at": 5, "contact_id": "k-1", "order_id": "o-1"}
WHY = [{"ns": "email", "value": "a@x", "why": "shared"}]
RECORD = {"v": 3, "m": {"c-1": 1}}
REFS = [("email", "a@x"), ("phone", "+1")]

CASES: list[tuple[str, Any, dict[str, Any]]] = [
    # keel-customer-events
    ("event, as the intake sends it", m.event("order", EVENT, "orders.v1"),
     {"kind": "order", "event": EVENT, "topic": "orders.v1"}),
    ("event, an erasure", m.event("erasure", EVENT, "erasures.v1"),
     {"kind": "erasure", "event": EVENT, "topic": "erasures.v1"}),
    ("event, a contact that moved on", m.event("contact", EVENT, "contacts.v1", 2),
     {"kind": "contact", "event": EVENT, "topic": "contacts.v1", "rank": 2}),
    ("event, forwarded with every flag",
     m.event("contact", EVENT, "contacts.v1", rank=3, unmatched=True, fresh=True),
     {"kind": "contact", "event": EVENT, "topic": "contacts.v1", "rank": 3,
      "unmatched": True, "fresh": True}),
    ("event, forwarded: a shipment has no rank", m.event("shipment", EVENT, "shipments.v1",
                                                         fresh=True),
     {"kind": "shipment", "event": EVENT, "topic": "shipments.v1", "fresh": True}),
    ("recheck", m.recheck(), {"kind": "recheck"}),
    ("move", m.move("k-1", "c-2", 1, "contacts.v1"),
     {"kind": "move", "contact_id": "k-1", "to": "c-2", "rank": 1, "topic": "contacts.v1"}),
    ("identity", m.identity("email", "a@x", RECORD),
     {"kind": "identity", "ns": "email", "value": "a@x", "record": RECORD}),
    ("voice", m.voice_fact({"contact_id": "k-1"}),
     {"kind": "voice", "fact": {"contact_id": "k-1"}}),
    ("voice_forget", m.voice_forget("c-1", ["k-1", "k-2"]),
     {"kind": "voice_forget", "customer_id": "c-1", "contact_ids": ["k-1", "k-2"]}),
    ("unmatched_add", m.unmatched_add(EVENT, WHY),
     {"kind": "unmatched_add", "event": EVENT, "why": WHY}),
    ("unmatched_placed", m.unmatched_placed("k-1"),
     {"kind": "unmatched_placed", "contact_id": "k-1"}),
    ("unmatched_forget", m.unmatched_forget("c-1"),
     {"kind": "unmatched_forget", "customer_id": "c-1"}),
    ("unmatched_identity", m.unmatched_identity("phone", "+1", RECORD),
     {"kind": "unmatched_identity", "ns": "phone", "value": "+1", "record": RECORD}),
    ("assign, to the list", m.assign_command({"command_id": "a-1"}),
     {"kind": "assign", "command": {"command_id": "a-1"}}),
    # keel-{ns}-refs
    ("lookup, as the intake sends it", m.lookup("contact", EVENT, "contacts.v1", REFS),
     {"kind": "contact", "event": EVENT, "topic": "contacts.v1", "op": "lookup",
      "refs": REFS}),
    ("lookup, resolved again", m.lookup("contact", EVENT, "contacts.v1", REFS, fresh=True),
     {"kind": "contact", "event": EVENT, "topic": "contacts.v1", "op": "lookup",
      "refs": REFS, "fresh": True}),
    ("bind", m.bind("c-1"), {"op": "bind", "customer_id": "c-1"}),
    ("bind, an identifier", m.bind("c-1", 7), {"op": "bind", "customer_id": "c-1", "at": 7}),
    ("unhold", m.unhold(EVENT), {"op": "unhold", "event_id": "e-1", "at": 5}),
    ("expire", m.expire(10, 20), {"op": "expire", "before": 10, "wall_before": 20}),
    ("placed", m.placed("contact", EVENT, "contacts.v1", "c-1"),
     {"op": "placed", "kind": "contact", "event": EVENT, "topic": "contacts.v1",
      "customer_id": "c-1"}),
    ("rebind", m.rebind("c-1", "c-2"), {"op": "rebind", "from": "c-1", "customer_id": "c-2"}),
    ("release", m.release("c-1"), {"op": "release", "from": "c-1"}),
    ("erase", m.erase("c-1", 9), {"op": "erase", "customer_id": "c-1", "at": 9}),
    ("erase, by the erasure", m.erase("c-1", 9, unbind=True),
     {"op": "erase", "customer_id": "c-1", "at": 9, "unbind": True}),
    ("unmatched", m.unmatched("contact", EVENT, "contacts.v1", WHY),
     {"op": "unmatched", "kind": "contact", "event": EVENT, "topic": "contacts.v1",
      "why": WHY}),
    ("assign, to the case", m.assign_case("c-1", "a-1"),
     {"op": "assign", "customer_id": "c-1", "command_id": "a-1"}),
]  # fmt: skip


@pytest.mark.parametrize(("name", "built", "literal"), CASES, ids=[c[0] for c in CASES])
def test_a_constructor_writes_the_bytes_its_literal_wrote(
    name: str, built: Any, literal: dict[str, Any]
) -> None:
    assert orjson.dumps(built) == orjson.dumps(literal)


def test_a_lookup_passed_on_keeps_its_keys_in_place_and_adds_why_last() -> None:
    first = m.lookup("contact", EVENT, "contacts.v1", REFS)
    on = m.onward(first, REFS[1:])
    assert orjson.dumps(on) == orjson.dumps({**first, "op": "lookup", "refs": REFS[1:]})
    passed = m.onward(first, REFS[1:], WHY)
    assert orjson.dumps(passed) == orjson.dumps(
        {**first, "op": "lookup", "refs": REFS[1:], "ambiguous": WHY}
    )
    again = m.onward(passed, [], [*WHY, *WHY])  # "ambiguous" stays where it was
    assert list(again) == ["kind", "event", "topic", "op", "refs", "ambiguous"]
    assert again["ambiguous"] == [*WHY, *WHY] and again["refs"] == []


def test_every_kind_in_the_table_has_a_constructor_and_a_case_here() -> None:
    """The module docstring's table, the constructors and this test name the same kinds."""
    doc = m.__doc__ or ""
    sent = {built.get("op") or built["kind"] for _, built, _ in CASES}
    kinds = sent | {"order", "shipment", "contact", "command", "outcome"}
    for kind in kinds:
        assert f"\n{kind} " in doc or f" {kind}," in doc or f"\n{kind}," in doc, kind
