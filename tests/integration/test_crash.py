"""Held events survive a crash: they live in changelog-backed tables, not in memory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from deploy.local.stack import Kafka, free_port
from tests.builders import T0, contact, order, shipment, unique
from tests.integration.harness import Departments, Worker, metric_value, wait_for

pytestmark = pytest.mark.integration

HOUR = 3_600_000


def committed_up_to_end(bootstrap: str, group: str, topics: list[str]) -> bool:
    """True when ``group`` has committed offsets at the end of every partition of ``topics``."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    from confluent_kafka import Consumer

    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{unique('g')}"})
    try:
        tps = []
        for topic in topics:
            meta = probe.list_topics(topic, timeout=10).topics[topic]
            tps += [TopicPartition(topic, p) for p in meta.partitions]
        ends = {
            (tp.topic, tp.partition): probe.get_watermark_offsets(tp, timeout=10)[1] for tp in tps
        }
    finally:
        probe.close()
    request = [ConsumerGroupTopicPartitions(group, tps)]
    result = admin.list_consumer_group_offsets(request)[group].result(timeout=10)
    committed = {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions}
    return all(end == 0 or committed.get(key, -1) >= end for key, end in ends.items())


def test_events_held_for_an_unknown_order_survive_sigkill_and_a_lost_disk(
    kafka: Kafka, tmp_path: Path
) -> None:
    app_id = unique("crash")
    data = tmp_path / "worker-data"
    topics = {
        "KEEL_TOPIC_ORDERS": f"{app_id}.orders",
        "KEEL_TOPIC_SHIPMENTS": f"{app_id}.ships",
        "KEEL_TOPIC_CONTACTS": f"{app_id}.contacts",
        "KEEL_TOPIC_STATE": f"{app_id}.state",
    }
    worker = Worker(
        kafka.bootstrap, data, free_port(), tmp_path / "worker.log", KEEL_APP_ID=app_id, **topics
    )
    worker.start()
    departments = Departments(kafka.bootstrap)
    departments.topics = {
        "order": topics["KEEL_TOPIC_ORDERS"],
        "shipment": topics["KEEL_TOPIC_SHIPMENTS"],
        "contact": topics["KEEL_TOPIC_CONTACTS"],
    }
    cid, oid = unique("c"), unique("o")
    try:
        departments.send(
            [
                shipment(oid, unique("s"), "OUT_FOR_DELIVERY", T0 + HOUR),
                contact(unique("k"), at=T0 + 2 * HOUR, order_id=oid, note="where is it?"),
            ]
        )
        wait_for(
            "both events held",
            lambda: (
                metric_value(worker.get("/metrics")[1], "keel_events_total", outcome="held") >= 2
            ),
        )
        wait_for(
            "input and internal offsets committed",
            lambda: committed_up_to_end(
                kafka.bootstrap,
                f"{app_id}-intake",  # the intake reads the input topics (streams/worker/intake.py)
                [topics["KEEL_TOPIC_SHIPMENTS"], topics["KEEL_TOPIC_CONTACTS"]],
            )
            and committed_up_to_end(
                kafka.bootstrap,
                app_id,
                [f"{app_id}-{ns}-refs" for ns in ("order", "contact")],
            ),
            timeout=60,
        )
    finally:
        worker.kill()

    shutil.rmtree(data)  # the disk is gone too: only the changelog topics remain
    restarted = Worker(
        kafka.bootstrap, data, free_port(), tmp_path / "worker2.log", KEEL_APP_ID=app_id, **topics
    )
    restarted.start()
    try:
        departments.send([order(cid, oid)])

        def complete() -> dict | None:
            status, state = restarted.get(f"/customers/{cid}")
            ok = status == 200 and state["contacts"] and state["orders"][0]["shipments"]
            return state if ok else None

        state = wait_for("held shipment and contact applied after the restart", complete)
        assert state["orders"][0]["shipments"][0]["status"] == "OUT_FOR_DELIVERY"
        assert state["contacts"][0]["notes"][0]["text"] == "where is it?"
        # the held events came back through keel's own restore (streams/worker/restore.py)
        assert f"changelog records of {app_id}-order-held-changelog" in (
            restarted.log_file.read_text()
        )
    finally:
        restarted.stop()
