"""The dead-letter queue's rules without a broker (streams/ops/deadletters.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streams.encoding.codec import get_codec
from streams.ops.deadletters import (
    DeadLetter,
    DeadLetterError,
    Filter,
    as_json,
    entries,
    hexdump,
    parse_since,
)
from tests.builders import order


def letter(position: str, reason: str = "not Avro", topic: str = "orders.v1",
           at: str = "2026-12-01T10:00:00.000Z", replay_of: str | None = None,
           value: bytes = b"x") -> DeadLetter:  # fmt: skip
    partition, offset = position.split(":")
    headers = {"x-error": reason, "x-source-topic": topic, "x-failed-at": at}
    if replay_of:
        headers["x-replay-of"] = f"deadletter.v1:{replay_of}"
    return DeadLetter(int(partition), int(offset), b"k", value, headers)


def test_a_replays_letter_is_linked_both_ways_and_statuses_apply() -> None:
    found = entries([letter("0:1"), letter("1:7", replay_of="0:1"), letter("0:2")],
                    {"0:1": {"status": "replayed", "by": "ann"}})  # fmt: skip
    first, again, other = found
    assert first.replays == ("1:7",) and first.status["status"] == "replayed"
    assert again.letter.replay_of == "0:1" and again.status == {"status": "open"}
    assert other.replays == () and other.letter.replay_of is None


def test_filters_by_topic_reason_time_and_status() -> None:
    found = entries([letter("0:1", "Unknown writer schema", "orders.v1"),
                     letter("0:2", "too big", "contacts.v1", at="2026-12-02T10:00:00.000Z")],
                    {"0:2": {"status": "handled"}})  # fmt: skip
    pick = lambda f: [e.letter.position for e in found if f.admits(e)]  # noqa: E731
    assert pick(Filter()) == ["0:1"]  # open only, by default
    assert pick(Filter(status="all")) == ["0:1", "0:2"]
    assert pick(Filter(topic="contacts.v1", status="all")) == ["0:2"]
    assert pick(Filter(reason="WRITER", status="all")) == ["0:1"]
    assert pick(Filter(since=datetime(2026, 12, 2, tzinfo=UTC), status="all")) == ["0:2"]
    with pytest.raises(DeadLetterError):
        Filter(status="closed")


def test_since_takes_a_time_ago_or_a_date() -> None:
    now = datetime(2026, 12, 7, 12, tzinfo=UTC)
    assert parse_since("30m", now) == datetime(2026, 12, 7, 11, 30, tzinfo=UTC)
    assert parse_since("7d", now) == datetime(2026, 11, 30, 12, tzinfo=UTC)
    assert parse_since("2026-12-01", now) == datetime(2026, 12, 1, tzinfo=UTC)
    with pytest.raises(DeadLetterError, match="time ago"):
        parse_since("yesterday", now)
    # found by schemathesis: both were a 500 of GET /deadletters
    assert parse_since("99999999999d", now) == datetime.min.replace(tzinfo=UTC)
    with pytest.raises(DeadLetterError, match="time ago"):
        parse_since("²h", now)  # "²".isdigit(), but no number


def test_a_value_is_shown_as_json_when_it_is_any_and_always_as_bytes() -> None:
    _, event = order("c-1", "o-1")
    avro = get_codec().encode("OrderEvent", event)
    assert as_json(avro)["order_id"] == "o-1"  # keel's Avro, decoded by its fingerprint
    assert as_json(b'{"a": 1}') == {"a": 1}
    assert as_json(b"\xc3\x01garbage") is None and as_json(None) is None
    dump = hexdump(b"keel\x00\x01" * 4, limit=16)
    first, more = dump.splitlines()
    assert first.startswith("00000000  6b 65 65 6c 00 01") and first.endswith("keel..keel..keel")
    assert more == "… 8 more bytes"
