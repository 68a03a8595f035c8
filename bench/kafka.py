"""Kafka plumbing for the benchmarks: fast preloading, progress of a group, record timestamps.

Completion of a pipeline is read from the broker, not from the pipeline: a consumer group is
done when its committed offsets reached the end offsets of every topic it reads (internal
repartition topics included) and nothing moved since the last look; the time it took is the
span between the first and the last record the pipeline wrote (their CreateTime, stamped by
the pipeline's own producer when it sent them), so polling intervals do not blur the figure.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.errors import BenchError
from streams.kafka.config import client_config, producer_config

Record = tuple[str, bytes, bytes]  # (topic, key, value)

#: Producer settings for loading a backlog: big lz4 batches, every record still acknowledged.
PRELOAD_OVERRIDES: dict[str, Any] = {
    "linger.ms": 50,
    "batch.size": 1_000_000,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
    "compression.type": "lz4",
}


class BenchKafkaError(BenchError):
    """Kafka refused or lost something the benchmark needed."""


def preload(bootstrap: str, records: Iterable[Record]) -> tuple[int, float]:
    """Produce every record and wait for all acknowledgements; return (count, seconds)."""
    producer = Producer(producer_config(bootstrap, **PRELOAD_OVERRIDES))
    failed: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failed.append(err.str())

    start, count = time.perf_counter(), 0
    for topic, key, value in records:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.01)
        count += 1
        if count % 10_000 == 0:
            producer.poll(0)
    left = producer.flush(120)
    if left or failed:
        raise BenchKafkaError(f"preload: {left} unacknowledged, {len(failed)} failed {failed[:1]}")
    return count, time.perf_counter() - start


def _consumer(bootstrap: str, group: str | None = None, **extra: Any) -> Consumer:
    config = {
        **client_config(bootstrap),
        "group.id": group or f"bench-probe-{time.time_ns()}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        **extra,
    }
    return Consumer(config)


def partitions(bootstrap: str, topics: Sequence[str], timeout: float = 10) -> list[TopicPartition]:
    admin = AdminClient(client_config(bootstrap))
    meta = admin.list_topics(timeout=timeout).topics
    missing = [t for t in topics if t not in meta]
    if missing:
        raise BenchKafkaError(f"topics missing: {missing}")
    return [TopicPartition(t, p) for t in topics for p in sorted(meta[t].partitions)]


def topics_with_prefix(bootstrap: str, prefix: str) -> list[str]:
    admin = AdminClient(client_config(bootstrap))
    return sorted(t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix))


def end_offsets(bootstrap: str, topics: Sequence[str]) -> dict[tuple[str, int], int]:
    consumer = _consumer(bootstrap)
    try:
        return {
            (tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=10)[1]
            for tp in partitions(bootstrap, topics)
        }
    finally:
        consumer.close()


def group_lag(bootstrap: str, groups: Mapping[str, Sequence[str]]) -> int:
    """Records not yet committed by each group of its topics (no commit counts as offset 0)."""
    lag = 0
    for group, topics in groups.items():
        consumer = _consumer(bootstrap, group)
        try:
            tps = partitions(bootstrap, topics)
            committed = {
                (tp.topic, tp.partition): max(tp.offset, 0)
                for tp in consumer.committed(tps, timeout=10)
            }
            for tp in tps:
                end = consumer.get_watermark_offsets(tp, timeout=10)[1]
                lag += max(0, end - committed[(tp.topic, tp.partition)])
        finally:
            consumer.close()
    return lag


def wait_caught_up(
    bootstrap: str,
    groups: Mapping[str, Sequence[str]],
    timeout: float,
    interval: float = 1.0,
    alive: Any = None,
) -> float:
    """Wait until each group committed everything in its topics twice in a row; return when.

    ``alive`` (optional) is called on every round and may raise to abort (a crashed worker).
    """
    topics = [topic for group_topics in groups.values() for topic in group_topics]
    deadline = time.monotonic() + timeout
    zero_since: float | None = None
    last_ends: dict[tuple[str, int], int] | None = None
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        lag = group_lag(bootstrap, groups)
        ends = end_offsets(bootstrap, topics)
        if lag == 0 and ends == last_ends and zero_since is not None:
            return zero_since
        if lag == 0 and zero_since is None:
            zero_since = time.time()
        elif lag:
            zero_since = None
        last_ends = ends
        time.sleep(interval)
    raise BenchKafkaError(f"groups {dict(groups)} not caught up after {timeout:g}s")


@dataclass(frozen=True)
class Span:
    """First and last CreateTime (epoch s) and the number of records in some topics."""

    first: float
    last: float
    records: int


def record_span(bootstrap: str, topics: Sequence[str], timeout: float = 20) -> Span:
    """CreateTime (or LogAppendTime) of the earliest and the latest record in ``topics``."""
    consumer = _consumer(bootstrap)
    records = 0
    heads, tails = [], []
    try:
        for tp in partitions(bootstrap, topics):
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            if high > low:
                records += high - low
                heads.append(TopicPartition(tp.topic, tp.partition, low))
                tails.append(TopicPartition(tp.topic, tp.partition, high - 1))
        first = min(_first_timestamps(consumer, heads, timeout), default=float("inf"))
        last = max(_first_timestamps(consumer, tails, timeout), default=0.0)
    finally:
        consumer.close()
    if records == 0 or first == float("inf"):
        raise BenchKafkaError(f"no records in {list(topics)}")
    return Span(first, last, records)


def _first_timestamps(consumer: Consumer, tps: list[TopicPartition], timeout: float) -> list:
    """Timestamp (s) of the first record read at each of ``tps`` (its offset or the next)."""
    if not tps:
        return []
    consumer.assign(tps)
    wanted = {(tp.topic, tp.partition) for tp in tps}
    found: dict[tuple[str, int], float] = {}
    deadline = time.monotonic() + timeout
    while wanted - found.keys() and time.monotonic() < deadline:
        for msg in consumer.consume(1000, 0.2):
            key = (msg.topic(), msg.partition())
            if not msg.error() and key in wanted and key not in found:
                found[key] = msg.timestamp()[1] / 1000
    consumer.unassign()
    return list(found.values())


def consumed(bootstrap: str, group: str, topics: Sequence[str]) -> int:
    """Records of ``topics`` that ``group`` has committed (read and processed)."""
    consumer = _consumer(bootstrap, group)
    try:
        tps = partitions(bootstrap, topics)
        return sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))
    finally:
        consumer.close()


def count_keys(bootstrap: str, topic: str, timeout: float = 120) -> int:
    """Distinct non-null-valued keys in ``topic`` (customers with a state)."""
    return len(keys_of(bootstrap, topic, timeout))


def keys_of(bootstrap: str, topic: str, timeout: float = 120) -> set[bytes]:
    """The distinct keys of ``topic``'s records with a value."""
    consumer = _consumer(bootstrap, **{"fetch.max.bytes": 52_428_800})
    keys: set[bytes] = set()
    try:
        tps = partitions(bootstrap, [topic])
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        pending = {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, 0.5):
                if msg.error():
                    continue
                if msg.value() is not None:
                    keys.add(msg.key())
                if msg.offset() + 1 >= ends[msg.partition()]:
                    pending.discard(msg.partition())
    finally:
        consumer.close()
    return keys


def partitions_of(bootstrap: str, topic: str) -> int:
    return len(partitions(bootstrap, [topic]))


def create_log_append_topic(bootstrap: str, name: str, count: int) -> None:
    """A topic whose records the broker stamps with the time it appended them."""
    admin = AdminClient(client_config(bootstrap))
    topic = NewTopic(
        name,
        num_partitions=count,
        replication_factor=1,
        config={"message.timestamp.type": "LogAppendTime"},
    )
    for _name, future in admin.create_topics([topic]).items():
        try:
            future.result(timeout=60)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
