"""The Redis sink's index keys come from the worker's owners changelogs (issue #11 §7).

Against real Redis: tests/integration/test_connectors.py (a conflicting history).
"""

from __future__ import annotations

import redis

from connectors.contract import SinkRecord
from connectors.sinks.redis import RedisSink


def test_the_sink_reads_the_state_topic_and_the_owners_changelogs_of_its_app() -> None:
    sink = RedisSink(redis.Redis(), "customer-state.v1", app_id="keel-x")
    assert sink.topics() == [
        "customer-state.v1",
        "keel-x-email-owners-changelog",
        "keel-x-phone-owners-changelog",
        "keel-x-order-owners-changelog",
    ]


def test_an_owners_record_names_the_index_key_and_its_owner() -> None:
    sink = RedisSink(redis.Redis(), app_id="keel")
    records = [
        SinkRecord(b"a@x.io", b'"c-1"', 0, 1, "keel-email-owners-changelog"),
        SinkRecord(b"o-1", b'"c-2"', 0, 2, "keel-order-owners-changelog"),
        SinkRecord(b"o-1", b'"c-3"', 0, 3, "keel-order-owners-changelog"),  # the latest wins
        SinkRecord(b"+4930", None, 0, 4, "keel-phone-owners-changelog"),  # the worker forgot it
        SinkRecord(b"o-2", b"not json", 0, 5, "keel-order-owners-changelog"),
        SinkRecord(None, b'"c-9"', 0, 6, "keel-order-owners-changelog"),
    ]
    assert sink._owners(records) == {
        "keel:email:a@x.io": "c-1",
        "keel:order:o-1": "c-3",
        "keel:phone:+4930": None,
    }
