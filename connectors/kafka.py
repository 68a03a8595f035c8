"""A confirmed Kafka producer for keel's connectors and tools.

Every produce is confirmed: ``publish`` returns only after Kafka acknowledged every
record, and raises if any failed, so a connector acknowledges its caller (HTTP 202, an
outbox row deleted) only for what is durably in Kafka. Keys are hashed with murmur2 like
the Java clients and faust, so a key lands on the partition the stream worker expects.

    >>> producer = ConfirmedProducer("127.0.0.1:9092")          # doctest: +SKIP
    >>> producer.publish("orders.v1", [(b"c-1", avro_bytes)])    # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from streams.kafka_config import producer_config

log = logging.getLogger(__name__)

__all__ = ["ConfirmedProducer", "PublishError", "Record", "producer_config"]

Record = tuple[bytes | None, bytes | None]


class PublishError(RuntimeError):
    """Kafka did not acknowledge every record of a publish."""


class ConfirmedProducer:
    """A confluent-kafka Producer whose ``publish`` waits for every acknowledgement."""

    def __init__(self, bootstrap: str, **overrides: Any) -> None:
        self._producer = Producer(producer_config(bootstrap, **overrides))

    def publish(
        self,
        topic: str,
        records: Iterable[Record],
        headers: list[tuple[str, str | bytes | None]] | None = None,
        timeout: float = 30.0,
    ) -> int:
        """Produce records and wait until Kafka acknowledged all; return how many."""
        failures: list[str] = []
        pending = 0

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            nonlocal pending
            pending -= 1
            if err is not None:
                failures.append(f"{msg.topic()}: {err.str()}")

        count = 0
        for key, value in records:
            while True:
                try:
                    self._producer.produce(
                        topic, key=key, value=value, headers=headers, on_delivery=on_delivery
                    )
                    break
                except BufferError:
                    self._producer.poll(0.05)  # local queue full: let deliveries drain
            pending += 1
            count += 1
            self._producer.poll(0)
        remaining = self._producer.flush(timeout)
        if remaining or pending:
            raise PublishError(
                f"{max(remaining, pending)} record(s) not acknowledged in {timeout}s"
            )
        if failures:
            raise PublishError(f"{len(failures)} record(s) failed: {failures[0]}")
        return count

    def close(self, timeout: float = 10.0) -> None:
        self._producer.flush(timeout)
