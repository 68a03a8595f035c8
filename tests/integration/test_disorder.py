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
import uuid

import pytest

from connectors.sources.demo_feed import Feed
from streams.jsonconv import from_json
from tests.integration.harness import Departments, Worker, wait_for
from tests.oracle import content, expected_views

pytestmark = pytest.mark.integration

CUSTOMERS = 240


def test_shuffled_history_with_duplicates_ends_in_the_oracles_states(
    worker: Worker, departments: Departments
) -> None:
    rng = random.Random(20261123)
    run = uuid.uuid4().hex[:6]
    # event times a month back: every deadline has long passed, so nothing depends on the clock
    feed = Feed(seed=rng.randrange(10**6), now_ms=int(time.time() * 1000) - 30 * 86_400_000)
    history = []
    for i in range(CUSTOMERS):
        history += feed.story(f"c-{run}-{i:03d}")
    duplicates = rng.sample(history, k=len(history) // 8)
    sent = history + duplicates
    rng.shuffle(sent)
    assert len(sent) >= 1000 and len(duplicates) >= len(history) // 10

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
