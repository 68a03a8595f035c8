"""A batch of the worker's work as one transaction, and the order in which it is made durable.

The worker reads keel's internal topics (streams/worker/intake.py packs the departments' events
onto them) in batches. A batch's handlers read and write tables and produce records only
through a :class:`Transaction`; nothing of it is visible or durable until :func:`commit` has run
its steps in this order:

1. Close the batch's packs of internal messages (forwards, lookups, binds) and produce
   them, with one record per changed customer on customer-state.v1. Signals and dead
   letters were produced while the batch was handled.
2. Wait until Kafka confirmed every one of those records.
3. Produce the changelog record of every table key the batch changed (its last value,
   once), and wait until Kafka confirmed them.
4. Write each table partition's changes into its RocksDB database in one write batch,
   together with the changelog offset they were confirmed at; the read cache
   (streams/worker/read_cache.py) takes the values written, so it holds only what is stored.
5. (the caller) Acknowledge the batch's input records, so faust may commit their offsets.

Why this order: everything an event causes (step 1) is in Kafka before the state that
implies it exists anywhere (steps 3-4). A crash before step 3 leaves no trace of the batch
in any table: the replay computes the same outputs again (duplicates the idempotent merge
absorbs). A crash after step 3 leaves changelog records a restart recovers into RocksDB,
and their outputs are already confirmed. A crash before step 5 replays input that is
already applied: the merge finds nothing new, and nothing it caused is missing. Queries
read RocksDB, so they see a state only once everything it caused is confirmed.

Batches run one at a time (one agent, ``concurrency=1``, reads every internal topic), so
no batch reads another's unconfirmed writes. When the group rebalances, faust waits
for the batch in flight to be acknowledged before it reassigns the partitions and restores
their tables (``stream_wait_empty``): the batch finishes first. One that outlived the
assignment it was read under (``current()`` is False) is not stored, since its write into a
table being restored could put an older value back.

    batch = Transaction(emitter.outbox())
    batch.at(partition)          # the partition of the records handled next
    batch.set(customers, "c-1", state)
    if await commit(batch, emitter, current=lambda: generation == app.consumer_generation_id):
        ...                      # 5. acknowledge the batch's input
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from streams import tuning
from streams.app import settings
from streams.domain.state import view
from streams.encoding.codec import get_codec
from streams.ops import metrics
from streams.worker import tables
from streams.worker.emit import Emitter, Outbox
from streams.worker.messages import Message
from streams.worker.read_cache import MISS, ReadCache

log = logging.getLogger(__name__)

_GONE = object()
STATE_TOPIC = settings.topics.state
codec = get_codec()
#: what the batches read or stored, decoded (streams/worker/read_cache.py)
read_cache = ReadCache(settings.read_cache_mb * 1024**2)


class Turns:
    """When a long synchronous stretch should give the event loop a turn: every
    ``tuning.SLICE_S`` of work, so queries and timers never wait for a whole batch.

        turn = Turns()
        for item in items:
            work(item)
            if turn.due():
                await turn.take()
    """

    __slots__ = ("_until",)

    def __init__(self) -> None:
        self._until = time.perf_counter() + tuning.SLICE_S

    def due(self) -> bool:
        return time.perf_counter() >= self._until

    async def take(self) -> None:
        await asyncio.sleep(0)
        self._until = time.perf_counter() + tuning.SLICE_S


class Packer:
    """Messages to the worker's internal topics (forwards, lookups, binds), packed.

    A message still goes to the partition its key hashes to, which is what keeps it
    co-partitioned with the table it reads, but all of a batch's messages for one
    partition travel as one record: ``[[key, message], ...]`` as JSON. faust spends about
    as much per record it consumes as keel spends merging an event; packed, that cost is
    per batch. A pack is closed at ``tuning.PACK_BYTES`` so a record stays well under
    Kafka's size limit.
    """

    __slots__ = ("_produce", "_packs", "_sizes")

    def __init__(self, produce: Any) -> None:
        #: ``produce(topic, key, value, headers, partition)``
        self._produce = produce
        self._packs: dict[tuple[str, int], list[bytes]] = {}
        self._sizes: dict[tuple[str, int], int] = {}

    def send(self, topic: str, key: str, message: Message) -> None:
        """Add one message (streams/worker/messages.py) for the partition ``key`` hashes to."""
        self.send_packed(topic, key, orjson.dumps([key, message]))

    def send_packed(self, topic: str, key: str, item: bytes) -> None:
        """Add one message already encoded as ``[key, message]``.

        A message of ``PACK_BYTES`` or more travels alone, at once: if Kafka refuses it (too
        big), the error is this message's, raised here, and no other message goes with it.
        """
        where = (topic, tables.partition_of(key))
        if len(item) >= tuning.PACK_BYTES:
            self._produce(topic, None, b"[" + item + b"]", None, where[1])
            return
        pack = self._packs.setdefault(where, [])
        pack.append(item)
        size = self._sizes.get(where, 0) + len(item) + 1
        if size >= tuning.PACK_BYTES:
            self._close(where)
        else:
            self._sizes[where] = size

    def _close(self, where: tuple[str, int]) -> None:
        pack = self._packs.pop(where)
        self._sizes.pop(where, None)
        self._produce(where[0], None, b"[" + b",".join(pack) + b"]", None, where[1])

    def flush(self) -> None:
        for where in list(self._packs):
            self._close(where)


class Transaction:
    """One batch's table reads and writes, and the outputs they cause (see the module doc).

    Reads see the batch's own writes (read-your-writes) and otherwise what is stored. Each
    key changed by the batch is written once at commit, however often the batch changed it,
    and each changed customer's state is published once.
    """

    __slots__ = ("out", "internal", "partition", "applied", "_writes", "_tables", "_published")

    def __init__(self, out: Outbox) -> None:
        self.out = out
        self.internal = Packer(out.produce)
        self.partition = 0
        #: (source, occurred_at, Kafka append time or None) of every event the batch applied,
        #: for the freshness and apply-lag metrics
        self.applied: list[tuple[str, int, int | None]] = []
        #: (id of the table, partition) -> key -> value: faust's tables hash in Python, ids in C
        self._writes: dict[tuple[int, int], dict[str, Any]] = {}
        self._tables: dict[int, Any] = {}
        self._published: dict[str, dict | None] = {}

    def at(self, partition: int) -> None:
        """Handle the next records as records of ``partition`` (the tables' partition too)."""
        self.partition = partition

    def get(self, table: Any, key: str) -> Any:
        writes = self._writes.get((id(table), self.partition))
        if writes is not None and key in writes:
            value = writes[key]
            return None if value is _GONE else value
        value = read_cache.get(table, key)
        if value is MISS:
            value, size = tables.read(table, self.partition, key)
            read_cache.put(table, key, value, size)
        return value

    def set(self, table: Any, key: str, value: Any) -> None:
        self._writing(table)[key] = value

    def delete(self, table: Any, key: str) -> None:
        self._writing(table)[key] = _GONE

    def _writing(self, table: Any) -> dict[str, Any]:
        where = (id(table), self.partition)
        writes = self._writes.get(where)
        if writes is None:
            writes = self._writes[where] = {}
            self._tables[id(table)] = table
        return writes

    def contains(self, table: Any, key: str) -> bool:
        return self.get(table, key) is not None

    def written(self, table: Any) -> list[tuple[str, Any]]:
        """``(key, value or None if deleted)`` of every key of ``table`` this batch wrote."""
        return [
            (key, None if value is _GONE else value)
            for (t, _), writes in self._writes.items() if t == id(table)
            for key, value in writes.items()
        ]  # fmt: skip

    def publish_state(self, customer_id: str, state: dict | None) -> None:
        """Publish ``state`` (stored layout; None: a tombstone, the customer was erased) at
        commit; the last one per customer wins."""
        self._published[customer_id] = state

    @property
    def published(self) -> Sequence[str]:
        """The customers whose state this batch changed."""
        return list(self._published)

    def changes(self) -> list[tuple[Any, int, list[tuple[bytes, bytes | None]]]]:
        """(table, partition, [(raw key, raw value or None)]) of every changed key."""
        out = []
        for (table, partition), writes in self._writes.items():
            rows = [
                (key.encode(), None if value is _GONE else orjson.dumps(value))
                for key, value in writes.items()
            ]
            out.append((self._tables[table], partition, rows))
        return out

    def remember(self, table: Any, partition: int, rows: list[tuple[bytes, bytes | None]]) -> None:
        """``rows`` of ``table`` are stored: the read cache takes the values written."""
        writes = self._writes[(id(table), partition)]
        for key, raw in rows:
            value = writes[key.decode()]
            read_cache.put(table, key.decode(), None if value is _GONE else value,
                           0 if raw is None else len(raw))  # fmt: skip


async def commit(batch: Transaction, emitter: Emitter, current: Callable[[], bool]) -> bool:
    """Make ``batch`` durable in the order of the module docstring (steps 1-4).

    Returns False when ``current()`` said, before step 3 or step 4, that the partitions the
    batch was read from may have moved (a rebalance): then the batch is not stored and its
    input must not be acknowledged. Raises :class:`streams.worker.emit.EmitError` when Kafka refused
    a record, with the same consequence.
    """
    # 1. internal messages and customer states (signals, dead letters: already produced)
    turn = Turns()
    batch.internal.flush()
    for customer_id, state in batch._published.items():
        value = None if state is None else codec.encode("CustomerState", view(state), check=False)
        batch.out.produce(STATE_TOPIC, customer_id.encode(), value)
        if turn.due():
            await turn.take()
    metrics.STATE_PUBLISHED.inc(len(batch._published))
    # 2. all of them confirmed
    await batch.out.confirmed()
    turn = Turns()
    changes = batch.changes()
    if not changes:
        return current()
    if not current():
        return False
    # 3. the changelog records of every changed key, confirmed
    log_out = emitter.outbox()
    for table, partition, rows in changes:
        topic = tables.CHANGELOG_TOPIC[table]
        for key, value in rows:
            log_out.produce(topic, key, value, None, partition)
            if turn.due():
                await turn.take()
    await log_out.confirmed()
    if not current():
        return False
    # 4. into RocksDB, each partition's rows with the offset they were confirmed at (no await
    #    from the check above to the last write: nothing else runs in between)
    for table, partition, rows in changes:
        offset = log_out.offsets[(tables.CHANGELOG_TOPIC[table], partition)]
        tables.write(table, partition, rows, offset)
        batch.remember(table, partition, rows)
    return True
