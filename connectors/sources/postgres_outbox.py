"""PostgreSQL outbox: rows a department inserts in its own transaction become Kafka records.

A department writes, in the same transaction as its business change::

    INSERT INTO keel_outbox(topic, key, payload) VALUES ('orders.v1', 'c-1', '{...event...}');

and this connector publishes the rows in ``id`` order, deleting them only after Kafka
acknowledged them. A crash between the two re-sends the batch (duplicates are harmless: keel
applies each ``event_id`` once); nothing is lost and no key is reordered.

A row that cannot become a valid record (payload fails the Avro schema, unknown topic, key
differing from the payload's key field) is moved to ``keel_outbox_rejected`` with the reason,
in the same transaction that deletes the batch, and never holds up the rows behind it.

**One leader.** Instances take the session-level advisory lock ``LEADER_LOCK``; only its holder
publishes, the others wait as standbys and take over within ``KEEL_OUTBOX_POLL_MS`` of the
leader's session ending (crash, SIGKILL, network loss). ``FOR UPDATE SKIP LOCKED`` would let
several instances publish at once, but then two rows of one key can be published by two
instances in either order; a single leader keeps ``id`` order per key, which is the contract.

PostgreSQL or Kafka down: reconnect with backoff and retry the same rows; the tables are created
if missing. Run it as ``python -m connectors.sources.postgres_outbox``; ``/healthz`` and
``/metrics`` on ``KEEL_OUTBOX_PORT``.
"""

from __future__ import annotations

import logging
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import psycopg

from connectors import metrics
from connectors.contract import Batch, OutRecord, Source, Unavailable
from connectors.errors import ConnectorError
from connectors.runner import SourcePlan, redact, run_source
from connectors.settings import ConnectorSettings, InputKind
from streams.encoding.codec import CodecError, get_codec
from streams.encoding.jsonconv import JsonFieldError, from_json

log = logging.getLogger("connectors.sources.postgres_outbox")  # not __main__ under python -m

__all__ = ["LEADER_LOCK", "SCHEMA_SQL", "OutboxSource", "main"]

CONNECTOR = "postgres_outbox"
LEADER_LOCK = int.from_bytes(b"keel-out", "big")
"""pg advisory lock key held by the publishing instance (fits a signed bigint)."""
_SCHEMA_LOCK = LEADER_LOCK + 1
MAX_RECORD_BYTES = 1_000_000 - 16_384  # Kafka's default message.max.bytes less key room

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS keel_outbox (
    id         bigserial PRIMARY KEY,
    topic      text,
    key        text,
    payload    jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS keel_outbox_rejected (
    id          bigint PRIMARY KEY,
    topic       text,
    key         text,
    payload     jsonb,
    created_at  timestamptz,
    rejected_at timestamptz NOT NULL DEFAULT now(),
    reason      text NOT NULL
);
"""
"""Both tables; columns are nullable so a bad row never fails the department's transaction."""

_SELECT = "SELECT id, topic, key, payload FROM keel_outbox ORDER BY id LIMIT %s"
_MOVE_REJECTED = """
INSERT INTO keel_outbox_rejected (id, topic, key, payload, created_at, reason)
SELECT o.id, o.topic, o.key, o.payload, o.created_at, r.reason
FROM keel_outbox o JOIN unnest(%s::bigint[], %s::text[]) AS r(id, reason) USING (id)
ON CONFLICT (id) DO NOTHING
"""
_DELETE = "DELETE FROM keel_outbox WHERE id = ANY(%s::bigint[])"


class Rejected(ConnectorError):
    """A row that cannot be published.

    ``reason`` (stored in keel_outbox_rejected) may quote payload values; the log gets only
    ``label`` (the metric's reason label) and ``where`` (a field path), never customer data.
    """

    def __init__(self, label: str, reason: str, where: str = "") -> None:
        super().__init__(reason)
        self.label = label
        self.reason = reason
        self.where = where


@dataclass(frozen=True, slots=True)
class _Done:
    """What ``ack`` does for a batch: delete ``ids``, moving ``rejected`` (id, reason) first."""

    ids: list[int]
    rejected: list[tuple[int, str]]


class OutboxSource(Source):
    """Reads keel_outbox as the leader; see the module docstring for the guarantees."""

    def __init__(self, settings: ConnectorSettings) -> None:
        self.url = settings.postgres_url
        self.kinds: dict[str, InputKind] = {kind.topic: kind for kind in settings.inputs()}
        self.codec = get_codec()
        self._conn: psycopg.Connection[Any] | None = None
        self.leader = False

    def status(self) -> dict[str, Any]:
        role = "leader" if self.leader else "standby" if self._conn else "disconnected"
        return {"role": role}

    def fetch(self, limit: int) -> Batch:
        try:
            conn = self._connection()
            if not self.leader:
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)).fetchone()
                if not (row and row[0]):
                    return Batch()  # another instance leads; ask again after the poll interval
                self.leader = True
                metrics.OUTBOX_LEADER.set(1)
                log.info("took the outbox leader lock: publishing keel_outbox")
            rows = conn.execute(_SELECT, (limit,)).fetchall()
        except psycopg.Error as exc:
            self._lost(exc)
            raise Unavailable(f"PostgreSQL: {exc}") from exc
        metrics.OUTBOX_BACKLOG.set(len(rows))
        if not rows:
            return Batch()
        records: list[OutRecord] = []
        rejected: list[tuple[int, str]] = []
        for row_id, topic, key, payload in rows:
            try:
                records.append(self.record(topic, key, payload))
                metrics.ACCEPTED.labels(CONNECTOR, topic).inc()
            except Rejected as exc:
                metrics.REJECTED.labels(CONNECTOR, exc.label).inc()
                where = f" at {exc.where}" if exc.where else ""
                log.warning(
                    "outbox row %d moved to keel_outbox_rejected: %s%s", row_id, exc.label, where
                )
                rejected.append((row_id, exc.reason))
        return Batch(records, _Done([r[0] for r in rows], rejected))

    def record(self, topic: Any, key: Any, payload: Any) -> OutRecord:
        """The Kafka record for one row, or :class:`Rejected` saying what is wrong with it."""
        kind = self.kinds.get(topic)
        if kind is None:
            known = ", ".join(sorted(self.kinds))
            raise Rejected("unknown_topic", f"unknown topic {topic!r}; expected one of {known}")
        try:
            event = from_json(kind.record, payload)
        except JsonFieldError as exc:
            where = f"payload.{exc.field}" if exc.field else "payload"
            raise Rejected("invalid", f"{where}: {exc.reason}", where) from None
        expected = str(event[kind.key_field])
        if key is not None and key != expected:
            raise Rejected(
                "key_mismatch",
                f"key {key!r} differs from payload.{kind.key_field} {expected!r}: "
                f"{kind.topic} is keyed by {kind.key_field}",
            )
        try:
            value = self.codec.encode(kind.record, event)
        except CodecError as exc:  # from_json validated it; a guard, so nothing blocks the rest
            raise Rejected("invalid", exc.reason) from None
        if len(value) > MAX_RECORD_BYTES:
            raise Rejected("too_large", f"event encodes to {len(value)} bytes, too large")
        return OutRecord(kind.topic, expected.encode(), value)

    def ack(self, batch: Batch) -> None:
        done: _Done = batch.token
        try:
            conn = self._connection()
            with conn.transaction():
                if done.rejected:
                    ids, reasons = zip(*done.rejected, strict=True)
                    conn.execute(_MOVE_REJECTED, (list(ids), list(reasons)))
                conn.execute(_DELETE, (done.ids,))
        except psycopg.Error as exc:
            self._lost(exc)
            raise Unavailable(f"PostgreSQL: {exc}") from exc

    def check(self) -> None:
        """Still connected (so still the leader)? A lost session means another may lead now."""
        try:
            if self._conn is None:
                raise Unavailable("not connected to PostgreSQL")
            self._conn.execute("SELECT 1")
        except psycopg.Error as exc:
            self._lost(exc)
            raise Unavailable(f"PostgreSQL: {exc}") from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()  # ends the session, so the lock goes to a standby at once
        self._conn = None
        self.leader = False
        metrics.OUTBOX_LEADER.set(0)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self.leader = False
        conn = psycopg.connect(
            self.url,
            autocommit=True,
            connect_timeout=5,
            application_name="keel-outbox",
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
            options="-c statement_timeout=60000",
        )
        with conn.transaction():  # two instances starting at once must not race on DDL
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            conn.execute(SCHEMA_SQL)
        log.info("connected to PostgreSQL")
        self._conn = conn
        return conn

    def _lost(self, exc: Exception) -> None:
        if self.leader:
            log.warning("lost the PostgreSQL session (and the leader lock): %s", exc)
        self.leader = False
        metrics.OUTBOX_LEADER.set(0)
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
        self._conn = None


def main(argv: list[str] | None = None) -> int:
    return run_source("postgres-outbox", log, plan)


def plan(settings: ConnectorSettings, closing: ExitStack) -> SourcePlan:
    """keel_outbox of ``POSTGRES_URL`` into Kafka, ``KEEL_OUTBOX_BATCH`` rows at a time."""
    source = OutboxSource(settings)
    closing.callback(source.close)
    kafka = settings.keel.kafka_bootstrap
    describe = f"outbox connector: {redact(settings.postgres_url)} -> Kafka {kafka}"
    return SourcePlan(
        CONNECTOR, source, source.status, settings.outbox_port, settings.outbox_batch,
        settings.outbox_poll_seconds, describe,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
