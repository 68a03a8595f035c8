"""Restore at disk speed (streams/worker/restore.py) against a real broker and real RocksDB.

A changelog with updates and tombstones over two partitions is read into one database per
partition: each ends holding the last value of every key of its partition, and the offset of
the last record it wrote. A second restore after more records reads only those (the offset is
where it resumes, as after a crash in the middle), and an unreachable Kafka leaves the
databases as they were.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import rocksdict
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from deploy.local.stack import Kafka, free_port
from streams import tuning
from streams.worker.restore import restore
from tests.builders import unique

OFFSET_KEY = b"__faust\0offset__"  # faust's RocksDB store marker (faust.stores.rocksdb)


class Store:
    """The two things restore uses of faust's RocksDB store, over real databases."""

    offset_key = OFFSET_KEY

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dbs: dict[int, rocksdict.Rdict] = {}

    def _db_for_partition(self, partition: int) -> rocksdict.Rdict:
        if partition not in self.dbs:
            options = rocksdict.Options(raw_mode=True)
            options.create_if_missing(True)
            self.dbs[partition] = rocksdict.Rdict(str(self.root / str(partition)), options)
        return self.dbs[partition]

    def rows(self, partition: int) -> dict[bytes, bytes]:
        db = self._db_for_partition(partition)
        return {k: v for k, v in db.items() if k != OFFSET_KEY}

    def offset(self, partition: int) -> int | None:
        raw = self._db_for_partition(partition).get(OFFSET_KEY)
        return None if raw is None else int(raw)

    def close(self) -> None:
        for db in self.dbs.values():
            db.close()


def changelog(kafka: Kafka, partitions: int = 2) -> str:
    topic = unique("restore-changelog")
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(30)
    return topic


def produce(kafka: Kafka, topic: str, records: list[tuple[int, bytes, bytes | None]]) -> None:
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "linger.ms": 5})
    for i, (partition, key, value) in enumerate(records):
        producer.produce(topic, value, key, partition=partition)
        if i % 50_000 == 49_999:
            assert producer.flush(30) == 0
    assert producer.flush(30) == 0


def history(rng: random.Random, n: int) -> list[tuple[int, bytes, bytes | None]]:
    """``n`` records over 300 keys per partition: mostly updates, some tombstones."""
    records = []
    for i in range(n):
        partition, key = rng.randrange(2), f"k-{rng.randrange(300)}".encode()
        value = None if rng.random() < 0.15 else f'{{"v": {i}}}'.encode()
        records.append((partition, key, value))
    return records


def last_values(records: list[tuple[int, bytes, bytes | None]], partition: int) -> dict:
    rows: dict[bytes, Any] = {}
    for p, key, value in records:
        if p == partition:
            rows[key] = value
    return {k: v for k, v in rows.items() if v is not None}


def test_a_changelog_is_restored_batch_by_batch_and_resumes_from_the_stored_offset(
    kafka: Kafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tuning, "RESTORE_BATCH", 500)  # many write batches, not one
    rng = random.Random(7)
    topic = changelog(kafka)
    first = history(rng, 6_000)
    produce(kafka, topic, first)
    store = Store(tmp_path / "db")
    try:
        assert restore(store, topic, [0, 1], kafka.bootstrap, unique("app")) == len(first)
        for partition in (0, 1):
            assert store.rows(partition) == last_values(first, partition)
            assert store.offset(partition) == sum(p == partition for p, _, _ in first) - 1

        more = history(rng, 3_000)
        produce(kafka, topic, more)
        assert restore(store, topic, [0, 1], kafka.bootstrap, unique("app")) == len(more)
        for partition in (0, 1):
            assert store.rows(partition) == last_values(first + more, partition)
        # nothing new: nothing read
        assert restore(store, topic, [0, 1], kafka.bootstrap, unique("app")) == 0
        # one partition only: the other's database is not touched
        produce(kafka, topic, [(0, b"k-new", b"{}"), (1, b"k-new", b"{}")])
        assert restore(store, topic, [1], kafka.bootstrap, unique("app")) == 1
        assert b"k-new" in store.rows(1) and b"k-new" not in store.rows(0)
    finally:
        store.close()


def test_partitions_that_end_first_do_not_stop_the_others(
    kafka: Kafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four partitions of 1 KB records, 100 to 40,000 of them (~65 MB, more than one fetch):
    the ends of the small ones arrive while the big ones are still read."""
    monkeypatch.setattr(tuning, "RESTORE_BATCH", 2_000)
    sizes = {0: 100, 1: 5_000, 2: 20_000, 3: 40_000}
    topic = changelog(kafka, partitions=len(sizes))
    pad = b"x" * 1000
    records = [(p, f"k-{i}".encode(), b'{"v": %d, "pad": "%s"}' % (i, pad))
               for p, n in sizes.items() for i in range(n)]  # fmt: skip
    produce(kafka, topic, records)
    store = Store(tmp_path / "db")
    try:
        assert restore(store, topic, list(sizes), kafka.bootstrap, unique("app")) == len(records)
        for partition, n in sizes.items():
            assert store.offset(partition) == n - 1
            assert store.rows(partition) == last_values(records, partition)
    finally:
        store.close()


def test_an_unreachable_kafka_leaves_the_databases_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tuning, "RESTORE_STALL_S", 2.0)
    store = Store(tmp_path / "db")
    store._db_for_partition(0)[b"k"] = b"v"
    try:
        with pytest.raises(KafkaException):
            restore(store, "keel-customers-changelog", [0], f"127.0.0.1:{free_port()}", "app")
        assert store.rows(0) == {b"k": b"v"} and store.offset(0) is None
    finally:
        store.close()
