"""The one producer every keel producer builds on, and the confirmed producer of the tools.

The bottom of keel's Kafka client layer, with streams/kafka/config.py (the settings). Every
producer of keel wraps a :class:`BaseProducer`, which owns the confluent-kafka ``Producer``
and the mechanics they all need: the settings of docs/contract.md §1 and the security from
``producer_config``, a full local queue waited out (``BufferError``: poll, then produce
again), delivery reports counted and their errors kept (:class:`Deliveries`), ``flush``
with a deadline, an optional thread that serves the delivery reports, and refused
credentials named as such (:attr:`BaseProducer.auth_failure`) instead of only a timeout.
What each wrapper adds is its own way of confirming:

- :class:`ConfirmedProducer` (here): ``publish`` returns once Kafka acknowledged every record
  of the call — the CLI (``keel erase``, ``keel deadletters replay``), the connectors' dead
  letters and command outcomes, the demo feed;
- ``streams.worker.emit.Emitter``: the worker's outputs, one ``Outbox`` per batch, awaited by the
  event loop, failing with a retriable or final ``EmitError``;
- ``connectors.publisher.Publisher``: one future per record, for servers with many callers;
- ``streams.worker.intake.Intake``: each batch flushed, and committed only if nothing failed.

    >>> producer = ConfirmedProducer("127.0.0.1:9092")          # doctest: +SKIP
    >>> producer.publish("orders.v1", [(b"c-1", avro_bytes)])    # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from streams.kafka.config import (
    FATAL_AT_START,
    KafkaAuthError,
    KafkaClientError,
    explain_refusal,
    producer_config,
    security,
)

log = logging.getLogger(__name__)
librdkafka_log = logging.getLogger("librdkafka")

__all__ = [
    "BaseProducer",
    "ConfirmedProducer",
    "Deliveries",
    "Headers",
    "PublishError",
    "Record",
]

Headers = list[tuple[str, str | bytes | None]]
Record = tuple[bytes | None, bytes | None]
OnDelivery = Callable[[KafkaError | None, Message], None]

#: seconds to let deliveries drain while the local queue is full, before producing again
_QUEUE_FULL_WAIT_S = 0.05


class PublishError(KafkaClientError):
    """Kafka did not acknowledge every record of a publish."""


class Deliveries:
    """The delivery reports of a group of records: how many arrived, which failed and why.

    Pass :meth:`on_delivery` as the records' callback and count each record in ``produced``
    (:meth:`BaseProducer.produce` does). Reports may arrive on another thread than the one
    producing (a poll thread): they are counted under a lock. Subclasses add what they do
    with a report in :meth:`_failed`, :meth:`_succeeded` and :meth:`_settled`.
    """

    __slots__ = ("_lock", "produced", "delivered", "errors")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.produced = 0
        self.delivered = 0
        #: "topic: reason" of every record Kafka did not take, in the order reported
        self.errors: list[str] = []

    @property
    def pending(self) -> int:
        """Records produced whose report has not arrived yet."""
        return self.produced - self.delivered

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        with self._lock:
            self.delivered += 1
            if err is not None:
                self.errors.append(f"{msg.topic()}: {err.str()}")
                self._failed(err)
            else:
                self._succeeded(msg)
            settled = self._settled()
        if settled:
            self._on_settled()

    def _failed(self, err: KafkaError) -> None:
        """A record was not written (called under the lock)."""

    def _succeeded(self, msg: Message) -> None:
        """A record was written (called under the lock)."""

    def _settled(self) -> bool:
        """Whether this report completes what a waiter waits for (called under the lock)."""
        return False

    def _on_settled(self) -> None:
        """Called (outside the lock) after a report for which :meth:`_settled` was true."""


class BaseProducer:
    """A confluent-kafka Producer with keel's settings and the mechanics every wrapper needs.

    ``overrides`` are librdkafka properties on top of ``producer_config``'s, e.g.
    ``BaseProducer(bootstrap, **{"linger.ms": 2})``.
    """

    def __init__(self, bootstrap: str, **overrides: Any) -> None:
        self.bootstrap = bootstrap
        #: why Kafka refused this client's credentials or certificate, once it did
        self.auth_failure: KafkaAuthError | None = None
        self._security = security()
        # librdkafka's own lines through Python logging (KEEL_LOG_FORMAT), not raw on stderr
        self._producer = Producer(producer_config(
            bootstrap, error_cb=self._on_error, **{"logger": librdkafka_log, **overrides}))
        self._polling: threading.Thread | None = None
        self._stop_polling = threading.Event()

    def _on_error(self, err: KafkaError) -> None:
        # what librdkafka logs itself when no error_cb is set ("ERROR" at level error)
        librdkafka_log.error("ERROR: %s: %s", err.name(), err.str())
        if err.code() in FATAL_AT_START and self.auth_failure is None:
            self.auth_failure = KafkaAuthError(explain_refusal(self.bootstrap, self._security, err))

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        partition: int | None = None,
        on_delivery: Deliveries | OnDelivery | None = None,
        *,
        wait: bool = True,
    ) -> None:
        """Queue one record; ``partition`` None or -1 means murmur2 of the key.

        ``on_delivery`` is the record's report callback, or the :class:`Deliveries` that counts
        it. A full local queue is waited out (deliveries drain meanwhile) unless ``wait`` is
        False: then ``BufferError`` is raised and the caller decides.
        """
        deliveries: Deliveries | None = None
        callback: OnDelivery | None
        if isinstance(on_delivery, Deliveries):
            deliveries, callback = on_delivery, on_delivery.on_delivery
            deliveries.produced += 1  # before: its report may arrive on the poll thread at once
        else:
            callback = on_delivery
        try:
            while True:
                try:
                    self._producer.produce(
                        topic,
                        value=value,
                        key=key,
                        headers=headers,
                        partition=-1 if partition is None else partition,
                        on_delivery=callback,
                    )
                    return
                except BufferError:
                    if not wait:
                        raise
                    self._producer.poll(_QUEUE_FULL_WAIT_S)
        except BaseException:
            if deliveries is not None:
                deliveries.produced -= 1  # not queued: no report will come
            raise

    def poll(self, timeout: float = 0.0) -> int:
        """Serve the delivery reports that arrived (waiting up to ``timeout`` s for one)."""
        return self._producer.poll(timeout)

    def flush(self, timeout: float) -> int:
        """Send everything queued and serve its reports, for at most ``timeout`` s.

        Returns how many records are still unconfirmed (0: every report arrived).
        """
        return self._producer.flush(timeout)

    def start_polling(self, name: str) -> None:
        """Serve delivery reports from a thread of their own until :meth:`close`."""
        if self._polling is not None:
            return
        self._stop_polling.clear()
        self._polling = threading.Thread(target=self._poll_loop, name=name, daemon=True)
        self._polling.start()

    def _poll_loop(self) -> None:
        while not self._stop_polling.is_set():
            self._producer.poll(0.05)

    def close(self, timeout: float = 10.0) -> int:
        """Deliver what is queued (up to ``timeout`` s), stop the poll thread; return what is left.

        ``close`` is the end of the producer: the poll thread is not started again.
        """
        left = self._producer.flush(timeout)
        self._stop_polling.set()
        if self._polling is not None:
            self._polling.join(timeout)
            self._polling = None
        return left

    def refusal(self, reason: str) -> str:
        """``reason`` a produce failed for, led by the refused credentials if they are why."""
        if self.auth_failure is None:
            return reason
        return f"{self.auth_failure} ({reason})"


class ConfirmedProducer(BaseProducer):
    """A producer whose ``publish`` returns only once Kafka acknowledged every record.

    So a caller acknowledges its own caller (a CLI's exit status, a batch's offsets) only for
    what is durably in Kafka. ``publish`` flushes the producer: one call at a time.
    """

    def publish(
        self,
        topic: str,
        records: Iterable[Record],
        headers: Headers | None = None,
        timeout: float = 30.0,
    ) -> int:
        """Produce records and wait until Kafka acknowledged all; return how many."""
        deliveries = Deliveries()
        for key, value in records:
            self.produce(topic, key, value, headers, on_delivery=deliveries)
            self.poll(0)
        remaining = self.flush(timeout)
        if remaining or deliveries.pending:
            raise PublishError(
                self.refusal(
                    f"{max(remaining, deliveries.pending)} record(s) not acknowledged in "
                    f"{timeout}s"
                )
            )
        if deliveries.errors:
            raise PublishError(
                self.refusal(f"{len(deliveries.errors)} record(s) failed: {deliveries.errors[0]}")
            )
        return deliveries.produced
