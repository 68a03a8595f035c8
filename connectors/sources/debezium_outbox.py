"""The outbox table Debezium reads: what a department writes, in its own transaction.

With ``KEEL_CDC=debezium`` no keel process polls PostgreSQL: Kafka Connect runs Debezium's
PostgreSQL connector, which reads each department's ``<department>.keel_outbox`` from the
write-ahead log, and its Outbox Event Router sends every inserted row to the row's topic
(``deploy/local/connect.py`` holds the connector's configuration; docs/connectors/debezium.md).
Debezium copies the payload bytes unchanged, so the row carries the event already encoded as
docs/contract.md §2 says (Avro single-object encoding), keyed as §1 says::

    with conn.transaction():
        conn.execute("UPDATE orders SET status = 'CANCELLED' WHERE id = %s", (order_id,))
        write(conn, "webshop", [outbox_row("orders.v1", event)])

A row keel cannot decode reaches the topic as it is and becomes a dead letter there, like any
undecodable record (contract §1): nothing here checks the bytes, the department owns them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import psycopg

from streams.encoding.codec import get_codec

__all__ = ["DEPARTMENT_OF_KIND", "KINDS", "OutboxRow", "outbox_row", "schema_sql", "write"]

TABLE = "keel_outbox"
#: kind -> (its default topic, the schema of its values, the field its records are keyed by),
#: as contract §1 has them
KINDS = {
    "order": ("orders.v1", "OrderEvent", "customer_id"),
    "shipment": ("shipments.v1", "ShipmentEvent", "order_id"),
    "contact": ("contacts.v1", "ContactEvent", "contact_id"),
}
#: the demo's departments that write through Debezium (deploy/local/connect.py DEPARTMENTS):
#: the web shop its orders, shipping its parcels
DEPARTMENT_OF_KIND = {"order": "webshop", "shipment": "shipping"}


class OutboxRow(NamedTuple):
    """One row of a department's outbox: one record of ``topic``."""

    event_id: str
    topic: str
    key: str
    payload: bytes


def schema_sql(department: str) -> str:
    """The department's schema and outbox table (idempotent).

    ``id`` orders nothing (Debezium follows commit order) but gives the table a primary key;
    ``event_id`` becomes the record's ``id`` header. Every column is required: a row with no
    payload would be a tombstone on an input topic.
    """
    return f"""
CREATE SCHEMA IF NOT EXISTS {_checked(department)};
CREATE TABLE IF NOT EXISTS {department}.{TABLE} (
    id         bigserial PRIMARY KEY,
    event_id   text NOT NULL,
    topic      text NOT NULL,
    key        text NOT NULL,
    payload    bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
"""


def outbox_row(kind: str, event: dict[str, Any], topic: str | None = None) -> OutboxRow:
    """The row for an ``event`` of ``kind`` (order, shipment, contact): encoded, keyed, for
    ``topic`` (default: the kind's topic of the contract)."""
    default_topic, schema, key_field = KINDS[kind]
    payload = get_codec().encode(schema, event)
    return OutboxRow(event["event_id"], topic or default_topic, str(event[key_field]), payload)


def write(conn: psycopg.Connection[Any], department: str, rows: Iterable[OutboxRow]) -> int:
    """Insert ``rows`` into the department's outbox in the caller's transaction; how many."""
    rows = list(rows)
    with conn.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {_checked(department)}.{TABLE} (event_id, topic, key, payload) "
            "VALUES (%s, %s, %s, %s)",
            rows,
        )
    return len(rows)


def _checked(department: str) -> str:
    """The department's name as its schema's: an SQL identifier, never quoted input."""
    if not department.isidentifier():
        raise ValueError(f"department {department!r}: letters, digits and _ only")
    return department
