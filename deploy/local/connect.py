"""Kafka Connect (distributed) with Debezium's PostgreSQL connector, for departments' outboxes.

Departments whose systems write rows, not Kafka records, reach keel through change data
capture: each writes, in the transaction of its business change, a row into its outbox table
(``<department>.keel_outbox``: the event already encoded as the contract says, the key, the
topic), and Debezium's PostgreSQL connector reads the table's inserts from the write-ahead log
(``pgoutput``, a replication slot per department), its Outbox Event Router turns each row into
one record of the row's topic::

    with Connect(tmp / "connect", kafka.bootstrap, port=free_port()) as connect:
        connect.put_connector(*outbox_connector("webshop", pg.url))
        connect.wait_running("keel-outbox-webshop")

Connect's own state (connector configs, source offsets, task status) lives in three topics of
keel's Kafka, ``keel-connect-configs``/``-offsets``/``-status``, replicated like keel's own, so a
Connect worker killed and started again resumes from the last offset it committed: rows after it
are sent again (keel applies each ``event_id`` once), none is lost (the slot keeps the WAL until
Connect confirms it). Like the broker, Connect is the Apache jar run by ``java``, its runtime
and Debezium's jars fetched from Maven Central by :mod:`deploy.local.provision`.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deploy.local.errors import StackError, StartupError
from deploy.local.provision import ensure_connect_jars, ensure_debezium_plugin, java_binary
from deploy.local.stack import HOST, LOG4J_CONFIG, _Service

__all__ = [
    "CONNECT_TOPICS", "DEPARTMENTS", "OUTBOX_TABLE", "Connect", "cdc_from_env", "connector_name",
    "outbox_connector",
]  # fmt: skip

#: the departments whose outboxes `KEEL_CDC=debezium make run` reads, each a schema of keel's
#: demo database (the web shop writes orders, shipping its parcels)
DEPARTMENTS = ("webshop", "shipping")
#: each department's outbox table, in the department's own schema
OUTBOX_TABLE = "keel_outbox"
#: Connect's config, offset and status topics in keel's Kafka
CONNECT_TOPICS = ("keel-connect-configs", "keel-connect-offsets", "keel-connect-status")

JVM_FLAGS = ("-Xmx512m", "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError",
             "-Djava.awt.headless=true")  # fmt: skip


def cdc_from_env(env: Mapping[str, str] | None = None) -> str:
    """``KEEL_CDC``: how departments' databases reach Kafka in `make run` — ``""`` (keel's
    outbox poller, connectors/sources/postgres_outbox.py) or ``"debezium"`` (this module)."""
    raw = ((os.environ if env is None else env).get("KEEL_CDC") or "").strip().lower()
    if raw not in ("", "debezium"):
        raise StackError(f"KEEL_CDC={raw!r}: leave it empty (keel's outbox poller) or say debezium")
    return raw


def connector_name(department: str) -> str:
    """``keel-outbox-<department>``: the connector's name in Connect."""
    return f"keel-outbox-{department}"


def outbox_connector(department: str, postgres_url: str) -> tuple[str, dict[str, str]]:
    """(name, config) of the Debezium connector reading ``<department>.keel_outbox``.

    ``postgres_url`` is the department database's libpq URL as Connect reaches it
    (``postgresql://user:pw@host:port/db``; a password may be a config provider's reference,
    ``${env:POSTGRES_PASSWORD}``, resolved by the Connect worker). The Outbox Event Router
    sends each inserted row to the topic in its ``topic`` column, keyed by its ``key`` column,
    its ``payload`` bytes unchanged (``ByteArrayConverter``: the row carries the Avro
    single-object encoding) and its ``event_id`` as header ``id``.
    """
    url = urllib.parse.urlsplit(postgres_url)
    if not department.isidentifier():
        raise StackError(f"department {department!r}: letters, digits and _ only")
    table = f"{department}.{OUTBOX_TABLE}"
    config = {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "tasks.max": "1",
        "plugin.name": "pgoutput",
        "database.hostname": url.hostname or HOST,
        "database.port": str(url.port or 5432),
        "database.user": urllib.parse.unquote(url.username or "keel"),
        "database.password": urllib.parse.unquote(url.password or ""),
        "database.dbname": url.path.lstrip("/") or "keel",
        "topic.prefix": f"keel-cdc-{department}",
        "table.include.list": table,
        "slot.name": f"keel_{department}",
        "publication.name": f"keel_{department}",
        "publication.autocreate.mode": "filtered",
        # rows committed before the connector's first start are read too (as a snapshot)
        "snapshot.mode": "initial",
        "tombstones.on.delete": "false",
        # how long the task waits for more changes before handing a batch to Connect: 500 ms
        # by default, which would be most of a row's way into keel's state
        "poll.interval.ms": "50",
        # a lost database connection (PostgreSQL restarted) is retried for ever, 3 s apart
        "errors.max.retries": "-1",
        "retriable.restart.connector.wait.ms": "3000",
        # no __debezium.context.* headers on keel's input records: the row's event id only
        "extended.headers.enabled": "false",
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.converters.ByteArrayConverter",
        "transforms": "outbox",
        "transforms.outbox.type": "io.debezium.transforms.outbox.EventRouter",
        "transforms.outbox.table.field.event.id": "event_id",
        "transforms.outbox.table.field.event.key": "key",
        "transforms.outbox.table.field.event.payload": "payload",
        "transforms.outbox.route.by.field": "topic",
        "transforms.outbox.route.topic.replacement": "${routedByValue}",
        # a department may delete its rows after writing them: the deletes are not events
        "transforms.outbox.table.op.invalid.behavior": "warn",
    }
    return connector_name(department), config


class Connect(_Service):
    """One Kafka Connect worker in distributed mode (group ``keel-connect``), REST on ``port``.

    Its state is in Kafka, not in ``data_dir`` (which holds only its properties file), so a
    worker started again, on any data dir, picks up the connectors and offsets of the group.
    """

    name = "connect"
    marker = b"ConnectDistributed"

    def __init__(
        self,
        data_dir: Path,
        bootstrap: str,
        port: int = 8083,
        log_file: Path | None = None,
        *,
        replication: int = 1,
        group: str = "keel-connect",
        offset_flush_ms: int = 1000,
    ) -> None:
        super().__init__(data_dir, log_file)
        self.bootstrap = bootstrap
        self.port = port
        self.replication = replication
        self.group = group
        #: how often source offsets (and so the slot's confirmed LSN) are committed: what a
        #: crash sends again is at most this much of the stream
        self.offset_flush_ms = offset_flush_ms

    @property
    def url(self) -> str:
        """Connect's REST API, e.g. ``http://127.0.0.1:8083``."""
        return f"http://{HOST}:{self.port}"

    @property
    def address(self) -> str:
        return self.url

    def start(self, timeout: float = 120) -> None:
        """Start the worker; ready once ``GET /health`` answers 200 (it joined its group).

        ``timeout`` covers starting, not the one-off download of the jars before it.
        """
        ensure_connect_jars()
        ensure_debezium_plugin()
        super().start(timeout)

    def is_ready(self) -> bool:
        try:
            return self.request("GET", "/health")[0] == 200
        except OSError:
            return False

    def _ports(self) -> tuple[int, ...]:
        return (self.port,)

    def _prepare(self, deadline: float) -> list[str]:
        lib, plugins = ensure_connect_jars(), ensure_debezium_plugin()
        properties = self.data_dir / "connect-distributed.properties"
        properties.write_text(self._properties(plugins))
        extra = os.environ.get("KEEL_CONNECT_JVM_FLAGS", "").split()
        return [
            java_binary(), *JVM_FLAGS, *extra, f"-Dlog4j.configuration=file:{LOG4J_CONFIG}",
            "-cp", f"{lib}/*", "org.apache.kafka.connect.cli.ConnectDistributed", str(properties),
        ]  # fmt: skip

    def _properties(self, plugins: Path) -> str:
        configs, offsets, status = (
            topic if self.group == "keel-connect" else topic.replace("keel-connect", self.group)
            for topic in CONNECT_TOPICS
        )
        settings: dict[str, object] = {
            "bootstrap.servers": self.bootstrap,
            "group.id": self.group,
            "config.storage.topic": configs,
            "offset.storage.topic": offsets,
            "status.storage.topic": status,
            "config.storage.replication.factor": self.replication,
            "offset.storage.replication.factor": self.replication,
            "status.storage.replication.factor": self.replication,
            "offset.storage.partitions": 5,
            "status.storage.partitions": 1,
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "org.apache.kafka.connect.converters.ByteArrayConverter",
            "plugin.path": plugins,
            "listeners": f"http://{HOST}:{self.port}",
            "rest.advertised.host.name": HOST,
            "rest.advertised.port": self.port,
            "offset.flush.interval.ms": self.offset_flush_ms,
            # a worker that crashed and came back gets its connectors at once, not after the
            # 5-minute grace Connect gives a lost worker by default
            "scheduled.rebalance.max.delay.ms": 0,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 2000,
            # every record confirmed by all in-sync replicas, no duplicates from retries
            "producer.acks": "all",
            "producer.enable.idempotence": "true",
        }
        body = "".join(f"{key}={value}\n" for key, value in settings.items())
        return "# written by deploy/local/connect.py on every start; edits are lost\n" + body

    # -- the REST API -----------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status, parsed JSON answer) of one REST call; Connect's error answers included."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def put_connector(self, name: str, config: dict[str, str], timeout: float = 60) -> None:
        """Create ``name`` or update its config (idempotent); retried while the group
        rebalances (409), which it does right after a worker (re)joins."""
        deadline = time.monotonic() + timeout
        while True:
            status, answer = self.request("PUT", f"/connectors/{name}/config", config)
            if status in (200, 201):
                return
            if status != 409 or time.monotonic() >= deadline:
                raise StackError(f"Connect refused connector {name} ({status}): {answer}")
            time.sleep(0.5)

    def state(self, name: str) -> tuple[str, list[str]]:
        """(connector state, task states) from ``/connectors/<name>/status``; ``("", [])``
        while Connect does not know it."""
        status, answer = self.request("GET", f"/connectors/{name}/status")
        if status != 200 or not isinstance(answer, dict):
            return "", []
        return answer["connector"]["state"], [task["state"] for task in answer["tasks"]]

    def wait_running(self, name: str, timeout: float = 90) -> None:
        """Return once ``name`` and every task of it is RUNNING; a FAILED one raises with
        Connect's trace."""
        deadline = time.monotonic() + timeout
        last: tuple[str, list[str]] = ("", [])
        while time.monotonic() < deadline:
            try:
                last = self.state(name)
            except OSError:
                last = ("", [])
            connector, tasks = last
            if "FAILED" in (connector, *tasks):
                _, answer = self.request("GET", f"/connectors/{name}/status")
                raise StartupError(f"connector {name} failed: {json.dumps(answer)[:4000]}")
            if connector == "RUNNING" and tasks and all(t == "RUNNING" for t in tasks):
                return
            time.sleep(0.3)
        raise StartupError(f"connector {name} not running after {timeout:.0f}s: {last}")
