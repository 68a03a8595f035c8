"""The local stack `make up` and the test suite rely on: a real Kafka broker and Redis.

Each test starts its own processes on ports the OS hands out, with data in ``tmp_path``, and
checks what a user of the stack would see: records written before a restart are still there,
nothing keeps running after a stop, and ``down`` is safe to run at any time.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, KafkaError, Message, Producer

from deploy.local.stack import Kafka, PortInUse, Redis, free_port, is_running

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Kafka]:
    """A started broker of this test's own (conftest's session broker is shared by others)."""
    broker = Kafka(tmp_path / "kafka", port=free_port(), log_file=tmp_path / "kafka.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def test_kafka_keeps_records_across_a_stop_and_start(broker: Kafka) -> None:
    topic = f"stack-{uuid.uuid4().hex}"
    _produce(broker.bootstrap, topic, [b"before-restart"])
    assert _consume(broker.bootstrap, topic, count=1) == [b"before-restart"]

    pid = broker.pid
    assert pid is not None
    broker.stop()
    assert broker.pid is None
    assert _processes_mentioning(broker.data_dir) == []

    # What `make up` after `make down` does: a new broker on the same ports and data dir.
    again = Kafka(broker.data_dir, port=broker.port, controller_port=broker.controller_port)
    with again:
        assert _consume(again.bootstrap, topic, count=1) == [b"before-restart"]
        _produce(again.bootstrap, topic, [b"after-restart"])
        assert sorted(_consume(again.bootstrap, topic, count=2)) == [
            b"after-restart",
            b"before-restart",
        ]
    assert _processes_mentioning(broker.data_dir) == []


def test_kafka_recovers_from_a_kill(broker: Kafka) -> None:
    topic = f"stack-{uuid.uuid4().hex}"
    _produce(broker.bootstrap, topic, [b"acked-before-crash"])
    pid = broker.pid
    assert pid is not None

    broker.kill()
    assert not is_running(pid, b"kafka.Kafka")

    broker.start()
    assert _consume(broker.bootstrap, topic, count=1) == [b"acked-before-crash"]


def test_kafka_refuses_a_port_that_is_taken(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        broker = Kafka(tmp_path / "kafka", port=taken)
        with pytest.raises(PortInUse, match=str(taken)):
            broker.start()
    assert broker.pid is None
    assert _processes_mentioning(tmp_path) == []


def test_redis_answers_and_keeps_data_across_a_restart(tmp_path: Path) -> None:
    server = Redis(tmp_path / "redis", port=free_port())
    with server:
        pid = server.pid
        assert pid is not None
        with redis.Redis.from_url(server.url) as client:
            assert client.ping() is True
            assert client.config_get("appendonly") == {"appendonly": "yes"}
            assert client.config_get("bind") == {"bind": "127.0.0.1"}
            client.set("greeting", "hello")
    assert server.pid is None
    assert not is_running(pid, b"redis-server")

    with Redis(tmp_path / "redis", port=server.port) as restarted:
        with redis.Redis.from_url(restarted.url) as client:
            assert client.get("greeting") == b"hello"


def test_cli_up_is_detached_and_idempotent_and_down_stops_it(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "KEEL_KAFKA_PORT": str(free_port()),
        "KEEL_KAFKA_CONTROLLER_PORT": str(free_port()),
        "KEEL_REDIS_PORT": str(free_port()),
    }
    run_dir = tmp_path / "run"
    pids: dict[str, int] = {}
    try:
        first = _cli("up", run_dir, env)
        assert first.returncode == 0, first.stderr
        pids = {name: int((run_dir / f"{name}.pid").read_text()) for name in ("kafka", "redis")}
        # The CLI has exited; the services must not have gone with it.
        assert is_running(pids["kafka"], b"kafka.Kafka")
        assert is_running(pids["redis"], b"redis-server")
        bootstrap = f"127.0.0.1:{env['KEEL_KAFKA_PORT']}"
        topic = f"stack-{uuid.uuid4().hex}"
        _produce(bootstrap, topic, [b"via-cli"])
        assert _consume(bootstrap, topic, count=1) == [b"via-cli"]

        second = _cli("up", run_dir, env)
        assert second.returncode == 0, second.stderr
        assert "already running" in second.stdout
        assert int((run_dir / "kafka.pid").read_text()) == pids["kafka"]

        assert _cli("status", run_dir, env).returncode == 0
    finally:
        down = _cli("down", run_dir, env)
    assert down.returncode == 0, down.stderr
    assert "stopped kafka" in down.stdout and "stopped redis" in down.stdout
    assert not is_running(pids["kafka"], b"kafka.Kafka")
    assert not is_running(pids["redis"], b"redis-server")
    assert not (run_dir / "kafka.pid").exists()
    assert _processes_mentioning(run_dir) == []
    assert _cli("status", run_dir, env).returncode == 1


def test_cli_down_with_nothing_running_is_fine(tmp_path: Path) -> None:
    result = _cli("down", tmp_path / "never-started", dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert "kafka was not running" in result.stdout


def _cli(command: str, run_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploy.local", command, "--dir", str(run_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for value in values:
        producer.produce(topic, value, on_delivery=on_delivery)
    assert producer.flush(30) == 0, "records still unconfirmed after 30 s"
    assert errors == []


def _consume(bootstrap: str, topic: str, count: int, timeout: float = 30) -> list[bytes]:
    """Read ``count`` records from the start of ``topic`` as a fresh consumer group would."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"stack-test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(values) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            value = msg.value()
            assert value is not None
            values.append(value)
    finally:
        consumer.close()
    return values


def _processes_mentioning(path: Path) -> list[int]:
    """Pids of live processes whose command line names ``path`` (our brokers and servers do)."""
    needle = str(path).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if needle in cmdline and state != "Z":
            found.append(int(entry.name))
    return found
