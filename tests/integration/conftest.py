"""Fixtures that start the real local stack: a Kafka broker (and workers) per test session.

Nothing is mocked: the broker is Apache Kafka run from the jars deploy/local fetches, on
ports the OS hands out, with its data in pytest's temp dir.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local.postgres import Postgres
from deploy.local.stack import Kafka, Redis, SaslSsl, free_port
from deploy.local.tls import Certificates, make_certificates
from tests.integration.connectors_harness import Processes
from tests.integration.harness import Cluster, Departments, Worker, ensure_tokens
from tests.integration.secure import KAFKA_PASSWORD, KAFKA_USER

ensure_tokens()  # before any process starts: each inherits them (see harness.py)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kafka]:
    base = tmp_path_factory.mktemp("kafka")
    broker = Kafka(base / "data", port=free_port(), log_file=base / "kafka.log")
    broker.start(timeout=120)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def worker(kafka: Kafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One worker shared by the pipeline tests (each test uses its own customer ids)."""
    base: Path = tmp_path_factory.mktemp("worker")
    # Tests mix fixed 2026-09 event times with the present: with the 7-day default, what one
    # test leaves held would expire as soon as another's present-day events reach its
    # partition. test_dead_letters runs a worker of its own with a short KEEL_HOLD_MAX_S.
    w = Worker(kafka.bootstrap, base / "data", free_port(), base / "worker.log",
               KEEL_MAX_RECORD_BYTES="65536", KEEL_HOLD_MAX_S=str(10 * 365 * 86_400))
    w.start()
    try:
        yield w
    finally:
        w.stop()


@pytest.fixture(scope="session")
def departments(kafka: Kafka) -> Departments:
    return Departments(kafka.bootstrap)


@pytest.fixture
def cluster(kafka: Kafka, tmp_path: Path, departments: Departments) -> Iterator[Cluster]:
    """Starts workers of a group of the test's own (see :class:`Cluster`); all are stopped
    afterwards, pass or fail, and ``departments`` sends to the shared topics again."""
    started = Cluster(kafka, tmp_path, departments)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[Postgres]:
    """A PostgreSQL of the module's own (a department's database; one database per test)."""
    # Not under pytest's tmp dir: that is private to root, and PostgreSQL runs as `postgres`.
    base = Path(tempfile.mkdtemp(prefix="keel-pg-"))
    server = Postgres(base, port=free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    """A Redis of the module's own (the Redis sink's)."""
    base = tmp_path_factory.mktemp("redis")
    server = Redis(base / "data", port=free_port(), log_file=base / "redis.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def processes(kafka: Kafka, tmp_path: Path) -> Iterator[Processes]:
    """Starts connector processes for one test; all are stopped afterwards, pass or fail."""
    procs = Processes(kafka, tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


# --- a broker with TLS and SASL (tests of credentials) --------------------------------------


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"), secrets.token_hex(12))


@pytest.fixture(scope="session")
def secure_kafka(
    certs: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Kafka]:
    base = tmp_path_factory.mktemp("secure-kafka")
    users = {KAFKA_USER: KAFKA_PASSWORD}
    listener = SaslSsl(free_port(), certs.keystore, certs.keystore_password, users)
    broker = Kafka(base / "data", free_port(), log_file=base / "kafka.log", sasl_ssl=listener)
    broker.start(timeout=120)
    try:
        yield broker
    finally:
        broker.stop()
