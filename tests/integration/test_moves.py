"""On the real stack: a contact whose order is A's and whose e-mail is B's ends on A only.

Issue #11 §1: sent before either order, with B's order arriving first, it ended on B only
(4 of 4 before the fix). docs/contract.md §4 says the order wins, whatever arrives first; B's
state must be as if it had never had the contact. The shared worker, customer ids of this
test's own; the oracle (tests/oracle.py) says what each state must be.
"""

from __future__ import annotations

import time

import pytest

from tests.builders import T0, contact, order, unique
from tests.integration.harness import Departments, Worker, wait_for
from tests.integration.oracle_checks import settled
from tests.oracle import expected_views

pytestmark = pytest.mark.integration

CASES = 4


def _contact_ids(worker: Worker, customer_id: str) -> list[str] | None:
    status, state = worker.get(f"/customers/{customer_id}")
    return [c["contact_id"] for c in state["contacts"]] if status == 200 else None


def test_a_contact_placed_through_its_e_mail_moves_to_its_orders_customer(
    worker: Worker, departments: Departments
) -> None:
    cases = []
    for _ in range(CASES):
        a, b, k, o = unique("c-a"), unique("c-b"), unique("k"), unique("o")
        email = f"{b}@example.com"
        complaint = contact(k, at=T0, order_id=o, email=email.upper(), kind="COMPLAINT",
                            note="the kettle leaks")  # fmt: skip
        a_order = order(a, o, at=T0 - 60_000)
        b_order = order(b, unique("o"), at=T0 - 60_000, email=email)
        cases.append((a, b, k, complaint, a_order, b_order))

    departments.send([c[3] for c in cases])  # the contacts, before either order
    departments.send([c[5] for c in cases])  # B's order: the contact joins through the e-mail
    for _, b, k, *_ in cases:
        wait_for(f"{b} to show {k} (through its e-mail)", lambda b=b: _contact_ids(worker, b))
    departments.send([c[4] for c in cases])  # A's order: the stronger reference
    history = [ke for c in cases for ke in c[3:]]
    expected = expected_views(history, now_ms=int(time.time() * 1000))
    for a, b, k, *_ in cases:
        assert [x["contact_id"] for x in expected[a]["contacts"]] == [k]
        assert expected[b]["contacts"] == [] and list(expected[b]["last_event_at"]) == ["webshop"]
    settled(worker, expected, "each contact on its order's customer only", timeout=60)

    # a late re-send through the e-mail does not undo the move
    departments.send([c[3] for c in cases])
    note = [contact(c[2], "NOTE_ADDED", at=T0 + 1, note="replaced") for c in cases]
    departments.send(note)
    expected = expected_views(history + note, now_ms=int(time.time() * 1000))
    settled(worker, expected, "the re-sent contacts and notes on the order's customer", 60)
