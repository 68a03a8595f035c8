"""The worker's tables: RocksDB partitions with changelog topics, read and written by keel.

Every table is co-partitioned with the internal topics that feed it: a key lives in the
partition murmur2 gives it, the same partition number as the record that changes it.

    customers          customer id -> stored state (streams/domain/state.py)
    signal-due         customer id -> when its time-based signals next change
    {ns}-owners        reference (order id, case id, e-mail, phone) -> customer id
    {ns}-held          reference -> events waiting for it to become known
    {ns}-identities    e-mail / phone -> the customer ids seen with it (streams/domain/links.py)
    erased             hash of an erased customer id or reference -> when
    (streams/domain/erasure.py)
    voice-facts        contact id -> its fact for the Voice of the Customer
    (streams/domain/voice.py);
                       every fact lives in the partition of ``voice.VOICE_KEY``
    unmatched          unmatched contacts and who they name (streams/domain/unmatched.py); every row
                       lives in the partition of ``unmatched.UNMATCHED_KEY``
    contact-assigned   case id -> the customer an agent assigned the contact to (assign_contact)

The agents never write through faust's table API (an awaited changelog send per write):
streams/worker/checkpoint.py writes a whole batch into each partition's database at once, after
Kafka confirmed its changelog records. Reads go to the partition's database directly.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import faust
import orjson
import rocksdict
from aiokafka.partitioner import murmur2
from faust.stores.rocksdb import RocksDBOptions
from rocksdict import WriteBatch, WriteOptions

from streams import tuning
from streams.app import app, settings
from streams.domain.join import NAMESPACES
from streams.domain.links import IDENTIFIERS
from streams.kafka import admin
from streams.worker import restore

log = logging.getLogger(__name__)


class _KeelTable(faust.Table):
    """A RocksDB table keyed by a plain UTF-8 id, values as orjson.

    faust picks serializers from the types and would JSON-encode str keys ('"c-1"'), which
    hash to another partition than the topics' keys, so routing would ask the wrong
    worker. The serializers must be right from construction on: faust builds the changelog
    topic (and with it how recovery decodes) while the table is being registered.
    """

    def _serializer_from_type(self, typ: Any) -> str:
        return "raw" if typ is str else "orjson"

    async def on_rebalance(
        self, assigned: Any, revoked: Any, newly_assigned: Any, generation_id: int = 0
    ) -> None:
        """faust opens the newly assigned partitions' databases; keel then reads what their
        changelogs hold past each database's offset straight into it (streams/worker/restore.py),
        in a thread, before faust's recovery reads what is left record by record.

        Standby partitions too: faust's standby recovery reads record by record, ~40 s for the
        standbys of 10,000 customers, and a worker is not warm (``/readyz``, copies.py) until
        they are current — the bench's lost disk waited the whole minute for it."""
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        topic = self.changelog_topic.get_topic_name()
        partitions = sorted(tp.partition for tp in newly_assigned if tp.topic == topic)
        if not partitions:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, restore.restore, self.data, topic, partitions,
                settings.kafka_bootstrap, settings.app_id,
            )  # fmt: skip
        except Exception:  # noqa: BLE001 - faust's recovery reads whatever is left
            log.exception("restoring %s at disk speed failed; faust's recovery reads it", topic)



class _OneBudget(RocksDBOptions):
    """RocksDB options that put every table partition in one memory budget.

    faust opens each partition's database with a block cache of its own; with 15 tables x 8
    partitions that memory grows with every partition the worker holds. Here all of them share
    one LRU block cache of ``budget`` bytes, and a write buffer manager charges their
    memtables to that cache (at most ``tuning.ROCKSDB_MEMTABLE_SHARE`` of it), so what the
    tables hold in RAM stays under one bound, KEEL_ROCKSDB_MEMORY_MB. Writers are not stalled
    at the bound (that would stop the event loop); RocksDB flushes memtables sooner instead.
    """

    def __init__(self, budget: int, **options: Any) -> None:
        super().__init__(**options)
        self.budget = budget
        self.cache = rocksdict.Cache(budget)
        self.memtables = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
            int(budget * tuning.ROCKSDB_MEMTABLE_SHARE), False, self.cache
        )

    def as_options(self) -> rocksdict.Options:
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        if self.max_open_files is not None:
            options.set_max_open_files(self.max_open_files)
        options.set_write_buffer_size(self.write_buffer_size)
        options.set_target_file_size_base(self.target_file_size_base)
        options.set_max_write_buffer_number(self.max_write_buffer_number)
        options.set_write_buffer_manager(self.memtables)
        blocks = rocksdict.BlockBasedOptions()
        blocks.set_bloom_filter(self.bloom_filter_size, block_based=True)
        blocks.set_block_cache(self.cache)
        blocks.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(blocks)
        return options


#: the one memory budget of every table partition
rocksdb_memory = _OneBudget(settings.rocksdb_memory_mb * 1024**2, **tuning.ROCKSDB)


def _revoke_without_gc(store: Any, table: Any, tps: Any) -> None:
    """faust's RocksDB store's ``revoke_partitions`` without its ``gc.collect()``: faust ran a
    full collection per table at every rebalance (15 here), seconds on a worker holding
    20,000 customers, all of it on the event loop and holding the GIL inside the assignment
    callback (no heartbeats: bench/failover.py's rebalances went on and on). A dropped
    database closes when its last reference goes; none is kept in a cycle."""
    for tp in tps:
        if tp.topic in table.changelog_topic.topics:
            store._dbs.pop(tp.partition, None)


async def _stop_without_gc(store: Any) -> None:
    """faust's RocksDB store's ``stop`` without its ``gc.collect()`` (one per table: a stopping
    worker holding 20,000 customers spent 11 s there, its partitions unowned meanwhile)."""
    store._dbs.clear()


def _table(name: str) -> Any:
    table = _KeelTable(app, name=name, key_type=str, options=tuning.ROCKSDB)
    table.data.rocksdb_options = rocksdb_memory  # type: ignore[attr-defined]  # a RocksDB Store; before any partition's database is opened
    table.data.revoke_partitions = functools.partial(_revoke_without_gc, table.data)  # type: ignore[attr-defined]  # a RocksDB Store
    table.data.stop = functools.partial(_stop_without_gc, table.data)  # type: ignore[method-assign]
    return app.tables.add(table)


customers = _table("customers")
owners = {ns: _table(f"{ns}-owners") for ns in NAMESPACES}
held = {ns: _table(f"{ns}-held") for ns in NAMESPACES}
#: identifier -> identity record (streams/domain/links.py), in the identifier's own partition
identities = {ns: _table(f"{ns}-identities") for ns in IDENTIFIERS}
#: customer -> when its time-based signals next change (SHIPMENT_LATE, COMPLAINT_UNRESOLVED)
due = _table("signal-due")
#: suppression records of erased customers and their references (hashed keys)
erased = _table("erased")
#: contact id -> its Voice of the Customer fact (streams/domain/voice.py), all on VOICE_KEY's
# partition
voice_facts = _table("voice-facts")
#: unmatched contacts (streams/domain/unmatched.py), all on UNMATCHED_KEY's partition
unmatched = _table("unmatched")
#: case id -> the customer an agent assigned it to: its events join there at the strongest rank
assigned = _table("contact-assigned")

TABLES = [
    customers, due, *owners.values(), *held.values(), *identities.values(), erased, voice_facts,
    unmatched, assigned,
]
# streams/kafka/admin.py creates their changelog topics (with small segments) before faust starts
if sorted(table.name for table in TABLES) != sorted(admin.TABLES):
    raise RuntimeError(
        "streams/kafka/admin.py TABLES must name every table of streams/worker/tables.py"
    )
CHANGELOG_TOPIC = {table: table.changelog_topic.get_topic_name() for table in TABLES}

_WRITE_OPTIONS = WriteOptions()
# Each batch's offset marker is in the same write batch as its data. Whether the WAL is
# skipped, and why not today: tuning.ROCKSDB_DISABLE_WAL.
_WRITE_OPTIONS.disable_wal = tuning.ROCKSDB_DISABLE_WAL  # type: ignore[method-assign,assignment]  # a property (stub says method)


@functools.lru_cache(maxsize=tuning.PARTITION_CACHE)
def partition_of(key: str) -> int:
    """The partition of ``key`` in every keel table and topic: murmur2 of its UTF-8 bytes, like
    Kafka's default partitioner (faust's producer, the Java clients, confluent-kafka's
    murmur2_random). Remembered for the most recent keys: aiokafka's murmur2 is pure Python."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % settings.partitions


def read(table: Any, partition: int, key: str) -> tuple[Any, int]:
    """The stored value of ``key`` in ``table``'s ``partition`` (None: not stored), and its
    stored size in bytes."""
    raw = table.data._db_for_partition(partition).get(key.encode())
    return (None, 0) if raw is None else (orjson.loads(raw), len(raw))


def write(table: Any, partition: int, rows: list[tuple[bytes, bytes | None]], offset: int) -> None:
    """Write ``rows`` (raw key, raw value or None to delete) into one partition's database,
    atomically with the changelog ``offset`` they were confirmed at (faust's recovery of a
    kept data dir resumes after it)."""
    store = table.data
    batch = WriteBatch(raw_mode=True)
    for key, value in rows:
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    batch.put(store.offset_key, str(offset).encode())
    store._db_for_partition(partition).write(batch, _WRITE_OPTIONS)


def views_ready() -> bool:
    """Tables recovered, not rebalancing, not stopping (the same test as /readyz)."""
    recovery = app.tables.recovery  # type: ignore[attr-defined]  # TableManager, not its ABC
    return bool(recovery.completed.is_set() and not app.rebalancing and not app.should_stop)
