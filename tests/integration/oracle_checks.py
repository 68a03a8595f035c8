"""Comparing a worker's API and customer-state topic with the oracle (tests/oracle.py).

Shared by the fault tests (tests/integration/test_faults.py, test_cluster.py): each runs a
worker on topics of its own (``own_worker``, ``departments_for``) and waits until what a desk
would read equals what the contract promises for the events sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy.local.stack import Kafka, KafkaCluster, free_port
from streams.encoding.codec import get_codec
from streams.encoding.jsonconv import from_json
from tests.integration.harness import Departments, Worker, read_topic, wait_for
from tests.oracle import content

Broker = Kafka | KafkaCluster  # a single node or a cluster: anything with a .bootstrap


def own_worker(kafka: Broker, tmp: Path, app_id: str, name: str, **env: str) -> Worker:
    topics: dict[str, str] = {
        "KEEL_TOPIC_ORDERS": f"{app_id}.orders",
        "KEEL_TOPIC_SHIPMENTS": f"{app_id}.shipments",
        "KEEL_TOPIC_CONTACTS": f"{app_id}.contacts",
        "KEEL_TOPIC_STATE": f"{app_id}.state",
        "KEEL_TOPIC_SIGNALS": f"{app_id}.signals",
        "KEEL_TOPIC_DEADLETTER": f"{app_id}.deadletter",
        "KEEL_TOPIC_ERASURES": f"{app_id}.erasures",
    }
    return Worker(
        kafka.bootstrap, tmp / "data", free_port(), tmp / f"{name}.log",
        KEEL_APP_ID=app_id, **topics, **env,
    )  # fmt: skip


def departments_for(kafka: Broker, app_id: str) -> Departments:
    departments = Departments(kafka.bootstrap)
    departments.topics = {
        "order": f"{app_id}.orders",
        "shipment": f"{app_id}.shipments",
        "contact": f"{app_id}.contacts",
    }
    return departments


def last_states(kafka: Broker, topic: str) -> dict[str, dict]:
    """Each customer's last record on the state topic, decoded."""
    codec = get_codec()
    last: dict[str, Any] = {}
    for msg in read_topic(kafka.bootstrap, topic, timeout=30):
        last[msg.key().decode()] = msg.value()
    return {k: codec.decode(v, "CustomerState") for k, v in last.items() if v is not None}


def mismatches(worker: Worker, expected: dict[str, dict]) -> list[str]:
    wrong = []
    for customer_id, view in expected.items():
        status, state = worker.get(f"/customers/{customer_id}")
        if status != 200 or content(from_json("CustomerState", state)) != content(view):
            wrong.append(customer_id)
    return wrong


def explain(worker: Worker, expected: dict[str, dict], wrong: list[str]) -> str:
    """What differs for the first few wrong customers (for the failure message)."""
    lines = [f"{len(wrong)} of {len(expected)} customers differ"]
    for cid in wrong[:3]:
        status, state = worker.get(f"/customers/{cid}")
        if status != 200:
            lines.append(f"{cid}: HTTP {status}")
            continue
        got, want = content(from_json("CustomerState", state)), content(expected[cid])
        for field in sorted(want):
            if got.get(field) != want[field]:
                lines.append(f"{cid}.{field}: got {got.get(field)!r}\n   want {want[field]!r}")
    return "\n".join(lines)


def settled(worker: Worker, expected: dict[str, dict], what: str, timeout: float) -> None:
    try:
        wait_for(what, lambda: not mismatches(worker, expected), timeout=timeout, interval=2.0)
    except AssertionError:
        wrong = mismatches(worker, expected)
        health = worker.get("/healthz")
        raise AssertionError(
            f"{what}: {explain(worker, expected, wrong)}\n/healthz: {health}\n"
            f"--- worker log (end) ---\n{worker.tail(40)}"
        ) from None


def topic_mismatches(kafka: Broker, topic: str, expected: dict[str, dict]) -> list[str]:
    published = last_states(kafka, topic)
    return [
        cid for cid, view in expected.items()
        if cid not in published or content(published[cid]) != content(view)
    ]  # fmt: skip
