"""List dead letters with their reasons, and re-publish chosen ones after a fix.

A dead letter keeps the original key and value bytes plus headers saying why and where from
(CONTRACT.md §1). Once the cause is fixed — the producer's schema added to ``schemas/``, a
worker's ``KEEL_MAX_RECORD_BYTES`` raised — replaying puts the very same bytes back on the
source topic, where the workers try them again::

    $ keel deadletters list
    $ keel deadletters replay 0:17 0:18      # partition:offset in deadletter.v1
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

from confluent_kafka import Consumer, TopicPartition

from streams.config import Settings
from streams.errors import KeelError
from streams.kafka.config import client_config
from streams.kafka.producer import ConfirmedProducer


class DeadLetterError(KeelError, RuntimeError):
    """A requested dead letter does not exist or cannot be replayed."""


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def reason(self) -> str:
        return self.headers.get("x-error", "(no reason recorded)")

    @property
    def source_topic(self) -> str | None:
        return self.headers.get("x-source-topic")

    def summary(self) -> dict[str, object]:
        return {
            "position": self.position,
            "source": f"{self.source_topic}[{self.headers.get('x-source-partition')}]"
            f"@{self.headers.get('x-source-offset')}",
            "failed_at": self.headers.get("x-failed-at"),
            "key": self.key.decode(errors="replace") if self.key is not None else None,
            "bytes": len(self.value) if self.value is not None else 0,
            "reason": self.reason,
        }


def _consumer(settings: Settings) -> Consumer:
    return Consumer(
        {
            **client_config(settings.kafka_bootstrap),
            "group.id": f"keel-deadletters-{uuid.uuid4()}",  # read-only: never commits
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )


def read_dead_letters(settings: Settings, timeout: float = 10.0) -> Iterator[DeadLetter]:
    """Every dead letter currently in the topic, oldest first per partition."""
    topic = settings.topics.deadletter
    consumer = _consumer(settings)
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None:
            return
        ends = {}
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        deadline = time.monotonic() + timeout
        while ends and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            pairs = cast(list[tuple[str, bytes | None]], msg.headers() or [])
            headers = {k: (v or b"").decode(errors="replace") for k, v in pairs}
            partition, offset = int(msg.partition() or 0), int(msg.offset() or 0)
            key, value = msg.key(), msg.value()
            yield DeadLetter(
                partition,
                offset,
                key.encode() if isinstance(key, str) else key,
                value.encode() if isinstance(value, str) else value,
                headers,
            )
            if offset + 1 >= ends[partition]:
                del ends[partition]
    finally:
        consumer.close()


def replay(settings: Settings, positions: list[str]) -> list[DeadLetter]:
    """Re-publish the dead letters at ``partition:offset`` positions to their source topics."""
    wanted = set(positions)
    for p in wanted:
        part, _, off = p.partition(":")
        if not (part.isdigit() and off.isdigit()):
            raise DeadLetterError(f"{p!r} is not partition:offset (e.g. 0:17)")
    found = [d for d in read_dead_letters(settings) if d.position in wanted]
    missing = wanted - {d.position for d in found}
    if missing:
        raise DeadLetterError(f"no dead letter at {', '.join(sorted(missing))}")
    for letter in found:
        if not letter.source_topic:
            raise DeadLetterError(f"dead letter {letter.position} has no x-source-topic header")
        if "x-truncated-from" in letter.headers:
            raise DeadLetterError(
                f"dead letter {letter.position} holds only the first bytes of a record of "
                f"{letter.headers['x-truncated-from']} bytes; replay the original from "
                f"{letter.source_topic} (its x-source-partition/offset headers) instead"
            )
    producer = ConfirmedProducer(settings.kafka_bootstrap)
    for letter in found:
        producer.publish(
            cast(str, letter.source_topic),  # checked above
            [(letter.key, letter.value)],
            headers=[
                ("x-replayed-from", f"{settings.topics.deadletter}:{letter.position}".encode())
            ],
        )
    return found
