"""A shuffled multi-customer history with duplicates ends in exactly the oracle's states.

The history is the demo feed's realistic stories (orders, parcels, contacts that know only an
e-mail, a phone or an order), shuffled across topics with a fixed seed so shipments and
contacts often arrive before their orders, plus re-sent copies of >10 % of the events.
The oracle (tests/oracle.py) computes every customer's state from the *set* of events,
independently of keel's merge; every customer's API state must equal it.
"""

from __future__ import annotations

import random
import time

import pytest

from streams.encoding.jsonconv import from_json
from tests.builders import shuffled_stories
from tests.integration.harness import Departments, Worker, wait_for
from tests.oracle import content, expected_views

pytestmark = pytest.mark.integration

CUSTOMERS = 240


def test_shuffled_history_with_duplicates_ends_in_the_oracles_states(
    worker: Worker, departments: Departments
) -> None:
    history, sent = shuffled_stories(random.Random(20261123), CUSTOMERS, resent=1 / 8)
    assert len(sent) >= 1000 and len(sent) - len(history) >= len(history) // 10

    expected = expected_views(history, now_ms=int(time.time() * 1000))
    assert len(expected) >= 50
    departments.send(sent)

    def mismatches() -> list[str]:
        wrong = []
        for customer_id, view in expected.items():
            status, state = worker.get(f"/customers/{customer_id}")
            if status != 200 or content(from_json("CustomerState", state)) != content(view):
                wrong.append(customer_id)
        return wrong

    try:
        wait_for(
            "every customer's state to equal the oracle's",
            lambda: not mismatches(),
            timeout=120,
            interval=1.0,
        )
    except AssertionError:
        wrong = mismatches()
        first = wrong[0]
        status, state = worker.get(f"/customers/{first}")
        raise AssertionError(
            f"{len(wrong)} of {len(expected)} customers differ; first {first}:\n"
            f"api:    {content(from_json('CustomerState', state)) if status == 200 else status}\n"
            f"oracle: {content(expected[first])}"
        ) from None
