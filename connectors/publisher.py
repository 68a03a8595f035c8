"""A Kafka producer that hands out one future per record, for connectors serving many callers.

:class:`streams.kafka.producer.ConfirmedProducer` confirms with ``flush()``, which waits for
*every* record in the producer: fine for one batch at a time, but an HTTP server with concurrent
requests would make each request wait for all the others (and under steady load ``flush``
may never see an empty queue). Here a background thread polls for delivery reports and each
record's report settles its own :class:`concurrent.futures.Future`, so a request waits for
exactly its records and the event loop never blocks::

    publisher = Publisher("127.0.0.1:9092")
    futures = publisher.send([OutRecord("orders.v1", b"c-1", avro_bytes)])
    await asyncio.gather(*map(asyncio.wrap_future, futures))    # or publisher.publish(...)

Built on keel's one producer (:class:`streams.kafka.producer.BaseProducer`): the same settings
as every keel producer (``producer_config``: murmur2, idempotent, acks=all), so per-key order
holds across retries, and the same poll thread; what is the publisher's
own is a future per record and a full queue answered, not waited out, in :meth:`Publisher.send`.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message

from connectors.contract import OutRecord, Unavailable
from streams.kafka.producer import BaseProducer

log = logging.getLogger(__name__)

__all__ = ["PublishFailed", "Publisher", "QueueFull"]

# A produce that Kafka has not acknowledged by then fails with a delivery error, so every
# future settles; callers add a margin to this when they wait.
DELIVERY_TIMEOUT_MS = 30_000


class PublishFailed(Unavailable):
    """Kafka did not acknowledge a record (broker down, topic missing, ...): retry the batch."""


class QueueFull(Unavailable):
    """The producer's local queue is full: Kafka is slower than the input; retry later."""


class Publisher:
    """keel's producer + its poll thread; ``send`` returns one future per record."""

    def __init__(self, bootstrap: str, **overrides: Any) -> None:
        self._producer = BaseProducer(
            bootstrap,
            **{
                "delivery.timeout.ms": DELIVERY_TIMEOUT_MS,
                "logger": logging.getLogger("librdkafka"),  # not raw lines on stderr
                **overrides,
            },
        )
        self._producer.start_polling("kafka-delivery")

    def send(self, records: Sequence[OutRecord]) -> list[concurrent.futures.Future[None]]:
        """Produce ``records`` in order; each future resolves on its acknowledgement.

        Never blocks: a full local queue fails the remaining futures with :class:`QueueFull`
        instead of waiting (the caller decides whether to wait or to answer "busy").
        """
        futures: list[concurrent.futures.Future[None]] = []
        refused: Unavailable | None = None
        for record in records:
            future: concurrent.futures.Future[None] = concurrent.futures.Future()
            futures.append(future)
            if refused is not None:  # never produce past a refused record: it would reorder
                future.set_exception(refused)
                continue
            try:
                self._producer.produce(
                    record.topic,
                    record.key,
                    record.value,
                    on_delivery=_settle(future),
                    wait=False,
                )
            except BufferError:
                refused = QueueFull("Kafka producer queue is full")
                future.set_exception(refused)
            except KafkaException as exc:
                refused = PublishFailed(f"{record.topic}: {exc.args[0].str()}")
                future.set_exception(refused)
        return futures

    def publish(self, records: Sequence[OutRecord]) -> None:
        """Produce ``records`` and return once Kafka acknowledged all; raise if any failed.

        For blocking callers (the outbox). A full queue is waited out here, not failed.
        """
        futures: list[concurrent.futures.Future[None]] = []
        remaining = list(records)
        deadline = time.monotonic() + DELIVERY_TIMEOUT_MS / 1000 + 10
        while remaining:
            sent = self.send(remaining)
            full = next((i for i, f in enumerate(sent) if _is_queue_full(f)), None)
            if full is None:
                futures += sent
                break
            futures += sent[:full]
            remaining = remaining[full:]
            if time.monotonic() > deadline:
                raise QueueFull("Kafka producer queue stayed full")
            time.sleep(0.01)  # the poll thread drains deliveries meanwhile
        done, pending = concurrent.futures.wait(
            futures, timeout=max(0.0, deadline - time.monotonic())
        )
        if pending:
            raise PublishFailed(f"{len(pending)} record(s) not acknowledged in time")
        for future in futures:
            error = future.exception()
            if error is not None:
                raise error

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout``), then stop the poll thread."""
        self._producer.close(timeout)


def _settle(future: concurrent.futures.Future[None]) -> Any:
    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if future.done():
            return
        if err is not None:
            future.set_exception(PublishFailed(f"{msg.topic()}: {err.str()}"))
        else:
            future.set_result(None)

    return on_delivery


def _is_queue_full(future: concurrent.futures.Future[None]) -> bool:
    return future.done() and isinstance(future.exception(), QueueFull)
