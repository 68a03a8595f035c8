"""Redis with an ACL user and PostgreSQL with password auth, on the SASL_SSL broker.

Everything here is secured at once, as a deployment would be: the worker, the PostgreSQL
outbox and the Redis sink reach Kafka through conftest's SASL_SSL listener only; the outbox
logs in to PostgreSQL as a role whose password the server checks (``scram-sha-256``), the
sink to Redis as an ACL user (the password-less ``default`` user switched off). Both URLs
carry the credentials (``POSTGRES_URL``, ``REDIS_URL``), the way docs/security.md says.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from deploy.local.postgres import Postgres
from deploy.local.stack import Kafka, Redis, free_port
from deploy.local.tls import Certificates
from tests.builders import T0, order, shipment, unique
from tests.integration.connectors_harness import ConnectorProcess
from tests.integration.harness import Worker, wait_for
from tests.integration.secure import KAFKA_PASSWORD, kafka_env
from tests.integration.test_connectors import as_json

pytestmark = pytest.mark.integration

PG_ROLE, PG_PASSWORD = "keel_app", secrets.token_hex(16)
REDIS_USER, REDIS_PASSWORD = "keel-sink", secrets.token_hex(16)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    base = Path(tempfile.mkdtemp(prefix="keel-pg-"))  # not pytest's tmp: PostgreSQL's own user
    server = Postgres(base, port=free_port(), passwords={PG_ROLE: PG_PASSWORD})
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    base = tmp_path_factory.mktemp("redis-acl")
    server = Redis(
        base / "data", free_port(), base / "redis.log", users={REDIS_USER: REDIS_PASSWORD}
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def app_database(server: Postgres) -> str:
    """A database owned by the password role (made by the trusted superuser, as an admin would)."""
    name = f"t_{unique('db').replace('-', '_')}"
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} OWNER {PG_ROLE}")
    return server.role_url(PG_ROLE, name)


def test_the_stores_refuse_missing_or_wrong_credentials(
    postgres: Postgres, redis_server: Redis
) -> None:
    url = app_database(postgres)
    with psycopg.connect(url) as conn:  # the right password
        assert conn.execute("SELECT current_user").fetchone() == (PG_ROLE,)
    for wrong in (url.replace(PG_PASSWORD, "wrong"), url.replace(f":{PG_PASSWORD}", "")):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(wrong, connect_timeout=5).close()

    assert redis.Redis.from_url(redis_server.url).ping()
    anonymous = redis_server.url.replace(f"{REDIS_USER}:{REDIS_PASSWORD}@", "")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(anonymous).get("keel:customer:x")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(redis_server.url.replace(REDIS_PASSWORD, "wrong")).ping()
    with pytest.raises(redis.exceptions.NoPermissionError):  # keel's keys only
        redis.Redis.from_url(redis_server.url).set("someone-else:x", "1")


def test_outbox_and_redis_sink_with_passwords_through_sasl_ssl(
    secure_kafka: Kafka,
    certs: Certificates,
    postgres: Postgres,
    redis_server: Redis,
    tmp_path: Path,
) -> None:
    env = kafka_env(secure_kafka, certs)
    database = app_database(postgres)
    worker = Worker(
        secure_kafka.sasl_bootstrap, tmp_path / "worker", free_port(), tmp_path / "worker.log",
        KEEL_APP_ID=unique("stores"), **env,
    )  # fmt: skip
    outbox_port, sink_port = free_port(), free_port()
    outbox = ConnectorProcess(
        "connectors.sources.postgres_outbox", outbox_port, tmp_path / "outbox.log",
        POSTGRES_URL=database, KEEL_OUTBOX_PORT=str(outbox_port), KEEL_OUTBOX_POLL_MS="50",
        **env,
    )  # fmt: skip
    sink = ConnectorProcess(
        "connectors.sinks.redis", sink_port, tmp_path / "sink.log",
        REDIS_URL=redis_server.url, KEEL_REDIS_SINK_PORT=str(sink_port),
        KEEL_APP_ID=worker.env["KEEL_APP_ID"], KEEL_REDIS_SINK_GROUP=unique("sink"), **env,
    )  # fmt: skip
    try:
        worker.start(timeout=180)
        outbox.start(timeout=60)
        wait_for("the outbox connected", lambda: outbox.health()["role"] == "leader", 60)
        sink.start(timeout=60)
        cid, oid, sid = unique("c"), unique("o"), unique("s")
        rows = [
            ("orders.v1", cid, as_json(order(cid, oid, email=f"pw.{cid}@example.com"))),
            ("shipments.v1", oid, as_json(shipment(oid, sid, "DISPATCHED", T0 + 3_600_000))),
        ]
        with psycopg.connect(database) as conn:  # the department's own transaction
            for topic, key, payload in rows:
                conn.execute(
                    "INSERT INTO keel_outbox(topic, key, payload) VALUES (%s, %s, %s)",
                    (topic, key, json.dumps(payload)),
                )
        client = redis.Redis.from_url(redis_server.url)

        def in_redis() -> dict[str, Any] | None:
            raw = client.get(f"keel:customer:{cid}")
            state = json.loads(raw) if raw is not None else None
            if not state or not state["orders"] or not state["orders"][0]["shipments"]:
                return None
            return dict(state)

        state = wait_for("the joined state in Redis", in_redis, 120)
        assert state["orders"][0]["shipments"][0]["shipment_id"] == sid
        assert state == worker.get(f"/customers/{cid}")[1]
        # the index key comes from the order-owners changelog, another topic than the state:
        # either may reach Redis first (docs/contract.md §8)
        owner = lambda: client.get(f"keel:order:{oid}")  # noqa: E731
        wait_for("the order's index key", lambda: owner() == cid.encode(), 30)
        assert outbox.health()["role"] == "leader" and sink.health()["redis"] == "up"
        for log in (worker.log_file, outbox.log_file, sink.log_file):
            text = log.read_text(errors="replace")
            for secret in (PG_PASSWORD, REDIS_PASSWORD, KAFKA_PASSWORD):
                assert secret not in text, f"a password is in {log.name}"
        assert f"postgresql://{PG_ROLE}:***@" in outbox.log_file.read_text()
        assert f"redis://{REDIS_USER}:***@" in sink.log_file.read_text()
    finally:
        sink.stop()
        outbox.stop()
        worker.stop()
