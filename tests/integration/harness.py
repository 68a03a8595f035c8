"""What the integration tests drive keel with: a worker process and public-interface clients.

Everything here talks to keel the way its users do: Avro records produced to the input
topics, HTTP GETs on the query API, records read back from customer-state.v1.

Tokens, too: like someone who ran ``. .run/tokens.env``, the test session has one token per
role in ``KEEL_READ_TOKEN`` … ``KEEL_METRICS_TOKEN`` (:func:`ensure_tokens`, made once per
session unless already set). Every worker and connector the tests start inherits them, the
way a deployment hands them over, and the clients here send them as ``Authorization:
Bearer``: the read token for the query API, the metrics token for ``/metrics``.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import Consumer, TopicPartition

from deploy.local.process import Child
from streams.encoding.codec import get_codec
from streams.kafka.config import KafkaSecurity, client_config
from streams.kafka.producer import ConfirmedProducer

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

TOPIC = {"order": "orders.v1", "shipment": "shipments.v1", "contact": "contacts.v1"}
KEY_FIELD = {"order": "customer_id", "shipment": "order_id", "contact": "contact_id"}
SCHEMA = {"order": "OrderEvent", "shipment": "ShipmentEvent", "contact": "ContactEvent"}


def wait_for(
    what: str, check: Callable[[], T | None], timeout: float = 60.0, interval: float = 0.2
) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


ROLES = ("read", "write", "agent", "admin", "metrics")


def ensure_tokens() -> None:
    """One random token per role in ``KEEL_<ROLE>_TOKEN`` unless the environment has them."""
    for role in ROLES:
        os.environ.setdefault(f"KEEL_{role.upper()}_TOKEN", secrets.token_urlsafe(32))


def token(role: str) -> str:
    """The session's token of ``role`` (see :func:`ensure_tokens`)."""
    return os.environ[f"KEEL_{role.upper()}_TOKEN"]


def bearer(role: str | None) -> dict[str, str]:
    """The Authorization header of ``role``'s token; none for ``None`` (anonymous)."""
    return {} if role is None else {"Authorization": f"Bearer {token(role)}"}


def role_for(path: str) -> str:
    """The token a client of the worker or a connector uses for ``path``."""
    return "metrics" if path.split("?")[0].endswith("/metrics") else "read"


def http_get(
    url: str, timeout: float = 10.0, role: str | None = None, tls: ssl.SSLContext | None = None
) -> tuple[int, Any]:
    """GET a JSON resource with ``role``'s token (none: anonymous); (status, body or text).

    ``tls``: what an ``https://`` server's certificate is checked against.
    """
    request = urllib.request.Request(url, headers=bearer(role))
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=tls) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


class Worker:
    """A ``keel worker`` subprocess with its own data dir and API port."""

    def __init__(
        self,
        bootstrap: str,
        data_dir: Path,
        port: int,
        log_file: Path,
        tls: ssl.SSLContext | None = None,
        **env: str,
    ) -> None:
        self.port = port
        #: with ``tls`` (what its certificate is checked against) the worker serves HTTPS
        self.tls = tls
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        self.log_file = log_file
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP": bootstrap,
            "KEEL_DATA_DIR": str(data_dir),
            "KEEL_API_PORT": str(port),
            "KEEL_PARTITIONS": "4",
            **env,
        }
        self.child = Child("worker", log_file)

    def start(self, timeout: float = 120.0) -> Worker:
        self.child.start([sys.executable, "-m", "streams", "worker"], cwd=ROOT, env=self.env)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait for /readyz 200; a worker that never gets there is left running."""
        self.child.wait_ready(
            lambda: http_get(f"{self.url}/readyz", timeout=2, tls=self.tls)[0] == 200,
            time.monotonic() + timeout,
            interval=0.5,
            keep=True,
        )

    def tail(self, lines: int = 60) -> str:
        return self.child.tail(lines)

    def get(self, path: str, role: str | None = "auto") -> tuple[int, Any]:
        """GET ``path`` with the token a client would use for it (``role=None``: none)."""
        role = role_for(path) if role == "auto" else role
        return http_get(f"{self.url}{path}", role=role, tls=self.tls)

    def stop(self, timeout: float = 30.0) -> None:
        self.child.stop(timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks run, what a crash looks like."""
        self.child.kill()


class Departments:
    """Produces input events to the input topics, Avro-encoded, as departments would."""

    def __init__(self, bootstrap: str) -> None:
        self.producer = ConfirmedProducer(bootstrap)
        self.codec = get_codec()
        self.topics = dict(TOPIC)  # kind -> topic; tests with their own topics replace it

    def send(self, items: Iterable[tuple[str, dict]]) -> int:
        count = 0
        for kind, event in items:
            value = self.codec.encode(SCHEMA[kind], event)
            self.producer.publish(self.topics[kind], [(event[KEY_FIELD[kind]].encode(), value)])
            count += 1
        return count

    def send_raw(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        self.producer.publish(topic, [(key, value)])


def read_topic(
    bootstrap: str, topic: str, timeout: float = 10.0, security: KafkaSecurity | None = None
) -> list[Any]:
    """Every record currently in ``topic`` (from the beginning up to the end offsets).

    ``security``: the KAFKA_* settings to connect with (default: plaintext).
    """
    consumer = Consumer(
        client_config(
            bootstrap,
            security or KafkaSecurity({}),
            **{
                "group.id": f"reader-{time.time_ns()}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            },
        )
    )
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics[topic]
        tps = [TopicPartition(topic, p, 0) for p in meta.partitions]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=timeout)[1] for tp in tps}
        consumer.assign(tps)
        pending = {p for p, end in ends.items() if end > 0}
        out = []
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            out.append(msg)
            if msg.offset() + 1 >= ends[msg.partition()]:
                pending.discard(msg.partition())
        return out
    finally:
        consumer.close()


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` in a /metrics body."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total
