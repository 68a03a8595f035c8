"""keel's one producer (streams/kafka/producer.py), against a port where no broker listens.

librdkafka queues records locally until a broker takes them, so what a wrapper sees when Kafka
does not answer — a full queue, a flush that runs out of time, a record timed out — happens
here without a broker.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from streams.kafka.config import KafkaAuthError, KafkaClientError
from streams.kafka.producer import BaseProducer, ConfirmedProducer, Deliveries, PublishError
from streams.worker.emit import EmitError


@pytest.fixture
def nowhere() -> Iterator[str]:
    """``host:port`` of a port just freed by the OS: nothing answers there."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield f"127.0.0.1:{port}"


def test_a_full_queue_raises_only_when_the_caller_will_not_wait(nowhere: str) -> None:
    producer = BaseProducer(nowhere, **{"queue.buffering.max.messages": 1})
    deliveries = Deliveries()
    producer.produce("t", b"k", b"1", on_delivery=deliveries)
    with pytest.raises(BufferError):
        producer.produce("t", b"k", b"2", on_delivery=deliveries, wait=False)
    assert deliveries.produced == 1, "a record not queued is not counted"
    assert producer.close(0.1) == 1


def test_a_record_kafka_never_took_is_a_delivery_error(nowhere: str) -> None:
    producer = BaseProducer(nowhere, **{"message.timeout.ms": 200})
    deliveries = Deliveries()
    producer.produce("orders.v1", b"k", b"v", on_delivery=deliveries)
    assert producer.flush(10) == 0
    assert deliveries.pending == 0
    assert len(deliveries.errors) == 1 and deliveries.errors[0].startswith("orders.v1: ")


def test_publish_raises_when_kafka_does_not_acknowledge_in_time(nowhere: str) -> None:
    producer = ConfirmedProducer(nowhere)
    with pytest.raises(PublishError, match=r"1 record\(s\) not acknowledged in 0.2s"):
        producer.publish("orders.v1", [(b"k", b"v")], timeout=0.2)
    producer.close(0)


def test_refused_credentials_lead_the_reason() -> None:
    producer = BaseProducer("127.0.0.1:1")
    assert producer.refusal("timed out") == "timed out"
    producer.auth_failure = KafkaAuthError("Kafka at 127.0.0.1:1 refused this client")
    assert producer.refusal("timed out") == "Kafka at 127.0.0.1:1 refused this client (timed out)"
    producer.close(0)


def test_one_error_family() -> None:
    for error in (KafkaAuthError, PublishError, EmitError):
        assert issubclass(error, KafkaClientError) and issubclass(error, RuntimeError)
