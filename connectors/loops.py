"""The loops around the contract (:mod:`connectors.contract`): ``pump`` for a source,
``drain`` for a sink, with the backoff and the stop signal they wait on.

A dependency that is down (:class:`~connectors.contract.Unavailable`) means *wait and retry
the same batch* — never skip it, never reorder.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from connectors import metrics
from connectors.contract import Batch, Sink, SinkRecord, Source, Unavailable
from connectors.publisher import Publisher

log = logging.getLogger(__name__)

__all__ = ["Backoff", "Stopper", "drain", "pump"]


class Backoff:
    """Exponential backoff with jitter: 0.1 s, 0.2 s, ... capped at ``maximum``.

    Jitter keeps several connector instances from hammering a restarted database in step.
    """

    def __init__(self, initial: float = 0.1, maximum: float = 5.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self._next = initial

    def delay(self) -> float:
        """The next wait; each call doubles the following one up to the cap."""
        current = self._next
        self._next = min(self.maximum, self._next * 2)
        return current * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self._next = self.initial


class Stopper:
    """Set by SIGTERM/SIGINT; ``wait`` sleeps but wakes at once when a stop is requested."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def install(self) -> Stopper:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: self.stop())
        return self

    def stop(self) -> None:
        self._event.set()

    @property
    def stopping(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if a stop was requested."""
        return self._event.wait(seconds)


def pump(
    source: Source,
    publisher: Publisher,
    stopper: Stopper,
    *,
    connector: str,
    limit: int,
    idle: float,
) -> None:
    """Publish what ``source`` fetches, acknowledging each batch only after Kafka did.

    Kafka down: the same batch is published again after a backoff (the source is asked
    whether it can still acknowledge it; if not, the batch is dropped and fetched anew, since
    nothing was acknowledged). Duplicates are possible, loss and reordering are not.
    """
    backoff = Backoff()
    while not stopper.stopping:
        try:
            batch = source.fetch(limit)
        except Unavailable as exc:
            metrics.RETRIES.labels(connector, "source").inc()
            log.warning("source unavailable, retrying: %s", exc)
            stopper.wait(backoff.delay())
            continue
        if not batch:
            backoff.reset()
            stopper.wait(idle)
            continue
        if _publish_until_acked(source, publisher, stopper, batch, connector, backoff):
            try:
                source.ack(batch)
                backoff.reset()
            except Unavailable as exc:  # published but not forgotten: it will be re-sent
                metrics.RETRIES.labels(connector, "source").inc()
                log.warning("could not acknowledge a published batch (it will be re-sent): %s", exc)
                stopper.wait(backoff.delay())


def _publish_until_acked(
    source: Source,
    publisher: Publisher,
    stopper: Stopper,
    batch: Batch,
    connector: str,
    backoff: Backoff,
) -> bool:
    while not stopper.stopping:
        if not batch.records:
            return True
        began = time.perf_counter()
        try:
            publisher.publish(batch.records)
        except Unavailable as exc:
            metrics.RETRIES.labels(connector, "kafka").inc()
            log.warning("Kafka did not acknowledge a batch, retrying: %s", exc)
            if stopper.wait(backoff.delay()):
                return False
            try:
                source.check()
            except Unavailable as lost:
                log.warning("dropping the unacknowledged batch, fetching again: %s", lost)
                return False
            continue
        metrics.PUBLISH_SECONDS.labels(connector).observe(time.perf_counter() - began)
        for record in batch.records:
            metrics.PUBLISHED.labels(connector, record.topic).inc()
        return True
    return False


def drain(
    consumer: Consumer,
    topic: str | Sequence[str],
    sink: Sink,
    stopper: Stopper,
    *,
    connector: str,
    limit: int,
) -> None:
    """Consume ``topic`` (or several) into ``sink``; commit offsets only after the sink
    accepted a batch.

    The sink down: the consumer is paused (so it stays in its group without fetching more)
    and the *same* batch is written again after a backoff until it is accepted. A rebalance
    meanwhile drops the batch: with the eager assignors every partition is revoked and its
    next owner (maybe this process again) starts from the last committed offset.
    """
    rebalances = 0

    def on_revoke(consumer: Any, partitions: list[TopicPartition]) -> None:
        nonlocal rebalances
        rebalances += 1

    consumer.subscribe([topic] if isinstance(topic, str) else list(topic), on_revoke=on_revoke)
    backoff = Backoff()
    while not stopper.stopping:
        messages = [m for m in consumer.consume(num_messages=limit, timeout=0.5) if _ok(m)]
        if not messages:
            continue
        batch = [_record(m) for m in messages]

        def still_owned(generation: int = rebalances) -> bool:
            return rebalances == generation

        if not _write_until_accepted(consumer, sink, stopper, batch, connector, still_owned):
            continue  # stopping, or revoked: the next owner replays from the last commit
        if still_owned():
            _commit(consumer, messages, stopper, connector, backoff)


def _record(message: Message) -> SinkRecord:
    topic, partition, offset = _position(message)
    return SinkRecord(_key(message), message.value(), partition, offset, topic)


def _position(message: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed record (never None for a record without error)."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


def _key(message: Message) -> bytes | None:
    key = message.key()
    return key.encode() if isinstance(key, str) else key


def _ok(message: Message) -> bool:
    error = message.error()
    if error is None:
        return True
    if error.code() != KafkaError._PARTITION_EOF:
        log.warning("consumer error: %s", error.str())
    return False


def _write_until_accepted(
    consumer: Consumer,
    sink: Sink,
    stopper: Stopper,
    batch: list[SinkRecord],
    connector: str,
    still_owned: Callable[[], bool],
) -> bool:
    """Write ``batch`` until the sink accepts it; False if stopping or the partitions moved.

    A batch whose partitions were revoked while the sink was down is not written late: the
    next owner may already have written newer states that it would overwrite.
    """
    backoff = Backoff()
    paused: list[TopicPartition] = []
    try:
        while not stopper.stopping and still_owned():
            try:
                sink.write(batch)
                backoff.reset()
                return True
            except Unavailable as exc:
                metrics.RETRIES.labels(connector, "sink").inc()
                log.warning("sink did not accept %d record(s), retrying: %s", len(batch), exc)
            if not paused:
                paused = list(consumer.assignment())
                consumer.pause(paused)
            deadline = time.monotonic() + backoff.delay()
            while not stopper.stopping and time.monotonic() < deadline:
                # Polling keeps the group membership alive; paused partitions return nothing.
                message = consumer.poll(min(0.5, max(0.0, deadline - time.monotonic())))
                if message is not None and message.error() is None:
                    # Not expected while paused; rewind so the record is not lost.
                    consumer.seek(TopicPartition(*_position(message)))
        return False
    finally:
        if paused:
            try:
                consumer.resume(paused)
            except KafkaException as exc:  # revoked meanwhile; a new assignment is unpaused
                log.info("not resuming revoked partitions: %s", exc)


def _commit(
    consumer: Consumer, messages: list[Message], stopper: Stopper, connector: str, backoff: Backoff
) -> None:
    last: dict[tuple[str, int], int] = {}
    for message in messages:
        if message.error() is None:
            topic, partition, offset = _position(message)
            last[(topic, partition)] = offset
    offsets = [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
    while not stopper.stopping:
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
            return
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() in _GIVE_UP_COMMIT:
                log.info("offsets not committed (%s); the batch will be replayed", error.str())
                return
            metrics.RETRIES.labels(connector, "kafka").inc()
            log.warning("commit failed, retrying: %s", error.str())
            stopper.wait(backoff.delay())


# Commit errors after which retrying is pointless: the group moved on, the batch is replayed.
_GIVE_UP_COMMIT = frozenset(
    {
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError._NO_OFFSET,
        KafkaError._STATE,
    }
)
