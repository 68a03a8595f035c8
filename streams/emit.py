"""The worker's outputs, through one confluent-kafka producer, confirmed batch by batch.

Every record the agents write (customer states, signals, dead letters, forwards and binds
on the internal topics) goes through :class:`Emitter`. An agent fills one :class:`Outbox`
per batch of input events and awaits :meth:`Outbox.confirmed` before the batch's input
offsets may be committed, so nothing is acknowledged before what it caused is in Kafka
(at-least-once; a replay changes nothing because every merge is idempotent by event_id).

librdkafka batches and sends from its own threads: a record costs a few microseconds of
the event loop instead of an awaited faust send each. Keys are hashed with murmur2 like
faust's producer and the Java clients (CONTRACT.md §1), so a forward keyed by a customer
lands on the partition that holds that customer's table entry.

    emitter = Emitter("127.0.0.1:9092"); emitter.start()
    out = emitter.outbox()
    out.produce("customer-state.v1", b"c-1", state_bytes)
    await out.confirmed()
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from connectors.kafka import producer_config
from streams import tuning

log = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]


class EmitError(RuntimeError):
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


class Outbox:
    """The records of one batch; :meth:`confirmed` returns once Kafka acknowledged all."""

    __slots__ = (
        "_emitter", "_loop", "_lock", "_produced", "_delivered", "_done", "_errors", "_retriable",
        "offsets",
    )  # fmt: skip

    def __init__(self, emitter: Emitter, loop: asyncio.AbstractEventLoop) -> None:
        self._emitter = emitter
        self._loop = loop
        self._lock = threading.Lock()
        self._produced = 0
        self._delivered = 0
        self._done: asyncio.Future[None] | None = None
        self._errors: list[str] = []
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
        self._produced += 1  # only the event loop writes it, and only before confirmed()
        self._emitter._produce(topic, key, value, headers, partition, self._on_delivery)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        # librdkafka's poll thread
        with self._lock:
            self._delivered += 1
            if err is not None:
                self._errors.append(f"{msg.topic()}: {err.str()}")
                if err.code() not in RETRIABLE and not err.retriable():
                    self._retriable = False
            else:
                topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                if topic is not None and partition is not None and offset is not None:
                    if offset > self.offsets.get((topic, partition), -1):
                        self.offsets[topic, partition] = offset
            finished = self._done is not None and self._delivered == self._produced
        if finished:
            self._loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    async def confirmed(self) -> None:
        """Wait until every record produced so far is acknowledged; raise if any failed."""
        with self._lock:
            self._done = self._loop.create_future()
            if self._delivered == self._produced:
                self._done.set_result(None)
        await self._done
        if self._errors:
            raise EmitError(
                f"{len(self._errors)} record(s) not written: {self._errors[0]}", self._retriable
            )


class Emitter:
    """One producer per worker and a thread that serves its delivery reports."""

    def __init__(self, bootstrap: str, **overrides: Any) -> None:
        self._config = producer_config(bootstrap, **{**tuning.EMITTER, **overrides})
        self._producer: Producer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        if self._producer is not None:
            return
        self._producer = Producer(self._config)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, name="keel-emitter", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        assert self._producer is not None
        while not self._stopping.is_set():
            self._producer.poll(0.05)

    def outbox(self) -> Outbox:
        self.start()
        return Outbox(self, asyncio.get_running_loop())

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None,
        partition: int | None,
        on_delivery: Any,
    ) -> None:
        assert self._producer is not None
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=headers,
                    partition=-1 if partition is None else partition,  # -1: by the key
                    on_delivery=on_delivery,
                )
                return
            except BufferError:  # local queue full: wait for deliveries (the poll thread)
                self._producer.flush(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout`` s) and stop the delivery thread."""
        if self._producer is None:
            return
        left = self._producer.flush(timeout)
        if left:
            log.warning("%d output record(s) not delivered at shutdown", left)
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._producer = None
        self._thread = None
