-- The departments' outbox tables Debezium reads (connectors/sources/debezium_outbox.py
-- schema_sql; docs/connectors/debezium.md). Run once by the postgres image at its first start.

CREATE SCHEMA IF NOT EXISTS webshop;
CREATE TABLE IF NOT EXISTS webshop.keel_outbox (
    id         bigserial PRIMARY KEY,
    event_id   text NOT NULL,
    topic      text NOT NULL,
    key        text NOT NULL,
    payload    bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE SCHEMA IF NOT EXISTS shipping;
CREATE TABLE IF NOT EXISTS shipping.keel_outbox (
    id         bigserial PRIMARY KEY,
    event_id   text NOT NULL,
    topic      text NOT NULL,
    key        text NOT NULL,
    payload    bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
