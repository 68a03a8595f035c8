"""keel's configuration: one validated, frozen object read from the environment.

Every variable is listed in ``VARIABLES`` (name, default, meaning) so the docs, the
validation and the code cannot drift apart. An unknown ``KEEL_*`` variable is an error,
like confluent-kafka's ``Unrecognized properties``: a typo must not silently fall back
to a default.

    >>> s = Settings.from_env({"KEEL_PARTITIONS": "4"})
    >>> s.partitions
    4
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from streams.errors import KeelError
from streams.kafka.config import KafkaConfigError, KafkaSecurity


class ConfigError(KeelError, ValueError):
    """A configuration variable is unknown or has a value keel cannot use."""


# (environment variable, default, meaning) — docs/configuration.md's table is generated from this
# (python -m tests.configuration_page).
VARIABLES: tuple[tuple[str, str, str], ...] = (
    ("KAFKA_BOOTSTRAP", "127.0.0.1:9092", "Kafka bootstrap servers"),
    ("REDIS_URL", "redis://127.0.0.1:6379/0", "Redis for the Redis sink"),
    ("KEEL_APP_ID", "keel", "Faust app id = consumer group of the stream workers"),
    ("KEEL_PARTITIONS", "8", "partitions of every topic keel creates (inputs, internal, tables)"),
    ("KEEL_REPLICATION", "1", "replication factor of the topics keel creates"),
    (
        "KEEL_MIN_INSYNC_REPLICAS",
        "",
        "min.insync.replicas of those topics (default 2 if KEEL_REPLICATION >= 3, else 1)",
    ),
    ("KEEL_DATA_DIR", ".run/worker", "worker data dir (RocksDB tables); one per worker"),
    ("KEEL_API_BIND", "127.0.0.1", "address the query API binds to"),
    ("KEEL_API_PORT", "6066", "query API port"),
    ("KEEL_CANONICAL_URL", "", "URL other workers reach this one at (default http://BIND:PORT)"),
    ("KEEL_STANDBY_REPLICAS", "1", "standby table replicas kept by other workers"),
    (
        "KEEL_SESSION_TIMEOUT_MS",
        "3000",
        "consumer-group session timeout of the workers (heartbeats every third of it): a "
        "crashed worker's partitions move after this long; the brokers' "
        "group.min.session.timeout.ms (Kafka's default 6000) must allow it",
    ),
    (
        "KEEL_INSTANCE_ID",
        "",
        "this worker's static member id in its consumer groups (Kafka group.instance.id, with a "
        "hash of the canonical URL appended; default HOST-PORT; the same across its restarts): "
        "a restart within the session timeout gets its partitions back with no rebalance; "
        "none: dynamic membership",
    ),
    ("KEEL_KEEP_CLOSED", "50", "closed orders / resolved contacts kept per customer"),
    ("KEEL_MAX_NOTES", "20", "notes kept per contact"),
    (
        "KEEL_IDENTITY_SHARED_AFTER",
        "3",
        "an e-mail or phone seen with more customer ids than this is shared: it links no one",
    ),
    (
        "KEEL_IDENTITY_BLOCKLIST",
        "noreply@*,no-reply@*,+0000*",
        "comma-separated patterns (* and ?) of e-mails / phones that never link or join",
    ),
    (
        "KEEL_KEEP_RETIRED",
        "1000",
        "orders / shipments / contacts retention dropped, remembered per customer and kind "
        "so re-sends stay applied",
    ),
    (
        "KEEL_MAX_STATE_BYTES",
        "524288",
        "a customer's stored state bigger than this sheds its oldest parts (STATE_BOUNDED)",
    ),
    ("KEEL_MAX_RECORD_BYTES", "1048576", "larger input records are dead letters"),
    (
        "KEEL_INTAKE_AHEAD_RECORDS",
        "5000",
        "internal records the join may be behind before the intake stops reading the "
        "departments' topics (a backlog then waits there, where lag alerts see it); 0: no limit",
    ),
    (
        "KEEL_READ_CACHE_MB",
        "128",
        "table values the join keeps decoded after reading or storing them (estimated at 6x "
        "their stored JSON), so the next batch reads them without RocksDB; 0: off",
    ),
    (
        "KEEL_ROCKSDB_MEMORY_MB",
        "128",
        "memory of all the worker's table partitions together (one RocksDB block cache, "
        "memtables charged to it): the bound of what the tables hold in RAM",
    ),
    (
        "KEEL_HOLD_MAX_S",
        "604800",
        "a shipment/contact held this long (event time, and wall time) for its order/identity: "
        "dead letter",
    ),
    (
        "KEEL_DUPLICATE_ORDER_WINDOW_S",
        "1800",
        "same basket placed within this many seconds: DUPLICATE_ORDER",
    ),
    (
        "KEEL_REPEAT_CONTACT_WINDOW_S",
        "1209600",
        "second contact about an order/topic within this: REPEAT_CONTACT",
    ),
    (
        "KEEL_COMPLAINT_UNRESOLVED_S",
        "86400",
        "complaint open longer than this: COMPLAINT_UNRESOLVED",
    ),
    (
        "KEEL_SIGNAL_CHECK_INTERVAL_S",
        "5",
        "how often time-based signals (SHIPMENT_LATE, ...) are re-checked",
    ),
    ("KEEL_BATCH_MAX", "1000", "most records the intake or the join agent takes as one batch"),
    (
        "KEEL_BATCH_WAIT_MS",
        "5",
        "how long the join agent waits to fill a batch of internal records before handling "
        "what it has (the intake takes what has arrived)",
    ),
    (
        "KEEL_DESK_STALE_S",
        "300",
        "desk console: a department not heard from for longer is shown as stale (red)",
    ),
    (
        "KEEL_COMMAND_TIMEOUT_S",
        "600",
        "a desk command no department event shows done within this: COMMAND_FAILED",
    ),
    ("KEEL_AUTH", "on", "bearer-token checks on every HTTP surface; `off` only if you mean it"),
    (
        "KEEL_AUTH_TOKENS_FILE",
        "",
        "file of `sha256:<hex> role[,role] name` lines: hashed tokens accepted (docs/security.md)",
    ),
    ("KEEL_READ_TOKEN", "", "a token with the read role (query API, desk console)"),
    ("KEEL_WRITE_TOKEN", "", "a token with the write role (HTTP ingest)"),
    ("KEEL_AGENT_TOKEN", "", "a token with the agent role (desk commands; it also reads)"),
    ("KEEL_ADMIN_TOKEN", "", "a token with the admin role"),
    ("KEEL_METRICS_TOKEN", "", "a token with the metrics role (every /metrics)"),
    ("KEEL_METRICS_PUBLIC", "0", "1: /metrics answers without a token"),
    (
        "KEEL_TLS_CERT",
        "",
        "PEM certificate (chain) of this process' HTTP server: HTTPS on the worker API, the "
        "ingest and every status port (with KEEL_TLS_KEY)",
    ),
    ("KEEL_TLS_KEY", "", "PEM private key of KEEL_TLS_CERT"),
    (
        "KEEL_TLS_CA",
        "",
        "PEM CA a worker trusts when it forwards to another worker over HTTPS (default: system)",
    ),
    ("KEEL_LOG_LEVEL", "info", "worker log level"),
    (
        "KEEL_LOG_FORMAT",
        "text",
        "worker log lines: text, or json (one JSON object per line, for log shippers)",
    ),
    ("KEEL_TOPIC_ORDERS", "orders.v1", "order events topic"),
    ("KEEL_TOPIC_SHIPMENTS", "shipments.v1", "shipment events topic"),
    ("KEEL_TOPIC_CONTACTS", "contacts.v1", "contact events topic"),
    ("KEEL_TOPIC_STATE", "customer-state.v1", "compacted customer state topic"),
    ("KEEL_TOPIC_SIGNALS", "customer-signals.v1", "customer signals topic"),
    ("KEEL_TOPIC_DEADLETTER", "deadletter.v1", "dead letters"),
    (
        "KEEL_TOPIC_DEADLETTER_STATUS",
        "deadletter-status.v1",
        "what became of each dead letter (replayed, handled; compacted, keyed by partition:offset)",
    ),
    ("KEEL_TOPIC_COMMANDS", "commands.v1", "desk agents' commands to the departments"),
    (
        "KEEL_TOPIC_COMMAND_OUTCOMES",
        "command-outcomes.v1",
        "the departments' answers to commands, as the delivery connectors saw them",
    ),
    ("KEEL_TOPIC_ERASURES", "erasures.v1", "erasure requests: who asked to forget whom, and why"),
    (
        "KEEL_INPUT_RETENTION_MS",
        "604800000",
        "retention of orders.v1/shipments.v1/contacts.v1 when keel creates them (what keel "
        "cannot erase lives this long)",
    ),
    (
        "KEEL_DEADLETTER_RETENTION_MS",
        "2419200000",
        "retention of deadletter.v1 when keel creates it (erased customers' dead letters too)",
    ),
    (
        "KEEL_ERASURES_RETENTION_MS",
        "-1",
        "retention of erasures.v1 (-1: forever; a replay from offset 0 needs every request)",
    ),
    ("KEEL_TOPIC_VOICE", "voice.v1", "Voice of the Customer aggregates per topic (compacted)"),
    (
        "KEEL_VOICE_KEYWORDS",
        "",
        "JSON file {topic: [keyword, ...]} tagging contacts that have no topic (default: "
        "streams/domain/voice.py DEFAULT_KEYWORDS)",
    ),
    (
        "KEEL_VOICE_TOP",
        "10",
        "topics exported as Prometheus gauges (the rest summed as `other topics`)",
    ),
    ("POSTGRES_URL", "postgresql://keel@127.0.0.1:5432/keel", "PostgreSQL of the outbox connector"),
    (
        "KEEL_DIRECTORY_URL",
        "",
        "PostgreSQL of the customer directory (GET /directory, the desk's search by name, "
        "partial e-mail, phone, order id; fed by connectors/sinks/directory.py); empty: off",
    ),
    (
        "KEEL_PHONE_REGION",
        "DE",
        "region (ISO 3166 code) a phone number without a country code is read in by the "
        "directory, e.g. `030 7624039` in DE is +49307624039",
    ),
    ("KEEL_CONNECTOR_BIND", "127.0.0.1", "address the connectors' HTTP servers bind to"),
    ("KEEL_INGEST_PORT", "8088", "HTTP ingest port (also its /metrics, /healthz, /openapi.json)"),
    ("KEEL_INGEST_MAX_BYTES", "1048576", "larger HTTP ingest request bodies get 413"),
    ("KEEL_OUTBOX_PORT", "8089", "outbox connector's /metrics and /healthz port"),
    ("KEEL_OUTBOX_BATCH", "500", "outbox rows published per round trip"),
    (
        "KEEL_CDC",
        "",
        "how departments' databases reach Kafka in `make run` and the demo: empty, keel's outbox "
        "connector polls keel_outbox; `debezium`, Debezium in Kafka Connect reads the "
        "departments' outbox tables (docs/connectors/debezium.md)",
    ),
    (
        "KEEL_OUTBOX_POLL_MS",
        "200",
        "idle outbox connector: how often it looks for rows (a standby: for the lock)",
    ),
    ("KEEL_REDIS_SINK_PORT", "8090", "Redis sink's /metrics and /healthz port"),
    ("KEEL_DIRECTORY_SINK_PORT", "8094", "directory sink's /metrics and /healthz port"),
    ("KEEL_DIRECTORY_SINK_GROUP", "keel-directory-sink", "consumer group of the directory sink"),
    ("KEEL_REDIS_SINK_GROUP", "keel-redis-sink", "consumer group of the Redis sink"),
    ("KEEL_REDIS_SINK_BATCH", "500", "customer-state records written to Redis per MULTI/EXEC"),
    (
        "KEEL_INBOX_POSTGRES_URL",
        "",
        "PostgreSQL the inbox connector writes keel_inbox into (default: POSTGRES_URL)",
    ),
    ("KEEL_INBOX_PORT", "8091", "PostgreSQL inbox connector's /metrics and /healthz port"),
    ("KEEL_INBOX_GROUP", "keel-postgres-inbox", "consumer group of the PostgreSQL inbox connector"),
    ("KEEL_WEBHOOK_URL", "", "where the webhook connector POSTs each command (required for it)"),
    ("KEEL_WEBHOOK_SECRET", "", "shared secret of the webhook's X-Keel-Signature HMAC (required)"),
    ("KEEL_WEBHOOK_PORT", "8092", "webhook connector's /metrics and /healthz port"),
    ("KEEL_WEBHOOK_GROUP", "keel-webhook", "consumer group of the webhook connector"),
    ("KEEL_WEBHOOK_TIMEOUT_MS", "5000", "a webhook POST not answered within this is retried"),
)

# Variables read by other parts of keel (connectors, local stack, tests) that the worker
# accepts without using, so one environment can serve every process.
OTHER_KNOWN = frozenset(
    {
        "KEEL_CACHE",
        "KEEL_KAFKA_PORT",
        "KEEL_KAFKA_CONTROLLER_PORT",
        "KEEL_KAFKA_JVM_FLAGS",
        "KEEL_KAFKA_BROKERS",
        "KEEL_REDIS_PORT",
        "KEEL_POSTGRES_PORT",
        "KEEL_RUN_DIR",
        "KEEL_DEMO_CUSTOMERS",
        "KEEL_DEMO_RATE",
        "KEEL_SHOP_PORT",
        "KEEL_CONNECT_PORT",
        "KEEL_CONNECT_JVM_FLAGS",
    }
)


def _int(name: str, raw: str, minimum: int = 0) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def _retention(name: str, get: Callable[[str], str]) -> int:
    """A topic's retention.ms: -1 (forever) or at least an hour."""
    value = _int(name, get(name), -1)
    if 0 <= value < 3_600_000:
        raise ConfigError(f"{name}={value} must be -1 (forever) or at least 3600000 (an hour)")
    return value


@dataclass(frozen=True)
class Topics:
    orders: str
    shipments: str
    contacts: str
    state: str
    signals: str
    deadletter: str
    deadletter_status: str
    commands: str
    command_outcomes: str
    erasures: str
    voice: str

    def inputs(self) -> tuple[str, str, str]:
        return (self.orders, self.shipments, self.contacts)


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str
    #: KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_* (streams/kafka/config.py)
    kafka_security: KafkaSecurity
    redis_url: str
    app_id: str
    partitions: int
    replication: int
    min_insync_replicas: int
    data_dir: Path
    api_bind: str
    api_port: int
    canonical_url: str
    #: group.instance.id of the worker's consumers (static membership); None: dynamic
    instance_id: str | None
    tls_cert: str
    tls_key: str
    tls_ca: str
    standby_replicas: int
    session_timeout_ms: int
    keep_closed: int
    max_notes: int
    keep_retired: int
    identity_shared_after: int
    identity_blocklist: tuple[str, ...]
    max_state_bytes: int
    max_record_bytes: int
    hold_max_s: int
    rocksdb_memory_mb: int
    read_cache_mb: int
    intake_ahead_records: int
    input_retention_ms: int
    deadletter_retention_ms: int
    erasures_retention_ms: int
    duplicate_order_window_s: int
    repeat_contact_window_s: int
    complaint_unresolved_s: int
    command_timeout_s: int
    signal_check_interval_s: int
    batch_max: int
    batch_wait_ms: int
    desk_stale_s: int
    #: KEEL_DIRECTORY_URL ("" = no directory) and KEEL_PHONE_REGION (streams/domain/directory.py)
    directory_url: str
    phone_region: str
    voice_keywords: str
    voice_top: int
    log_level: str
    log_format: str
    topics: Topics

    def server_ssl_context(self) -> ssl.SSLContext | None:
        """HTTPS for this process' HTTP server (KEEL_TLS_CERT/KEY), or None: plain HTTP."""
        from streams.tls import server_context

        return server_context(self.tls_cert, self.tls_key)

    @property
    def batch_wait_s(self) -> float:
        return self.batch_wait_ms / 1000

    @property
    def heartbeat_ms(self) -> int:
        """Heartbeats every third of the session: two may be lost before the session ends."""
        return max(self.session_timeout_ms // 3, 100)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the settings; raise ConfigError naming the bad variable."""
        env = os.environ if env is None else env
        known = {name for name, _, _ in VARIABLES} | OTHER_KNOWN
        unknown = sorted(k for k in env if k.startswith("KEEL_") and k not in known)
        if unknown:
            raise ConfigError(
                f"unknown configuration variable(s): {', '.join(unknown)} "
                "(see docs/configuration.md)"
            )

        def get(name: str) -> str:
            default = next(d for n, d, _ in VARIABLES if n == name)
            return env.get(name, "") or default

        bind = get("KEEL_API_BIND")
        port = _int("KEEL_API_PORT", get("KEEL_API_PORT"), 1)
        tls_cert, tls_key, tls_ca = get("KEEL_TLS_CERT"), get("KEEL_TLS_KEY"), get("KEEL_TLS_CA")
        if bool(tls_cert) != bool(tls_key):
            raise ConfigError("KEEL_TLS_CERT and KEEL_TLS_KEY go together: set both or neither")
        for name, path in (("KEEL_TLS_CERT", tls_cert), ("KEEL_TLS_KEY", tls_key),
                           ("KEEL_TLS_CA", tls_ca)):  # fmt: skip
            if path and not Path(path).is_file():
                raise ConfigError(f"{name}={path}: no such file")
        scheme = "https" if tls_cert else "http"
        canonical = get("KEEL_CANONICAL_URL") or f"{scheme}://{bind}:{port}"
        level = get("KEEL_LOG_LEVEL").lower()
        if level not in {"debug", "info", "warning", "error"}:
            raise ConfigError(f"KEEL_LOG_LEVEL={level!r} is not one of debug/info/warning/error")
        log_format = get("KEEL_LOG_FORMAT").lower()
        if log_format not in {"text", "json"}:
            raise ConfigError(f"KEEL_LOG_FORMAT={log_format!r} is not one of text/json")
        replication = _int("KEEL_REPLICATION", get("KEEL_REPLICATION"), 1)
        # acks=all then waits for this many replicas: with 3, one broker may be down and an
        # acknowledged write is still on two
        min_insync = get("KEEL_MIN_INSYNC_REPLICAS") or ("2" if replication >= 3 else "1")
        min_insync_replicas = _int("KEEL_MIN_INSYNC_REPLICAS", min_insync, 1)
        if min_insync_replicas > replication:
            raise ConfigError(
                f"KEEL_MIN_INSYNC_REPLICAS={min_insync_replicas} is more than "
                f"KEEL_REPLICATION={replication}: no write could ever be acknowledged"
            )
        try:
            kafka_security = KafkaSecurity.from_env(env)
        except KafkaConfigError as exc:
            raise ConfigError(str(exc)) from None
        return cls(
            kafka_bootstrap=get("KAFKA_BOOTSTRAP"),
            kafka_security=kafka_security,
            redis_url=get("REDIS_URL"),
            app_id=get("KEEL_APP_ID"),
            partitions=_int("KEEL_PARTITIONS", get("KEEL_PARTITIONS"), 1),
            replication=replication,
            min_insync_replicas=min_insync_replicas,
            data_dir=Path(get("KEEL_DATA_DIR")),
            api_bind=bind,
            api_port=port,
            canonical_url=canonical,
            instance_id=_instance_id(get("KEEL_INSTANCE_ID"), port, canonical),
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_ca=tls_ca,
            standby_replicas=_int("KEEL_STANDBY_REPLICAS", get("KEEL_STANDBY_REPLICAS")),
            session_timeout_ms=_int(
                "KEEL_SESSION_TIMEOUT_MS", get("KEEL_SESSION_TIMEOUT_MS"), 1000
            ),
            keep_closed=_int("KEEL_KEEP_CLOSED", get("KEEL_KEEP_CLOSED")),
            max_notes=_int("KEEL_MAX_NOTES", get("KEEL_MAX_NOTES"), 1),
            keep_retired=_int("KEEL_KEEP_RETIRED", get("KEEL_KEEP_RETIRED")),
            identity_shared_after=_int(
                "KEEL_IDENTITY_SHARED_AFTER", get("KEEL_IDENTITY_SHARED_AFTER"), 1
            ),
            identity_blocklist=tuple(
                p.strip() for p in get("KEEL_IDENTITY_BLOCKLIST").split(",") if p.strip()
            ),
            max_state_bytes=_int("KEEL_MAX_STATE_BYTES", get("KEEL_MAX_STATE_BYTES"), 16 * 1024),
            max_record_bytes=_int("KEEL_MAX_RECORD_BYTES", get("KEEL_MAX_RECORD_BYTES"), 1024),
            hold_max_s=_int("KEEL_HOLD_MAX_S", get("KEEL_HOLD_MAX_S"), 1),
            rocksdb_memory_mb=_int("KEEL_ROCKSDB_MEMORY_MB", get("KEEL_ROCKSDB_MEMORY_MB"), 16),
            read_cache_mb=_int("KEEL_READ_CACHE_MB", get("KEEL_READ_CACHE_MB"), 0),
            intake_ahead_records=_int(
                "KEEL_INTAKE_AHEAD_RECORDS", get("KEEL_INTAKE_AHEAD_RECORDS"), 0
            ),
            input_retention_ms=_retention("KEEL_INPUT_RETENTION_MS", get),
            deadletter_retention_ms=_retention("KEEL_DEADLETTER_RETENTION_MS", get),
            erasures_retention_ms=_retention("KEEL_ERASURES_RETENTION_MS", get),
            duplicate_order_window_s=_int(
                "KEEL_DUPLICATE_ORDER_WINDOW_S", get("KEEL_DUPLICATE_ORDER_WINDOW_S")
            ),
            repeat_contact_window_s=_int(
                "KEEL_REPEAT_CONTACT_WINDOW_S", get("KEEL_REPEAT_CONTACT_WINDOW_S")
            ),
            complaint_unresolved_s=_int(
                "KEEL_COMPLAINT_UNRESOLVED_S", get("KEEL_COMPLAINT_UNRESOLVED_S")
            ),
            signal_check_interval_s=_int(
                "KEEL_SIGNAL_CHECK_INTERVAL_S", get("KEEL_SIGNAL_CHECK_INTERVAL_S"), 1
            ),
            batch_max=_int("KEEL_BATCH_MAX", get("KEEL_BATCH_MAX"), 1),
            batch_wait_ms=_int("KEEL_BATCH_WAIT_MS", get("KEEL_BATCH_WAIT_MS"), 1),
            desk_stale_s=_int("KEEL_DESK_STALE_S", get("KEEL_DESK_STALE_S"), 1),
            directory_url=get("KEEL_DIRECTORY_URL"),
            phone_region=_region(get("KEEL_PHONE_REGION")),
            command_timeout_s=_int("KEEL_COMMAND_TIMEOUT_S", get("KEEL_COMMAND_TIMEOUT_S"), 1),
            voice_keywords=get("KEEL_VOICE_KEYWORDS"),
            voice_top=_int("KEEL_VOICE_TOP", get("KEEL_VOICE_TOP"), 1),
            log_level=level,
            log_format=log_format,
            topics=Topics(
                orders=get("KEEL_TOPIC_ORDERS"),
                shipments=get("KEEL_TOPIC_SHIPMENTS"),
                contacts=get("KEEL_TOPIC_CONTACTS"),
                state=get("KEEL_TOPIC_STATE"),
                signals=get("KEEL_TOPIC_SIGNALS"),
                deadletter=get("KEEL_TOPIC_DEADLETTER"),
                deadletter_status=get("KEEL_TOPIC_DEADLETTER_STATUS"),
                commands=get("KEEL_TOPIC_COMMANDS"),
                command_outcomes=get("KEEL_TOPIC_COMMAND_OUTCOMES"),
                erasures=get("KEEL_TOPIC_ERASURES"),
                voice=get("KEEL_TOPIC_VOICE"),
            ),
        )


def settings_field_names() -> list[str]:
    """Names of the Settings fields (used by tests to keep VARIABLES complete)."""
    return [f.name for f in fields(Settings)]


def _instance_id(value: str, port: int, canonical_url: str) -> str | None:
    """KEEL_INSTANCE_ID, made Kafka's group.instance.id (ASCII letters, digits, ``.``, ``_``,
    ``-``; at most 249): the value (by default this host's name and the API port, so two
    workers on one host differ) and a short hash of the canonical URL. faust's assignment
    carries each member's URL and a static member that comes back is handed its last
    assignment unchanged, so a worker back at another URL must be a new member, and two
    workers given the same value by mistake (at different URLs) are two members; ``none``
    turns static membership off."""
    if value.strip().lower() == "none":
        return None
    if value and not re.fullmatch(r"[A-Za-z0-9._-]{1,240}", value):
        raise ConfigError(
            f"KEEL_INSTANCE_ID={value!r} is not a Kafka group.instance.id: 1-240 ASCII "
            "letters, digits, '.', '_' or '-' (or none for dynamic membership)"
        )
    base = value or re.sub(r"[^A-Za-z0-9._-]", "-", f"{socket.gethostname()}-{port}")[-240:]
    return f"{base}-{zlib.crc32(canonical_url.encode()):08x}"


def _region(value: str) -> str:
    """KEEL_PHONE_REGION: a region libphonenumber knows (``DE``, ``US``, ``GB``, …)."""
    import phonenumbers

    region = value.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(
            f"KEEL_PHONE_REGION={value!r} is not a region code libphonenumber knows "
            "(two letters, ISO 3166, e.g. DE, US, GB)"
        )
    return region
