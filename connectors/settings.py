"""The connectors' configuration: keel's validated settings plus the connector variables.

Every variable is declared once, in ``streams.config.VARIABLES`` (so docs/configuration.md and the
unknown-variable check cover the connectors too); this module only reads and validates the
connector part. A connector process calls :meth:`ConnectorSettings.from_env` once at start and
fails with a :class:`~streams.config.ConfigError` naming the bad variable::

    >>> s = ConnectorSettings.from_env({"KEEL_INGEST_PORT": "9000"})
    >>> (s.ingest_port, s.outbox_batch, s.keel.topics.orders)
    (9000, 500, 'orders.v1')
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from streams.auth import AuthConfig
from streams.config import VARIABLES, ConfigError, Settings, Topics

__all__ = ["ConfigError", "ConnectorSettings", "INPUT_KINDS", "InputKind"]


@dataclass(frozen=True)
class InputKind:
    """One department input: its URL path segment, record name, topic and key field."""

    path: str  # "orders" in POST /events/orders
    record: str  # Avro record name, e.g. "OrderEvent"
    topic: str  # configured topic name, e.g. "orders.v1"
    key_field: str  # the event field the topic is keyed by (docs/contract.md §1)


INPUT_KINDS: tuple[tuple[str, str, str], ...] = (
    ("orders", "OrderEvent", "customer_id"),
    ("shipments", "ShipmentEvent", "order_id"),
    ("contacts", "ContactEvent", "contact_id"),
)
"""(path, record, key field) of each input topic, in docs/contract.md §1 order."""


def _int(name: str, raw: str, minimum: int, maximum: int | None = None) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum or (maximum is not None and value > maximum):
        upper = f"..{maximum}" if maximum is not None else " or more"
        raise ConfigError(f"{name}={value} must be {minimum}{upper}")
    return value


def _choice(name: str, raw: str, allowed: tuple[str, ...]) -> str:
    if raw not in allowed:
        options = ", ".join(repr(a) for a in allowed)
        raise ConfigError(f"{name}={raw!r} must be one of {options}")
    return raw


@dataclass(frozen=True)
class ConnectorSettings:
    """What the connectors read from the environment (see docs/configuration.md)."""

    keel: Settings
    auth: AuthConfig
    postgres_url: str
    bind: str
    ingest_port: int
    ingest_max_bytes: int
    outbox_port: int
    outbox_batch: int
    outbox_poll_seconds: float
    #: KEEL_CDC: "" (keel's outbox poller) or "debezium" (departments' outboxes read by
    #: Debezium; the demo feed and shop write there)
    cdc: str
    redis_sink_port: int
    redis_sink_group: str
    redis_sink_batch: int
    inbox_postgres_url: str
    inbox_port: int
    inbox_group: str
    webhook_url: str
    webhook_secret: str
    webhook_port: int
    webhook_group: str
    directory_sink_port: int
    directory_sink_group: str
    webhook_timeout_seconds: float

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ConnectorSettings:
        """Validate the whole environment (unknown ``KEEL_*`` variables too) and read it."""
        env = os.environ if env is None else env
        keel = Settings.from_env(env)
        defaults = {name: default for name, default, _ in VARIABLES}

        def get(name: str) -> str:
            return env.get(name, "") or defaults[name]

        return cls(
            keel=keel,
            auth=AuthConfig.from_env(env),
            postgres_url=get("POSTGRES_URL"),
            bind=get("KEEL_CONNECTOR_BIND"),
            ingest_port=_int("KEEL_INGEST_PORT", get("KEEL_INGEST_PORT"), 1, 65535),
            ingest_max_bytes=_int("KEEL_INGEST_MAX_BYTES", get("KEEL_INGEST_MAX_BYTES"), 1024),
            outbox_port=_int("KEEL_OUTBOX_PORT", get("KEEL_OUTBOX_PORT"), 1, 65535),
            outbox_batch=_int("KEEL_OUTBOX_BATCH", get("KEEL_OUTBOX_BATCH"), 1, 100_000),
            outbox_poll_seconds=_int("KEEL_OUTBOX_POLL_MS", get("KEEL_OUTBOX_POLL_MS"), 1) / 1000,
            cdc=_choice("KEEL_CDC", get("KEEL_CDC").strip().lower(), ("", "debezium")),
            redis_sink_port=_int("KEEL_REDIS_SINK_PORT", get("KEEL_REDIS_SINK_PORT"), 1, 65535),
            redis_sink_group=get("KEEL_REDIS_SINK_GROUP"),
            redis_sink_batch=_int(
                "KEEL_REDIS_SINK_BATCH", get("KEEL_REDIS_SINK_BATCH"), 1, 100_000
            ),
            inbox_postgres_url=env.get("KEEL_INBOX_POSTGRES_URL", "") or get("POSTGRES_URL"),
            inbox_port=_int("KEEL_INBOX_PORT", get("KEEL_INBOX_PORT"), 1, 65535),
            inbox_group=get("KEEL_INBOX_GROUP"),
            webhook_url=get("KEEL_WEBHOOK_URL"),
            webhook_secret=get("KEEL_WEBHOOK_SECRET"),
            webhook_port=_int("KEEL_WEBHOOK_PORT", get("KEEL_WEBHOOK_PORT"), 1, 65535),
            webhook_group=get("KEEL_WEBHOOK_GROUP"),
            directory_sink_port=_int(
                "KEEL_DIRECTORY_SINK_PORT", get("KEEL_DIRECTORY_SINK_PORT"), 1, 65535
            ),
            directory_sink_group=get("KEEL_DIRECTORY_SINK_GROUP"),
            webhook_timeout_seconds=_int(
                "KEEL_WEBHOOK_TIMEOUT_MS", get("KEEL_WEBHOOK_TIMEOUT_MS"), 1
            )
            / 1000,
        )

    def inputs(self) -> list[InputKind]:
        """The three department inputs with their configured topic names."""
        topics: Topics = self.keel.topics
        names = {
            "orders": topics.orders,
            "shipments": topics.shipments,
            "contacts": topics.contacts,
        }
        return [InputKind(path, record, names[path], key) for path, record, key in INPUT_KINDS]
