"""The worker's outputs, through one confluent-kafka producer, confirmed batch by batch.

Every record the agents write (customer states, signals, dead letters, forwards and binds
on the internal topics) goes through :class:`Emitter`. An agent fills one :class:`Outbox`
per batch of input events and awaits :meth:`Outbox.confirmed` before the batch's input
offsets may be committed, so nothing is acknowledged before what it caused is in Kafka
(at-least-once; a replay changes nothing because every merge is idempotent by event_id).

The producer is streams/kafka/producer.py's :class:`~streams.kafka.producer.BaseProducer`
(settings, back-pressure, delivery bookkeeping shared with every keel producer); what is the
emitter's own is the outbox per batch and its retriable :class:`EmitError`.

librdkafka batches and sends from its own threads: a record costs a few microseconds of
the event loop instead of an awaited faust send each. Keys are hashed with murmur2 like
faust's producer and the Java clients (docs/contract.md §1), so a forward keyed by a customer
lands on the partition that holds that customer's table entry.

    emitter = Emitter("127.0.0.1:9092"); emitter.start()
    out = emitter.outbox()
    out.produce("customer-state.v1", b"c-1", state_bytes)
    await out.confirmed()

The worker's one :data:`emitter` lives here, next to the names of the topics it writes, so
whatever sends a record (the join's handlers and timers, the HTTP side's commands, erasures
and assignments, the voice publisher) imports this module, never the join agent.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from confluent_kafka import KafkaError, Message

from streams import tuning
from streams.app import settings
from streams.kafka import topics as t
from streams.kafka.config import KafkaClientError
from streams.kafka.producer import BaseProducer, Deliveries, Headers

log = logging.getLogger(__name__)

__all__ = [
    "CUSTOMER_EVENTS", "DEADLETTER_TOPIC", "REF_TOPIC", "RETRIABLE", "SIGNAL_TOPIC",
    "EmitError", "Emitter", "Headers", "Outbox", "emitter",
]  # fmt: skip


class EmitError(KafkaClientError):
    """Kafka did not take a record the worker produced (the batch is not acknowledged).

    ``retriable``: every failure was one that producing the same records again can cure
    (Kafka unreachable, a leader moving, too few in-sync replicas, a delivery timed out),
    not one that would fail again (a record too big, a topic that does not exist).
    """

    def __init__(self, message: str, retriable: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable


#: delivery errors an outage or a leader election causes: the same records can go again
RETRIABLE = frozenset({
    KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN, KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NOT_ENOUGH_REPLICAS, KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NOT_LEADER_FOR_PARTITION,
})  # fmt: skip


class Outbox(Deliveries):
    """The records of one batch; :meth:`confirmed` returns once Kafka acknowledged all.

    Its delivery reports arrive on the emitter's poll thread (:class:`Deliveries` counts them
    under its lock); the last one of a batch being confirmed wakes the event loop.
    """

    __slots__ = ("_emitter", "_loop", "_done", "_retriable", "offsets")

    def __init__(self, emitter: Emitter, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._emitter = emitter
        self._loop = loop
        self._done: asyncio.Future[None] | None = None
        self._retriable = True
        #: (topic, partition) -> offset of the last record of this outbox written there
        self.offsets: dict[tuple[str, int], int] = {}

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        partition: int | None = None,
    ) -> None:
        """Queue a record; ``partition`` None means murmur2 of the key."""
        # only the event loop produces, and only before confirmed()
        self._emitter._producer_started().produce(topic, key, value, headers, partition, self)

    def _failed(self, err: KafkaError) -> None:
        if err.code() not in RETRIABLE and not err.retriable():
            self._retriable = False

    def _succeeded(self, msg: Message) -> None:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if topic is not None and partition is not None and offset is not None:
            if offset > self.offsets.get((topic, partition), -1):
                self.offsets[topic, partition] = offset

    def _settled(self) -> bool:
        return self._done is not None and self.delivered == self.produced

    def _on_settled(self) -> None:
        self._loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    async def confirmed(self) -> None:
        """Wait until every record produced so far is acknowledged; raise if any failed."""
        with self._lock:
            self._done = self._loop.create_future()
            if self.delivered == self.produced:
                self._done.set_result(None)
        await self._done
        if self.errors:
            reason = f"{len(self.errors)} record(s) not written: {self.errors[0]}"
            producer = self._emitter._producer if self._emitter is not None else None
            raise EmitError(
                producer.refusal(reason) if producer is not None else reason, self._retriable
            )


class Emitter:
    """One producer per worker and a thread that serves its delivery reports."""

    def __init__(self, bootstrap: str, **overrides: Any) -> None:
        self._bootstrap = bootstrap
        self._overrides = {**tuning.EMITTER, **overrides}
        self._producer: BaseProducer | None = None

    def start(self) -> None:
        if self._producer is not None:
            return
        self._producer = BaseProducer(self._bootstrap, **self._overrides)
        self._producer.start_polling("keel-emitter")

    def _producer_started(self) -> BaseProducer:
        assert self._producer is not None
        return self._producer

    def outbox(self) -> Outbox:
        self.start()
        return Outbox(self, asyncio.get_running_loop())

    def stop(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout`` s) and stop the delivery thread."""
        if self._producer is None:
            return
        left = self._producer.close(timeout)
        if left:
            log.warning("%d output record(s) not delivered at shutdown", left)
        self._producer = None


#: the worker's one producer: every record the worker writes goes through it
emitter = Emitter(settings.kafka_bootstrap)

SIGNAL_TOPIC = settings.topics.signals
DEADLETTER_TOPIC = settings.topics.deadletter
#: the internal topic keyed by customer id (events of a known customer, and the messages
#: keyed by ``voice.VOICE_KEY`` and ``unmatched.UNMATCHED_KEY``)
CUSTOMER_EVENTS = t.customer_events.get_topic_name()
#: reference namespace -> its internal topic, keyed by the reference
REF_TOPIC = {ns: topic.get_topic_name() for ns, topic in t.ref_topics.items()}
