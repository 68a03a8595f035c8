"""The worker's speed settings, in one place: used by the app and recorded by ``make bench``.

Each was measured with ``python -m bench`` (see docs/benchmarks.md); the
configurable ones (batch size and wait) are in streams/config.py, these are fixed.
"""

from __future__ import annotations

from typing import Any

#: how long faust's consumer (aiokafka) waits for data before a fetch answers empty: faust
#: fixes 1,500 ms, and every recovery step waits for the fetch in flight. 10 ms cost +40 % CPU
#: live (empty fetches); 200 ms is 5 empty fetches a second when idle.
FAUST_FETCH_MAX_WAIT_MS = 200

#: how often a worker applies what its standby copies have buffered and notes how current each
#: copy is (streams/worker/copies.py): an answer from a copy while partitions move is at most
#: about this much older than it has to be
COPY_TICK_S = 0.5

#: /readyz waits at most this long (after the worker is ready) for its standby copies to be
#: known current once (streams/worker/copies.py ``warm``): bounded, so a standby that cannot
#: catch up never keeps a worker out of service
WARMUP_MAX_S = 60.0

#: faust's own producer now only carries what faust writes itself (offset commits go to the
#: group coordinator; the tables' changelogs go through the emitter): 5 ms batches those.
FAUST_PRODUCER_LINGER_MS = 5

#: confluent-kafka settings of the emitter (streams/worker/emit.py), on top of the contract's
#: murmur2 / idempotence / acks=all (streams.kafka.config.producer_config)
EMITTER: dict[str, Any] = {
    "linger.ms": 2,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 500_000,
    # a record Kafka has not taken within a minute fails its batch (the worker restarts
    # from the last committed offsets) instead of waiting forever
    "message.timeout.ms": 60_000,
}

#: the cyclic GC's thresholds once the worker has started (default 700/10/10 ran a
#: collection every few hundred events and took ~10 % of the CPU)
GC_THRESHOLDS = (100_000, 50, 50)

#: the signal clock: rechecks sent per tick at most, a recheck sent again if its customer's
#: due time has not moved after this many seconds, due-table rows read between loop turns
RECHECKS_PER_TICK = 10_000
RECHECK_RESEND_S = 60.0
DUE_SLICE = 2000
#: how often the held tables are looked through for events held past KEEL_HOLD_MAX_S
HELD_CHECK_INTERVAL_S = 10.0
#: how long the join agent produces a batch again while Kafka is unreachable (brokers down,
#: leaders moving) before it gives up and reports itself failed (streams/worker/agent.py)
KAFKA_OUTAGE_RETRY_S = 600.0

#: the longest the join runs without giving the event loop a turn (handling a batch, encoding
#: its states, producing its changelog records), so a query waits for at most about that
SLICE_S = 0.004

#: restore at disk speed (streams/worker/restore.py): changelog records read and written per
#: RocksDB write batch, and how long a restore waits for records before it leaves the rest of a
#: table's changelog to faust's recovery
RESTORE_BATCH = 20_000
RESTORE_STALL_S = 30.0

#: RocksDB options of every table partition (faust's defaults give each of the worker's
#: databases, 15 tables x 8 partitions, a 2 GB block cache and up to 3 x 64 MB memtables).
#: The block cache is one for all of them, of KEEL_ROCKSDB_MEMORY_MB, and their memtables
#: are charged to it (streams/worker/tables.py): each partition had a 16 MB cache and up to
#: 2 x 8 MB memtables of its own, ~3 GB per 100,000 customers in the bench.
ROCKSDB: dict[str, Any] = {
    "write_buffer_size": 8 * 1024**2,
    "max_write_buffer_number": 2,
}
#: the share of KEEL_ROCKSDB_MEMORY_MB the memtables of all partitions may take together
ROCKSDB_MEMTABLE_SHARE = 0.5

#: topic config of the tables' changelogs (streams/kafka/admin.py creates them). Kafka compacts only
#: closed segments, and its default segment is 1 GB or 7 days: a changelog then holds every
#: version of every state, and a restore from it (data dir lost) replays them all. Small,
#: hourly segments let the cleaner drop superseded versions while the worker runs.
CHANGELOG_TOPIC_CONFIG: dict[str, str] = {  # strings: faust passes them to Kafka as they are
    "segment.bytes": str(16 * 1024**2),
    "segment.ms": str(3_600_000),
    "min.cleanable.dirty.ratio": "0.3",
}

#: Whether keel's RocksDB writes skip the write-ahead log. Each batch's rows and changelog
#: offset are one write batch, so on their own a crash would lose both together and recovery
#: would replay them. But faust's recovery writes (rows and offsets) use the WAL, and after a
#: crash RocksDB keeps WAL writes that came after lost non-WAL ones: a recovery after a keel
#: write, then a SIGKILL, could leave an offset past rows that are gone. Not measured apart
#: (the losses seen while it was on had another cause, fixed in streams/worker/agent.py), so the
#: WAL stays on until a kill test shows it off is safe.
ROCKSDB_DISABLE_WAL = False

#: confluent-kafka settings of the intake's producer (streams/worker/intake.py)
INTAKE_PRODUCER: dict[str, Any] = {
    "linger.ms": 2,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 500_000,
    "message.timeout.ms": 60_000,
}
#: seconds an idle intake waits for a record before it looks whether it should stop
INTAKE_IDLE_POLL_S = 0.2
#: seconds between two refreshes of the intake's consumer lag (keel_consumer_lag_records)
INTAKE_LAG_INTERVAL_S = 1.0
#: seconds between two looks at how far the join is behind (streams/worker/backpressure.py)
INTAKE_AHEAD_CHECK_S = 0.5
#: seconds the intake waits for Kafka to confirm a batch before reading it again
INTAKE_CONFIRM_TIMEOUT_S = 70.0

#: a dead letter bigger than this (key + value) is cut to its first DEADLETTER_KEEP_BYTES:
#: librdkafka refuses records over message.max.bytes (1,000,000) even when the broker took them
DEADLETTER_MAX_BYTES = 900_000
DEADLETTER_KEEP_BYTES = 64 * 1024

#: internal records (packs of up to PACK_BYTES each) the join agent takes as one batch.
#: faust's stream buffer stays at its default (4,096 records): at 256 the survivor of a
#: SIGKILLed worker stalled in table recovery in 2 of 3 runs of test_scale_out.py (0 of 3 at
#: the default) -- a full buffer blocks the consumer that recovery reads changelogs through.
JOIN_BATCH_RECORDS = 64  # the cap before batches were shaped by bytes (kept for the record)

#: the join agent takes what arrived within KEEL_BATCH_WAIT_MS, up to this many internal
#: records, then handles it in batches of at most JOIN_BATCH_BYTES of packed messages. Live
#: traffic arrives as small records (1-3 messages each, not ~60 as in a backlog): a cap of 64
#: records made batches of a handful of events that each paid two confirmation waits, and a
#: queue grew at 1,000 events/s (p99 7.5 s; 1.8 s at a cap of 256, measured: ../shared/
#: measurements/latency-2026-12.md). A backlog's full 32 KiB packs still make batches of about
#: today's size (64 packs, ~4,000 messages).
JOIN_TAKE_RECORDS = 1024
JOIN_BATCH_BYTES = 64 * 32 * 1024

#: keys whose partition (murmur2, pure Python: ~3 µs a key) is remembered (streams/worker/tables.py)
PARTITION_CACHE = 1 << 17

#: internal messages for one partition are packed into records of at most this many bytes.
#: faust buffers up to 4,096 records (its stream buffer, above), so this bounds what waits in
#: memory: 200k events / 20k customers, 32 KiB vs 256 KiB packs: RSS 567 vs 718 MB, CPU 0.391
#: vs 0.385 ms per event (one run each, machine shared)
PACK_BYTES = 32 * 1024


def describe(batch_max: int, batch_wait_ms: int) -> dict[str, Any]:
    """The settings that decide the worker's speed, as recorded with benchmark results."""
    from streams.kafka.config import producer_config

    emitter = producer_config("-", **EMITTER)
    emitter.pop("bootstrap.servers")
    return {
        "batch_max": batch_max,
        "batch_wait_ms": batch_wait_ms,
        "batching": "intake: confluent-kafka consume() of up to batch_max input records, "
        "packed per destination partition; join agent: faust noack_take of up to "
        f"{JOIN_TAKE_RECORDS} packed records taken at once, handled in batches of at most "
        f"{JOIN_BATCH_BYTES} bytes, each acknowledged after its checkpoint",
        "outputs": "one confluent-kafka producer, confirmed per batch before acking it",
        "emitter": emitter,
        "faust_producer_linger_ms": FAUST_PRODUCER_LINGER_MS,
        "faust_fetch_max_wait_ms": FAUST_FETCH_MAX_WAIT_MS,
        "restore": f"changelogs read by confluent-kafka into RocksDB write batches of "
        f"{RESTORE_BATCH} records before faust's recovery",
        "internal_topics": f"packed per destination partition, records <= {PACK_BYTES} bytes",
        "slice_ms": SLICE_S * 1000,
        "table_writes": "once per key per batch: changelog record confirmed, then one RocksDB "
        "write batch per partition with the changelog offset",
        "state_publish": "once per customer per batch",
        "rocksdb_disable_wal": ROCKSDB_DISABLE_WAL,
        "rocksdb": ROCKSDB,
        "changelog_topic_config": CHANGELOG_TOPIC_CONFIG,
        "json": "orjson",
        "gc_thresholds": list(GC_THRESHOLDS),
        "event_loop": "asyncio",
        "processing_guarantee": "at_least_once, idempotent merges",
    }
