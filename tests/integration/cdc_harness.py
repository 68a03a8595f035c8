"""What the CDC tests (test_cdc.py) drive Debezium with: a department's writer that rides
out outages, a consumer of the records each test's rows made, the worker's event counts, and a
Connect worker run with a shipped (compose, Kubernetes) worker file."""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, TopicPartition

from connectors.sources.debezium_outbox import OutboxRow, outbox_row, write
from deploy.local.connect import Connect
from deploy.local.stack import Kafka, free_port
from streams.kafka.config import client_config
from tests.builders import T0, order, unique
from tests.integration.harness import Worker, metric_value, wait_for

HOUR = 3_600_000


def commit(url: str, department: str, rows: list[OutboxRow]) -> float:
    """Write ``rows`` in one transaction; the wall-clock time the commit returned."""
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            write(conn, department, rows)
        return time.time()


class Writer(threading.Thread):
    """Commits one transaction per batch, ``pause`` apart, through outages of PostgreSQL: a
    transaction whose commit went unanswered is looked up and written again only if absent."""

    def __init__(self, url: str, department: str, batches: list[list[OutboxRow]],
                 pause: float = 0.01) -> None:  # fmt: skip
        super().__init__(daemon=True)
        self.url, self.department, self.batches, self.pause = url, department, batches, pause
        self.committed = 0
        self.failures = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        try:
            for batch in self.batches:
                deadline = time.monotonic() + 90
                while True:
                    try:
                        if conn is None or conn.closed:
                            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=3)
                        if not self._present(conn, batch[0].event_id):
                            with conn.transaction():
                                write(conn, self.department, batch)
                        break
                    except psycopg.OperationalError:
                        self.failures += 1
                        if time.monotonic() > deadline:
                            raise
                        conn = None
                        time.sleep(0.2)
                self.committed += 1
                time.sleep(self.pause)
        except BaseException as exc:  # the test reports it
            self.error = exc
        finally:
            if conn is not None:
                conn.close()

    def _present(self, conn: psycopg.Connection[Any], event_id: str) -> bool:
        table = f"{self.department}.keel_outbox"
        return conn.execute(f"SELECT 1 FROM {table} WHERE event_id = %s",
                            (event_id,)).fetchone() is not None  # fmt: skip


def write_through(url: str, batches: list[list[OutboxRow]], outage: Callable[[], None]
                  ) -> Writer:  # fmt: skip
    """Write ``batches`` to the web shop's outbox with ``outage`` once a third is committed;
    the writer, once every batch is in."""
    writer = Writer(url, "webshop", batches, pause=0.03)
    writer.start()
    wait_for("a third of the transactions", lambda: writer.committed >= len(batches) // 3, 60,
             interval=0.01)  # fmt: skip
    before = writer.committed
    outage()
    writer.join(120)
    assert writer.error is None, writer.error
    assert writer.committed == len(batches)
    assert before < len(batches), "the outage came while rows were being written"
    return writer


def stories(customers: int) -> tuple[dict[str, list[dict]], dict[str, dict[str, str]]]:
    """Per customer five order events over two orders, in the order they are written; and
    the statuses its state must end with."""
    written: dict[str, list[dict]] = {}
    expected: dict[str, dict[str, str]] = {}
    for _ in range(customers):
        cid, first, second = unique("c-cdc"), unique("o"), unique("o")
        steps = [(first, "PLACED"), (first, "AMENDED"), (second, "PLACED"),
                 (first, "COMPLETED"), (second, "CANCELLED")]  # fmt: skip
        written[cid] = [order(cid, oid, kind, T0 + i * HOUR)[1]
                        for i, (oid, kind) in enumerate(steps)]  # fmt: skip
        expected[cid] = {first: "COMPLETED", second: "CANCELLED"}
    return written, expected


def interleaved(written: dict[str, list[dict]], per_transaction: int) -> list[list[OutboxRow]]:
    """The customers' events round-robin (each customer's in its own order), ``per_transaction``
    rows to a transaction."""
    rows = [outbox_row("order", events[i]) for i in range(5) for events in written.values()]
    return [rows[i : i + per_transaction] for i in range(0, len(rows), per_transaction)]


class Tail(threading.Thread):
    """Every record of ``topics`` written after it started, as it arrives: a test reads what
    its own rows made without reading the shared topics from their beginning::

        with Tail(kafka, "orders.v1") as tail:
            ...
            tail.of({"c-1"})   # [(key, event id header), ...] in arrival order per partition
    """

    def __init__(self, kafka: Kafka, *topics: str) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer(client_config(kafka.bootstrap, **{
            "group.id": unique("cdc-tail"), "enable.auto.commit": False}))  # fmt: skip
        starts = []
        for topic in topics:  # explicit end offsets: nothing written after this is missed
            for p in self.consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                end = self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                starts.append(TopicPartition(topic, p, end))
        self.consumer.assign(starts)
        #: (topic, message, wall-clock arrival) of each record, in arrival order
        self.records: list[tuple[str, Any, float]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            message = self.consumer.poll(0.05)
            if message is not None and not message.error():
                self.records.append((message.topic(), message, time.time()))
        self.consumer.close()

    def __enter__(self) -> Tail:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.join(10)

    def of(self, keys: set[str], topic: str = "orders.v1") -> list[tuple[str, str]]:
        """(key, event id header) of each record of ``topic`` with one of ``keys``."""
        return [(key, dict(m.headers() or [])["id"].decode())
                for t, m, _ in list(self.records)
                if t == topic and (key := (m.key() or b"").decode()) in keys]  # fmt: skip

    def wait_for_all(self, written: dict[str, list[dict]]) -> None:
        """Until a record of every event of ``written`` (key -> events) has arrived."""
        ids = {e["event_id"] for events in written.values() for e in events}
        wait_for("a record of every row", lambda: ids <= {i for _, i in self.of(set(written))})

    def arrived(self, key: str, topic: str = "orders.v1") -> float | None:
        """When the first record of ``key`` on ``topic`` arrived, if it did."""
        return next((at for t, m, at in list(self.records)
                     if t == topic and m.key() == key.encode()), None)  # fmt: skip


def first_seen(records: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Per key the event ids in the order they first appear (a re-sent record repeats one)."""
    order_of: dict[str, list[str]] = {}
    for key, event_id in records:
        seen = order_of.setdefault(key, [])
        if event_id not in seen:
            seen.append(event_id)
    return order_of


def events_counted(worker: Worker) -> dict[str, float]:
    """The worker's ``keel_events_total`` of orders.v1 by outcome."""
    status, text = worker.get("/metrics")
    assert status == 200, text
    return {outcome: metric_value(text, "keel_events_total", topic="orders.v1", outcome=outcome)
            for outcome in ("applied", "duplicate", "held", "dead_letter")}  # fmt: skip


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    """What changed between two :func:`events_counted`, zeros left out."""
    return {k: int(after[k] - before[k]) for k in after if after[k] != before[k]}


def counted_until(worker: Worker, before: dict[str, float], applied: int, again: int,
                  timeout: float = 60) -> None:  # fmt: skip
    """Wait until the worker, since ``before``, applied exactly ``applied`` orders.v1 events
    and absorbed at least ``again`` as duplicates (records an earlier test left uncommitted
    in Connect may be sent again too), and nothing else."""
    deadline = time.monotonic() + timeout
    while True:
        counted = delta(before, events_counted(worker))
        if counted.get("applied") == applied and counted.get("duplicate", 0) >= again:
            assert set(counted) <= {"applied", "duplicate"}, counted
            return
        assert time.monotonic() < deadline, (
            f"the worker counted {counted}: {applied} applied and {again}+ duplicates expected"
        )
        time.sleep(0.5)


def wait_for_states(worker: Worker, expected: dict[str, dict[str, str]], timeout: float) -> None:
    """Every customer's orders with exactly the expected statuses, each order once."""
    def done() -> bool:
        for cid, statuses in expected.items():
            status, state = worker.get(f"/customers/{cid}")
            if status != 200:
                return False
            if {o["order_id"]: o["status"] for o in state["orders"]} != statuses:
                return False
            assert len(state["orders"]) == len(statuses), state["orders"]
        return True

    wait_for("every customer's state", done, timeout, interval=0.5)


def percentiles(samples: list[float]) -> str:
    ranked = sorted(samples)
    p99 = ranked[min(len(ranked) - 1, round(0.99 * len(ranked)))]
    return (f"p50 {statistics.median(ranked) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
            f"max {ranked[-1] * 1000:.0f} ms")  # fmt: skip


def launcher_log(tmp_path: Path) -> str:
    return (tmp_path / "make-run.log").read_text()


def desk_cancel(api: str, agent_token: str, customer_id: str, order_id: str) -> str:
    """A desk agent's CANCEL_ORDER of ``order_id``, accepted (202); its command id."""
    command_id = unique("cmd")
    body = {"command_id": command_id, "type": "CANCEL_ORDER", "order_id": order_id,
            "reason": "the customer asked"}  # fmt: skip
    request = urllib.request.Request(
        f"{api}/customers/{customer_id}/commands", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {agent_token}", "X-Keel-Agent": "rep-7",
                 "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status in (200, 202), resp.status
    return command_id


class ShippedConnect(Connect):
    """A Connect worker run with a shipped worker file (compose's or Kubernetes'), only what
    points at places adapted to this machine; its secrets come from ``env`` through the env
    config provider, as in a container."""

    def __init__(self, shipped: Path, base: Path, kafka: Kafka, ca: Path,
                 env: dict[str, str]) -> None:  # fmt: skip
        super().__init__(base, kafka.sasl_bootstrap, free_port(), log_file=base / "connect.log")
        self.shipped, self.ca, self.env = shipped, ca, env
        self.group = unique("keel-connect")

    def _properties(self, plugins: Path) -> str:
        here = {"bootstrap.servers": self.bootstrap, "plugin.path": str(plugins),
                "listeners": self.url, "rest.advertised.host.name": "127.0.0.1",
                "rest.advertised.port": str(self.port), "group.id": self.group}  # fmt: skip
        lines = []
        for line in self.shipped.read_text().splitlines():
            key, _, value = line.partition("=")
            if key in here:
                value = here[key]
            elif key.endswith("ssl.truststore.location"):
                value = str(self.ca)
            elif key.endswith("replication.factor"):
                value = "1"  # one broker here
            elif key.endswith(".storage.topic"):
                value = f"{self.group}-{key.split('.')[0]}"
            lines.append(f"{key}={value}" if _ else line)
        return "\n".join(lines) + "\n"

    def _popen_options(self) -> dict[str, Any]:
        return {"env": {**os.environ, **self.env}}
