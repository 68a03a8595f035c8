"""What the connector tests drive: connector processes and the clients a department would use.

A connector runs as ``python -m <module>`` with its own environment, exactly as `make run`
starts it; tests talk to it over HTTP (ingest, ``/healthz``, ``/metrics``), PostgreSQL and Redis.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deploy.local.process import Child
from tests.integration.harness import bearer, http_get

if TYPE_CHECKING:
    from deploy.local.postgres import Postgres
    from deploy.local.stack import Kafka

ROOT = Path(__file__).resolve().parents[2]


class ConnectorProcess:
    """One connector subprocess; ``port`` is where its /healthz (and /metrics) answer."""

    def __init__(
        self, module: str, port: int, log_file: Path, tls: ssl.SSLContext | None = None, **env: str
    ) -> None:
        self.module = module
        self.port = port
        #: with ``tls`` (what its certificate is checked against) the connector serves HTTPS
        self.tls = tls
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        self.log_file = log_file
        self.env = {**os.environ, "KEEL_LOG_LEVEL": "info", **env}
        self.child = Child(module, log_file)

    def start(self, timeout: float = 30.0) -> ConnectorProcess:
        """Start it; return once /healthz is 200 (a connector that never gets there is killed)."""
        self.child.start([sys.executable, "-m", self.module], cwd=ROOT, env=self.env)
        self.child.wait_ready(
            lambda: http_get(f"{self.url}/healthz", timeout=2, tls=self.tls)[0] == 200,
            time.monotonic() + timeout,
        )
        return self

    def tail(self, lines: int = 40) -> str:
        return self.child.tail(lines)

    def metrics(self) -> str:
        status, body = http_get(f"{self.url}/metrics", role="metrics", tls=self.tls)
        assert status == 200, status
        return str(body)

    def health(self) -> dict[str, Any]:
        status, body = http_get(f"{self.url}/healthz", tls=self.tls)
        assert status == 200, status
        return dict(body)

    def stop(self, timeout: float = 20.0) -> None:
        self.child.stop(timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks run, what a crash looks like."""
        self.child.kill()


def post(
    url: str,
    body: bytes,
    content_type: str | None = None,
    role: str | None = "write",
    tls: ssl.SSLContext | None = None,
) -> tuple[int, Any]:
    """POST ``body`` with ``role``'s token (None: none); (status, parsed JSON) — JSON errors
    included, as a client sees them."""
    headers = {"Content-Type": content_type} if content_type else {}
    headers.update(bearer(role))
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60, context=tls) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def ndjson(events: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(event).encode() + b"\n" for event in events)


class Processes:
    """Connector processes of one test on free ports; the ``processes`` fixture stops them."""

    def __init__(self, kafka: Kafka, log_dir: Path) -> None:
        self.kafka = kafka
        self.log_dir = log_dir
        self.started: list[ConnectorProcess] = []

    def start(self, module: str, port_var: str, name: str, **env: str) -> ConnectorProcess:
        from deploy.local.stack import free_port

        port = free_port()
        process = ConnectorProcess(
            module,
            port,
            self.log_dir / f"{name}.log",
            KAFKA_BOOTSTRAP=self.kafka.bootstrap,
            **{port_var: str(port)},
            **env,
        )
        self.started.append(process)
        return process.start()

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop()


def fresh_database(server: Postgres) -> str:
    """A new empty database of its own for one test."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.url.rsplit("/", 1)[0] + f"/{name}"
