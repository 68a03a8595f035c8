"""Customer directory sink: customer-state.v1 into a PostgreSQL table a desk searches.

The desk finds customers the way callers name them — part of a name without its accents,
part of an e-mail, a phone number in local or international format, an order id in any
case — through ``GET /directory?q=`` (streams/api/directory.py), which asks this table. One
row per customer (streams/domain/directory.py says how each key is folded):

    keel_customer_directory(customer_id PK, name, emails[], phones[] (E.164), order_ids[],
                            search_text (every key, folded; a pg_trgm GIN index), updated_at,
                            version)

- every record of the compacted ``customer-state.v1`` upserts its customer's row, unless
  the row already holds a newer version (a replay or a reordering never goes back);
- a tombstone (null value: the customer was erased, docs/erasure.md) deletes the row, so
  an erased customer cannot be found by name any more.

A batch is one transaction, and the consumer's offsets are committed only after PostgreSQL
committed it; PostgreSQL down: the same batch is retried with backoff (never skipped). A
record that cannot be decoded is logged, counted and leaves the table as it was. The table
and the ``pg_trgm`` extension are created if missing (creating the extension needs a role
allowed to; otherwise have a DBA run ``CREATE EXTENSION pg_trgm`` once).

    $ KEEL_DIRECTORY_URL=postgresql://keel@127.0.0.1/keel python -m connectors.sinks.directory
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

import psycopg
from confluent_kafka import Consumer

from connectors import metrics
from connectors.base import (
    ConnectorError,
    Sink,
    SinkRecord,
    StatusServer,
    Stopper,
    Unavailable,
    drain,
    load_settings,
    redact,
)
from streams.domain.directory import Entry, entry
from streams.encoding.codec import CodecError, get_codec
from streams.encoding.jsonconv import to_json
from streams.kafka.config import client_config

log = logging.getLogger("connectors.sinks.directory")

__all__ = ["DirectorySink", "SCHEMA", "main"]

CONNECTOR = "directory_sink"
TABLE = "keel_customer_directory"

SCHEMA = f"""
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE TABLE IF NOT EXISTS {TABLE} (
    customer_id text PRIMARY KEY,
    name text NOT NULL,
    emails text[] NOT NULL,
    phones text[] NOT NULL,
    order_ids text[] NOT NULL,
    search_text text NOT NULL,
    updated_at text,
    version bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS {TABLE}_search ON {TABLE} USING gin (search_text gin_trgm_ops);
CREATE INDEX IF NOT EXISTS {TABLE}_phones ON {TABLE} USING gin (phones);
"""

_UPSERT = f"""
INSERT INTO {TABLE} (customer_id, name, emails, phones, order_ids, search_text, updated_at,
                     version)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (customer_id) DO UPDATE SET
    name = EXCLUDED.name, emails = EXCLUDED.emails, phones = EXCLUDED.phones,
    order_ids = EXCLUDED.order_ids, search_text = EXCLUDED.search_text,
    updated_at = EXCLUDED.updated_at, version = EXCLUDED.version
WHERE {TABLE}.version <= EXCLUDED.version
"""


class DirectorySink(Sink):
    """Writes batches of customer states into the directory table, one transaction each."""

    def __init__(self, url: str, region: str, topic: str = "customer-state.v1") -> None:
        self.url = url
        self.region = region
        self.topic = topic
        self.codec = get_codec()
        self.conn: psycopg.Connection[Any] | None = None
        self.last_write_ok: bool | None = None

    def status(self) -> dict[str, Any]:
        return {"postgres": {None: "unknown", True: "up", False: "down"}[self.last_write_ok]}

    def _connection(self) -> psycopg.Connection[Any]:
        if self.conn is None or self.conn.closed:
            self.conn = psycopg.connect(self.url, connect_timeout=5, autocommit=False)
            with self.conn.transaction():
                self.conn.execute(SCHEMA)
        return self.conn

    def write(self, batch: Sequence[SinkRecord]) -> None:
        latest = self._latest(batch)
        if not latest:
            return
        try:
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cur:
                gone = [cid for cid, row in latest.items() if row is None]
                if gone:
                    cur.execute(f"DELETE FROM {TABLE} WHERE customer_id = ANY(%s)", (gone,))
                rows = [row for row in latest.values() if row is not None]
                if rows:
                    cur.executemany(_UPSERT, [_params(row) for row in rows])
        except psycopg.OperationalError as exc:
            self.last_write_ok = False
            if self.conn is not None:
                self.conn.close()
            raise Unavailable(f"PostgreSQL: {exc}") from exc
        self.last_write_ok = True

    def _latest(self, batch: Sequence[SinkRecord]) -> dict[str, Entry | None]:
        """customer_id -> its row (None: delete), the last record of each key winning."""
        raw: dict[str, bytes | None] = {}
        for record in batch:
            metrics.ACCEPTED.labels(CONNECTOR, self.topic).inc()
            if record.key is None:
                metrics.REJECTED.labels(CONNECTOR, "undecodable").inc()
                log.warning("record at offset %d has no key; skipped", record.offset)
                continue
            raw[record.key.decode("utf-8", "replace")] = record.value
        out: dict[str, Entry | None] = {}
        for customer_id, value in raw.items():
            if value is None:
                out[customer_id] = None
                continue
            try:
                state = to_json("CustomerState", self.codec.decode(value, "CustomerState"))
            except CodecError as exc:
                metrics.REJECTED.labels(CONNECTOR, "undecodable").inc()
                log.warning("state of %s not decodable; directory left as it was: %s",
                            customer_id, exc)  # fmt: skip
                continue
            out[customer_id] = entry(state, self.region)
        return out


def _params(row: Entry) -> tuple[Any, ...]:
    return (row.customer_id, row.name, list(row.emails), list(row.phones), list(row.order_ids),
            row.search_text, row.updated_at, row.version)  # fmt: skip


def consumer_config(bootstrap: str, group: str) -> dict[str, Any]:
    """Manual commits only (after PostgreSQL committed a batch); a new group starts at the
    beginning, so a new directory is filled from the whole compacted topic."""
    return {
        **client_config(bootstrap),
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10_000,
        "max.poll.interval.ms": 300_000,
        "logger": logging.getLogger("librdkafka"),
    }


def main(argv: list[str] | None = None) -> int:
    settings = load_settings("directory-sink")
    keel = settings.keel
    if not keel.directory_url:
        log.error("KEEL_DIRECTORY_URL is not set: which PostgreSQL holds the directory?")
        return 2
    stopper = Stopper().install()
    sink = DirectorySink(keel.directory_url, keel.phone_region, keel.topics.state)
    try:
        status = StatusServer(
            settings.bind, settings.directory_sink_port, sink.status, settings.auth,
            tls=keel.server_ssl_context(),
        ).start()  # fmt: skip
    except ConnectorError as exc:
        log.error("%s", exc)
        return 1
    consumer = Consumer(consumer_config(keel.kafka_bootstrap, settings.directory_sink_group))
    log.info("directory sink: %s -> %s (group %s); /metrics on %s:%d", keel.topics.state,
             redact(keel.directory_url), settings.directory_sink_group, settings.bind,
             status.port)  # fmt: skip
    try:
        drain(consumer, keel.topics.state, sink, stopper, connector=CONNECTOR, limit=500)
    finally:
        consumer.close()
        status.stop()
        if sink.conn is not None:
            sink.conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
