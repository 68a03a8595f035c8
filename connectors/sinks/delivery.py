"""What the two command delivery connectors share (PostgreSQL inbox, HTTP webhook).

Both consume ``commands.v1`` (``DeskCommand`` records, streams/domain/commands.py) with a consumer
group of their own through :func:`connectors.base.drain`: offsets are committed only after the
department accepted a batch, a department that is down means the same batch again after a
backoff, so delivery is at-least-once and in order per key (one order's, one contact's
commands). Departments deduplicate by ``command_id``.

A record that can never be delivered (not a decodable DeskCommand, or a command the
department's webhook refused with a 4xx) is a dead letter: published to ``deadletter.v1``
with the headers of docs/contract.md §1 (``x-error``, ``x-source-topic``, ``x-source-partition``,
``x-source-offset``, ``x-failed-at``), counted, logged, and then passed, so it does not hold
up the commands behind it.

What the department answered goes back to keel as a ``CommandOutcome`` record on
``command-outcomes.v1`` (key customer_id; :class:`Outcomes`): DELIVERED once the department
took a command (the webhook's 2xx, the inbox row committed), REJECTED with the department's
reason when it refused it for good (the webhook's final 4xx). The worker shows them in the
command's lifecycle signals (streams/domain/signals.py). They are published before the batch's
offsets are committed, so a crash sends them again (the worker applies each once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from connectors import metrics
from connectors.base import SinkRecord, Unavailable
from streams.encoding.codec import CodecError, get_codec
from streams.encoding.jsonconv import to_json
from streams.kafka.config import client_config
from streams.kafka.producer import ConfirmedProducer, PublishError

log = logging.getLogger(__name__)

RECORD = "DeskCommand"
OUTCOME = "CommandOutcome"
DELIVERED_OUTCOME, REJECTED_OUTCOME = "DELIVERED", "REJECTED"
#: characters of a department's answer kept as a REJECTED outcome's reason
MAX_REASON = 300


def consumer_config(bootstrap: str, group: str) -> dict[str, Any]:
    """Manual commits only (after delivery); a new group starts at the beginning of the topic."""
    return {
        **client_config(bootstrap),
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10_000,
        "max.poll.interval.ms": 300_000,
        "logger": logging.getLogger("librdkafka"),
    }


def decode(record: SinkRecord) -> dict[str, Any]:
    """The command (``requested_at`` in epoch ms), or :class:`CodecError`."""
    if record.value is None:
        raise CodecError("a tombstone (no value) on the commands topic")
    return get_codec().decode(record.value, RECORD)


def as_json(command: dict[str, Any]) -> dict[str, Any]:
    """The command as the webhook sends it (``requested_at`` ISO-8601 UTC with ``Z``)."""
    return to_json(RECORD, command)


class DeadLetters:
    """Publishes records that cannot be delivered to the dead-letter topic, confirmed."""

    def __init__(self, bootstrap: str, topic: str, source_topic: str, connector: str) -> None:
        self.producer = ConfirmedProducer(bootstrap)
        self.topic = topic
        self.source_topic = source_topic
        self.connector = connector

    def send(self, record: SinkRecord, reason: str, label: str) -> None:
        """Dead-letter ``record`` with ``reason``; :class:`Unavailable` if Kafka did not take it."""
        headers: list[tuple[str, str | bytes | None]] = [
            ("x-error", reason[:2000]),
            ("x-source-topic", self.source_topic),
            ("x-source-partition", str(record.partition)),
            ("x-source-offset", str(record.offset)),
            ("x-failed-at", datetime.now(UTC).isoformat(timespec="milliseconds")),
        ]
        try:
            self.producer.publish(self.topic, [(record.key, record.value)], headers=headers)
        except PublishError as exc:
            raise Unavailable(f"Kafka (dead letter): {exc}") from exc
        metrics.REJECTED.labels(self.connector, label).inc()
        log.warning(
            "command at %s[%d]@%d dead-lettered (%s): %s",
            self.source_topic,
            record.partition,
            record.offset,
            label,
            reason,
        )

    def close(self) -> None:
        self.producer.close()


def outcome(
    command: dict[str, Any], result: str, connector: str, reason: str | None = None,
    at_ms: int | None = None,
) -> dict[str, Any]:
    """The CommandOutcome record of ``command`` (``result`` DELIVERED or REJECTED).

    >>> outcome({"command_id": "x-1", "customer_id": "c-1"}, "REJECTED", "webhook",
    ...         "no such order", at_ms=5)["reason"]
    'no such order'
    """
    return {
        "command_id": command["command_id"],
        "customer_id": command["customer_id"],
        "outcome": result,
        "reason": reason[:MAX_REASON] if reason else None,
        "connector": connector,
        "at": int(time.time() * 1000) if at_ms is None else at_ms,
    }


class Outcomes:
    """Publishes CommandOutcome records to ``command-outcomes.v1``, keyed by customer, confirmed."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.producer = ConfirmedProducer(bootstrap)
        self.topic = topic
        self.published = 0

    def publish(self, outcomes: Iterable[dict[str, Any]]) -> None:
        """Publish and wait for Kafka; :class:`Unavailable` if it did not take them all."""
        codec = get_codec()
        records = [(o["customer_id"].encode(), codec.encode(OUTCOME, o)) for o in outcomes]
        if not records:
            return
        try:
            self.published += self.producer.publish(self.topic, records)
        except PublishError as exc:
            raise Unavailable(f"Kafka (command outcomes): {exc}") from exc

    def close(self) -> None:
        self.producer.close()
