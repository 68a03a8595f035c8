"""PostgreSQL inbox: desk commands (commands.v1) as rows of ``keel_inbox`` in a department's DB.

The outbox pattern in reverse. The department reads the table in its own transaction, next to
its business change (cancel the order, write the note), and keeps track of what it handled::

    BEGIN;
    SELECT * FROM keel_inbox i WHERE NOT EXISTS
        (SELECT 1 FROM shop_handled h WHERE h.command_id = i.command_id)
        ORDER BY received_at FOR UPDATE SKIP LOCKED;
    -- UPDATE orders SET status = 'CANCELLED' WHERE id = ...;    -- the business change
    INSERT INTO shop_handled(command_id) VALUES (...);
    COMMIT;

Delivery is at-least-once: a batch is written with ``INSERT … ON CONFLICT (command_id) DO
NOTHING`` in one transaction and the consumer's offsets are committed only after that
transaction committed, so a crash in between writes the batch again and the primary key keeps
one row per command id. Keep the rows (delete them only long after ``commands.v1``'s retention,
7 days), or a redelivered command would be inserted again.

Once a batch's transaction committed, a DELIVERED ``CommandOutcome`` for each of its commands
goes to ``command-outcomes.v1`` (connectors/sinks/delivery.py), before the offsets are
committed, so the desk sees "written to the department's inbox table". A department that
refuses a command it read from the table keeps that in its own records: the inbox has no
way back for it (docs/commands.md).

PostgreSQL down: the same batch is written again after a backoff (never skipped); the table is
created if missing. A record that is not a DeskCommand is a dead letter (connectors/sinks/
delivery.py). Run it as ``python -m connectors.sinks.postgres_inbox``; ``/healthz`` and
``/metrics`` on ``KEEL_INBOX_PORT``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
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
from connectors.sinks.delivery import (
    DELIVERED_OUTCOME,
    DeadLetters,
    Outcomes,
    consumer_config,
    decode,
    outcome,
)
from streams.encoding.codec import CodecError

log = logging.getLogger("connectors.sinks.postgres_inbox")  # not __main__ under python -m

__all__ = ["COLUMNS", "SCHEMA_SQL", "InboxSink", "main"]

CONNECTOR = "postgres_inbox"
BATCH = 500
_SCHEMA_LOCK = int.from_bytes(b"keel-inb", "big")

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS keel_inbox (
    command_id   text PRIMARY KEY,
    type         text,
    customer_id  text,
    order_id     text,
    contact_id   text,
    agent        text,
    reason       text,
    note         text,
    requested_at timestamptz,
    received_at  timestamptz DEFAULT now()
);
"""
COLUMNS = (
    "command_id", "type", "customer_id", "order_id", "contact_id", "agent", "reason", "note",
    "requested_at",
)  # fmt: skip
_INSERT = (
    f"INSERT INTO keel_inbox ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * len(COLUMNS))}) ON CONFLICT (command_id) DO NOTHING"
)


class InboxSink(Sink):
    """Writes each batch of commands into keel_inbox in one transaction."""

    def __init__(
        self, url: str, dead_letters: DeadLetters, outcomes: Outcomes, topic: str = "commands.v1"
    ) -> None:
        self.url = url
        self.dead_letters = dead_letters
        self.outcomes = outcomes
        self.topic = topic
        self._conn: psycopg.Connection[Any] | None = None
        self.inserted = 0

    def status(self) -> dict[str, Any]:
        return {"postgres": "up" if self._conn is not None else "down", "inserted": self.inserted,
                "outcomes": self.outcomes.published}  # fmt: skip

    def write(self, batch: Sequence[SinkRecord]) -> None:
        rows: list[tuple[Any, ...]] = []
        answers: list[dict[str, Any]] = []
        for record in batch:
            try:
                command = decode(record)
            except CodecError as exc:
                self.dead_letters.send(record, exc.reason, "undecodable")
                continue
            answers.append(outcome(command, DELIVERED_OUTCOME, CONNECTOR))
            command["requested_at"] = datetime.fromtimestamp(command["requested_at"] / 1000, UTC)
            rows.append(tuple(command[c] for c in COLUMNS))
            metrics.ACCEPTED.labels(CONNECTOR, self.topic).inc()
        if not rows:
            return
        try:
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cursor:
                cursor.executemany(_INSERT, rows)
        except psycopg.Error as exc:  # down, restarting, or refusing: the same batch again
            self._lost()
            raise Unavailable(f"PostgreSQL: {exc}") from exc
        self.inserted += len(rows)
        # committed: now tell keel (Kafka down: the batch again, the rows already there)
        self.outcomes.publish(answers)

    def prepare(self) -> None:
        """Connect and create the table now, so the department can read it before any command;
        PostgreSQL down is not fatal: the first batch connects (and waits) then."""
        try:
            self._connection()
        except psycopg.Error as exc:
            log.warning("PostgreSQL not reachable yet (%s); retrying with the first batch", exc)
            self._lost()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = psycopg.connect(
            self.url,
            autocommit=True,
            connect_timeout=5,
            application_name="keel-inbox",
            options="-c statement_timeout=60000",
        )
        with conn.transaction():  # two instances starting at once must not race on DDL
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            conn.execute(SCHEMA_SQL)
        log.info("connected to PostgreSQL; writing keel_inbox")
        self._conn = conn
        return conn

    def _lost(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
        self._conn = None

    def close(self) -> None:
        self._lost()


def main(argv: list[str] | None = None) -> int:
    settings = load_settings("postgres-inbox")
    stopper = Stopper().install()
    topics = settings.keel.topics
    dead_letters = DeadLetters(
        settings.keel.kafka_bootstrap, topics.deadletter, topics.commands, CONNECTOR
    )
    outcomes = Outcomes(settings.keel.kafka_bootstrap, topics.command_outcomes)
    sink = InboxSink(settings.inbox_postgres_url, dead_letters, outcomes, topics.commands)
    try:
        status = StatusServer(
            settings.bind, settings.inbox_port, sink.status, settings.auth,
            tls=settings.keel.server_ssl_context(),
        ).start()
    except ConnectorError as exc:
        log.error("%s", exc)
        return 1
    sink.prepare()
    consumer = Consumer(consumer_config(settings.keel.kafka_bootstrap, settings.inbox_group))
    log.info(
        "PostgreSQL inbox: %s -> keel_inbox at %s (group %s); /metrics on %s:%d",
        topics.commands,
        redact(settings.inbox_postgres_url),
        settings.inbox_group,
        settings.bind,
        status.port,
    )
    try:
        drain(consumer, topics.commands, sink, stopper, connector=CONNECTOR, limit=BATCH)
    finally:
        consumer.close()
        sink.close()
        dead_letters.close()
        outcomes.close()
        status.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
