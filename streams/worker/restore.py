"""Restore at disk speed: a table partition's changelog read straight into its RocksDB database.

faust restores a table by passing every changelog record through its consumer and its recovery
loop, one asyncio turn per record: a worker whose data dir was lost needed ~70 s for 20,000
customers (350 s per 100,000). When a table's partitions are assigned, keel reads their
changelogs first, with confluent-kafka in batches of thousands of records, from the offset each
database has (none: the beginning) to the end it had when the restore began, and writes each
batch into the partition's database as one RocksDB write batch together with its last offset.
faust's recovery then starts after that offset (streams/worker/tables.py: the same marker keel's
own batches write) and finds only what came since.

A crash in the middle leaves a database whose rows match its offset; the next start goes on
from there. Whatever keel cannot read here (Kafka unreachable, a partition that makes no
progress for ``tuning.RESTORE_STALL_S``) it leaves to faust's recovery, which reads it the slow
way: the restore only ever moves a partition's offset forward over records it has written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition
from rocksdict import WriteBatch

from streams import tuning
from streams.kafka.config import client_config

log = logging.getLogger(__name__)

__all__ = ["Span", "restore"]


@dataclass
class Span:
    """What is left to read of one partition: from ``start`` up to (not including) ``end``."""

    partition: int
    start: int
    end: int

    @property
    def done(self) -> bool:
        return self.start >= self.end


def restore(store: Any, topic: str, partitions: Iterable[int], bootstrap: str, app_id: str) -> int:
    """Read ``topic``, the changelog of the table ``store`` (faust's RocksDB store) holds, into
    the databases of ``partitions``; the number of records written. Blocks for as long as it
    reads (the worker runs it in a thread)."""
    began = time.monotonic()
    consumer = Consumer(
        client_config(bootstrap, None, **{
            "group.id": f"{app_id}-restore",  # never joins: assign() only, no commits
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 64 * 1024**2,
            "max.partition.fetch.bytes": 16 * 1024**2,
            "logger": logging.getLogger("librdkafka"),
        })  # fmt: skip
    )
    try:
        spans = _spans(consumer, store, topic, partitions)
        if not spans:
            return 0
        consumer.assign([TopicPartition(topic, s.partition, s.start) for s in spans.values()])
        written = _read(consumer, store, spans)
    finally:
        consumer.close()
    if written:
        log.info(
            "restored %d changelog records of %s into %d partitions in %.1f s",
            written, topic, len(spans), time.monotonic() - began,
        )  # fmt: skip
    return written


def _spans(consumer: Consumer, store: Any, topic: str, partitions: Iterable[int]) -> dict:
    """Per partition with records past its database's offset: what is left to read."""
    spans: dict[int, Span] = {}
    for partition in partitions:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=tuning.RESTORE_STALL_S
        )
        stored = store._db_for_partition(partition).get(store.offset_key)
        start = low if stored is None else max(int(stored) + 1, low)
        if start < high:
            spans[partition] = Span(partition, start, high)
    return spans


def _read(consumer: Consumer, store: Any, spans: dict[int, Span]) -> int:
    """Consume until every span is done; write batch by batch. Stops early (the rest left to
    faust) when nothing arrives for ``tuning.RESTORE_STALL_S``."""
    written = 0
    last_progress = time.monotonic()
    reported = last_progress
    left = {p: s for p, s in spans.items() if not s.done}
    while left:
        messages = consumer.consume(tuning.RESTORE_BATCH, timeout=0.1)
        batches: dict[int, tuple[WriteBatch, int]] = {}
        for m in messages:
            err, partition, offset, key = m.error(), m.partition(), m.offset(), m.key()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:  # (sooner if compacted at the end)
                    left.pop(partition, None)  # type: ignore[arg-type]
                    continue
                log.warning("restore of %s stops at an error: %s", m.topic(), err)
                left.clear()
                break
            span = left.get(partition) if partition is not None else None
            if span is None or offset is None or offset < span.start or key is None:
                continue
            batch, _ = batches.get(span.partition) or (WriteBatch(raw_mode=True), 0)
            value = m.value()
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
            batches[span.partition] = (batch, offset)
            span.start = offset + 1
            if span.done:
                del left[span.partition]
        for partition, (batch, offset) in batches.items():
            written += len(batch)
            batch.put(store.offset_key, str(offset).encode())
            store._db_for_partition(partition).write(batch)
        now = time.monotonic()
        if batches:
            last_progress = now
        elif now - last_progress > tuning.RESTORE_STALL_S:
            log.warning(
                "restore made no progress for %.0f s; faust's recovery reads the rest of %d "
                "partitions", tuning.RESTORE_STALL_S, len(left),
            )  # fmt: skip
            break
        if now - reported > 5:
            reported = now
            remaining = sum(s.end - s.start for s in left.values())
            log.info("restoring: %d records written, about %d left", written, remaining)
    return written
