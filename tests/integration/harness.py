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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from aiokafka.partitioner import murmur2
from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from deploy.local.process import Child
from deploy.local.stack import Kafka, free_port
from streams.encoding.codec import get_codec
from streams.kafka.config import KafkaSecurity, client_config
from streams.kafka.producer import ConfirmedProducer
from tests.builders import unique

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

TOPIC = {"order": "orders.v1", "shipment": "shipments.v1", "contact": "contacts.v1"}
KEY_FIELD = {"order": "customer_id", "shipment": "order_id", "contact": "contact_id"}
SCHEMA = {"order": "OrderEvent", "shipment": "ShipmentEvent", "contact": "ContactEvent"}
#: partitions of the topics of a test's own workers (see conftest's ``cluster``)
PARTITIONS = 4


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


# -- several workers: their topics, their partitions, commands to them -------------------------


#: the topics a worker reads and writes in the pipeline tests
PIPELINE_TOPICS = ("ORDERS", "SHIPMENTS", "CONTACTS", "STATE", "SIGNALS", "DEADLETTER")
#: and every other topic a worker has (the cluster fixture's workers own all of them)
EVERY_TOPIC = (*PIPELINE_TOPICS, "COMMANDS", "COMMAND_OUTCOMES", "ERASURES", "VOICE")


def own_topics(app_id: str, names: tuple[str, ...] = PIPELINE_TOPICS) -> dict[str, str]:
    """Topics of this test alone, as ``KEEL_TOPIC_*`` settings (``names``: which ones): nothing
    other tests wrote is replayed here. ``{app_id}.orders``, ``{app_id}.commands`` …"""
    return {f"KEEL_TOPIC_{n}": f"{app_id}.{n.lower()}" for n in names}


def partition_of(key: str) -> int:
    """The partition Kafka's Java default partitioner (and faust) gives ``key``."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS


def assigned_partitions(worker: Worker, topic: str | None = None) -> frozenset[int]:
    """Partitions of ``topic`` the worker consumes, as /metrics reports them. The default is
    its customer-events topic: faust's assignor places it, and the tables with it (the input
    topics are read by the intake, a consumer group of its own)."""
    topic = topic or f"{worker.env.get('KEEL_APP_ID', 'keel')}-customer-events"
    status, body = worker.get("/metrics")
    if status != 200 or not isinstance(body, str):
        return frozenset()
    return frozenset(
        int(sample.labels["partition"])
        for family in text_string_to_metric_families(body)
        if family.name == "keel_consumer_lag_records"
        for sample in family.samples
        if sample.labels["topic"] == topic
    )


def customers_on_every_partition(per_partition: int) -> dict[int, list[str]]:
    """Fresh customer ids, ``per_partition`` of them on each partition."""
    found: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}
    while any(len(ids) < per_partition for ids in found.values()):
        cid = unique("c")
        if len(found[partition_of(cid)]) < per_partition:
            found[partition_of(cid)].append(cid)
    return found


def split_partitions(workers: list[Worker], timeout: float = 90.0) -> list[frozenset[int]]:
    """Wait until every worker is ready and the group split the partitions among them (each
    has some, none twice, all placed); each worker's partitions, in the order of ``workers``."""

    def split() -> list[frozenset[int]] | None:
        parts = [assigned_partitions(w) for w in workers]
        ready = all(w.get("/readyz")[0] == 200 for w in workers)
        disjoint = sum(map(len, parts)) == len(frozenset().union(*parts))
        everything = frozenset().union(*parts) == set(range(PARTITIONS))
        return parts if all(parts) and disjoint and everything and ready else None

    return wait_for("the group to split the partitions", split, timeout)


class Cluster:
    """``cluster(2, "keel-desk")``: that many workers of a consumer group, and topics, of the
    test's own (``departments`` sends to those topics meanwhile), started side by side.

    ``env``: settings of every worker; ``only``: of worker n (1, 2, …) alone; ``tls``: what
    the workers' certificates are checked against (they serve HTTPS, given ``KEEL_TLS_*``).
    """

    def __init__(self, kafka: Kafka, tmp_path: Path, departments: Departments) -> None:
        self.kafka, self.tmp_path, self.departments = kafka, tmp_path, departments
        self.workers: list[Worker] = []

    def __call__(
        self,
        n: int,
        name: str,
        *,
        env: dict[str, str] | None = None,
        only: dict[int, dict[str, str]] | None = None,
        tls: ssl.SSLContext | None = None,
        timeout: float = 120.0,
    ) -> list[Worker]:
        app_id = unique(name)
        topics = own_topics(app_id, EVERY_TOPIC)
        self.departments.topics = {
            "order": topics["KEEL_TOPIC_ORDERS"],
            "shipment": topics["KEEL_TOPIC_SHIPMENTS"],
            "contact": topics["KEEL_TOPIC_CONTACTS"],
        }
        workers = [
            Worker(
                self.kafka.bootstrap,
                self.tmp_path / f"worker-{i}",
                free_port(),
                self.tmp_path / f"worker-{i}.log",
                tls=tls,
                KEEL_APP_ID=app_id,
                KEEL_PARTITIONS=str(PARTITIONS),
                **topics,
                **(env or {}),
                **(only or {}).get(i, {}),
            )
            for i in range(1, n + 1)
        ]
        self.workers.extend(workers)  # stopped at the end even if one does not start
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(lambda w: w.start(timeout), workers))
        return workers

    def stop(self) -> None:
        self.departments.topics = dict(TOPIC)
        for w in self.workers:
            w.stop()



def customer_when(
    worker: Worker, customer_id: str, ready: Callable[[dict], Any], timeout: float = 60
) -> dict:
    """Wait until the API's state for ``customer_id`` satisfies ``ready(state)``; return it."""

    def check() -> dict | None:
        status, body = worker.get(f"/customers/{customer_id}")
        return body if status == 200 and ready(body) else None

    return wait_for(f"state of {customer_id}", check, timeout)


def post_command(
    worker: Worker,
    customer_id: str,
    body: Any,
    agent: str | None = "rep-7",
    role: str | None = "agent",
) -> tuple[int, Any]:
    """POST a desk command for ``customer_id`` as agent ``agent`` (None: no X-Keel-Agent) with
    ``role``'s token; (status, parsed JSON answer) — refusals included."""
    headers = {"Content-Type": "application/json", **bearer(role)}
    if agent is not None:
        headers["X-Keel-Agent"] = agent
    request = urllib.request.Request(
        f"{worker.url}/customers/{customer_id}/commands",
        data=json.dumps(body).encode(),
        headers=headers,
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60, context=worker.tls) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
