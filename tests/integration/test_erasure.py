"""Erasure on request (issue #14 §2) on the real stack: worker, Kafka, Redis and its sink.

A customer with orders, a parcel and contacts is erased with ``DELETE /customers/{id}``
(admin token). Then: 404 by id, e-mail, phone and order; a tombstone on the state topic; its
Redis keys gone; none of its ids or identifiers in any RocksDB table of the worker; a restore
of the tables from their changelogs (empty data dir), a replay of every input topic from
offset 0, and a new deployment with empty tables replaying them bring nothing back; a new
order after the erasure starts a fresh state; and
``keel erase`` does the same from the command line. Prints how long the erasure took.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from rocksdict import AccessType, Options, Rdict

from deploy.local.stack import Kafka, Redis, free_port
from tests.builders import contact, order, shipment
from tests.integration.connectors_harness import ConnectorProcess
from tests.integration.harness import ROOT, Worker, bearer, metric_value, read_topic, wait_for
from tests.integration.oracle_checks import departments_for, own_worker

pytestmark = pytest.mark.integration

MIN = 60_000
ANN, BO = "c-ann", "c-bo"
EMAIL_ANN, PHONE_ANN = "ann.erase@example.com", "+4915199887766"
TRACES = [ANN.encode(), EMAIL_ANN.encode(), PHONE_ANN.encode(), b"o-ann-1", b"k-ann-1"]


def now_ms() -> int:
    return int(time.time() * 1000)


def histories(t0: int) -> list[tuple[str, dict]]:
    return [
        order(ANN, "o-ann-1", at=t0, email=EMAIL_ANN, phone=PHONE_ANN, name="Ann Erase"),
        shipment("o-ann-1", "s-ann-1", at=t0 + MIN),
        contact("k-ann-1", at=t0 + 2 * MIN, email=EMAIL_ANN, kind="COMPLAINT",
                note="This is Ann, where is my parcel?"),  # fmt: skip
        order(ANN, "o-ann-2", "PLACED", at=t0 + 3 * MIN),
        order(BO, "o-bo-1", at=t0, email="bo.keep@example.com"),
        shipment("o-bo-1", "s-bo-1", at=t0 + MIN),
    ]


def delete(url: str, body: dict[str, Any], role: str | None = "admin") -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="DELETE",
        headers={**bearer(role), "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def lookups(worker: Worker) -> dict[str, int]:
    paths = {
        "id": f"/customers/{ANN}",
        "email": f"/customers?email={EMAIL_ANN}",
        "phone": f"/customers?phone={PHONE_ANN.replace('+', '%2B')}",
        "order": "/customers?order_id=o-ann-1",
    }
    return {name: worker.get(path)[0] for name, path in paths.items()}


def table_traces(data_dir: Path) -> list[str]:
    """Every (table, trace) where a worker's RocksDB tables hold one of :data:`TRACES`."""
    found = []
    for db in sorted(data_dir.rglob("*.db")):
        if not db.is_dir():
            continue
        rd = Rdict(str(db), options=Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            for key, value in _raw_items(rd):
                blob = key + b"\0" + value
                found += [f"{db.name}: {t.decode()}" for t in TRACES if t in blob]
        finally:
            rd.close()
    return found


def _raw_items(rd: Rdict) -> Iterator[tuple[bytes, bytes]]:
    it = rd.iter()
    it.seek_to_first()
    while it.valid():
        yield bytes(it.key()), bytes(it.value())
        it.next()


@pytest.fixture(scope="module")
def stack(kafka: Kafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("erasure")
    app_id = f"erase-{uuid.uuid4().hex[:8]}"
    worker = own_worker(kafka, base, app_id, "worker", KEEL_HOLD_MAX_S=str(10 * 365 * 86_400))
    redis_server = Redis(base / "redis", port=free_port(), log_file=base / "redis.log")
    redis_server.start()
    port = free_port()
    sink = ConnectorProcess(
        "connectors.sinks.redis", port, base / "redis-sink.log",
        KAFKA_BOOTSTRAP=kafka.bootstrap, REDIS_URL=redis_server.url,
        KEEL_REDIS_SINK_PORT=str(port), KEEL_APP_ID=app_id,
        KEEL_TOPIC_STATE=f"{app_id}.state", KEEL_REDIS_SINK_GROUP=f"{app_id}-redis",
    )  # fmt: skip
    worker.start()
    sink.start()
    try:
        yield {"worker": worker, "app_id": app_id, "base": base, "sink": sink,
               "redis": redis.Redis.from_url(redis_server.url, decode_responses=True)}  # fmt: skip
    finally:
        sink.stop()
        worker.stop()
        redis_server.stop()


def reset_intake_to_zero(kafka: Kafka, app_id: str) -> int:
    """Point the worker's intake group at offset 0 of every input topic (the worker stopped):
    what an operator does to replay the departments' topics. Returns the partitions reset."""
    topics = [f"{app_id}.{t}" for t in ("orders", "shipments", "contacts", "erasures")]
    meta = AdminClient({"bootstrap.servers": kafka.bootstrap}).list_topics(timeout=10).topics
    tps = [TopicPartition(t, p, 0) for t in topics for p in meta[t].partitions]
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": f"{app_id}-intake",
                         "enable.auto.commit": False})  # fmt: skip
    try:
        wait_for("the intake group's offsets reset", lambda: _commit(consumer, tps), 60)
    finally:
        consumer.close()
    return len(tps)


def _commit(consumer: Consumer, tps: list[TopicPartition]) -> bool:
    try:
        consumer.commit(offsets=tps, asynchronous=False)
        return True
    except Exception:  # noqa: BLE001 - the old member's session may not have ended yet
        return False


def test_an_erased_customer_is_gone_everywhere_and_stays_gone(
    kafka: Kafka, stack: dict[str, Any]
) -> None:
    worker: Worker = stack["worker"]
    app_id, client = stack["app_id"], stack["redis"]
    departments = departments_for(kafka, app_id)
    t0 = now_ms() - 3_600_000
    departments.send(histories(t0))

    def ann_complete() -> bool:
        status, state = worker.get(f"/customers/{ANN}")
        return status == 200 and len(state["orders"]) == 2 and len(state["contacts"]) == 1 and (
            state["orders"][0]["shipments"] != [] or state["orders"][1]["shipments"] != []
        )

    wait_for("Ann's whole history applied", ann_complete, 60)
    wait_for("Bo applied", lambda: worker.get(f"/customers/{BO}")[0] == 200, 60)
    wait_for("Ann in Redis", lambda: client.get(f"keel:email:{EMAIL_ANN}") == ANN, 60)
    bo_before = worker.get(f"/customers/{BO}")[1]

    # --- refused without the admin role, then erased
    status, _ = delete(f"{worker.url}/customers/{ANN}", {"reason": "DSR-1"}, role="agent")
    assert status == 403
    status, answer = delete(f"{worker.url}/customers/{ANN}", {})
    assert status == 400 and "reason" in answer["error"]
    started = time.monotonic()
    status, answer = delete(f"{worker.url}/customers/{ANN}", {"reason": "DSR-2026-118"})
    assert status == 202 and answer["customer_id"] == ANN and answer["request_id"]
    wait_for("Ann gone by id, e-mail, phone and order",
             lambda: set(lookups(worker).values()) == {404}, 30, interval=0.05)  # fmt: skip
    erased_in = time.monotonic() - started
    print(f"\nerasure: DELETE to 404 by id, e-mail, phone and order in {erased_in:.2f} s")
    assert worker.get(f"/customers/{BO}")[1] == bo_before

    # --- a tombstone on the state topic, Redis keys gone, the request is the audit trail
    last = {m.key(): m.value() for m in read_topic(kafka.bootstrap, f"{app_id}.state", 30)}
    assert last[ANN.encode()] is None and last[BO.encode()] is not None
    redis_keys = [f"keel:customer:{ANN}", f"keel:email:{EMAIL_ANN}", f"keel:phone:{PHONE_ANN}",
                  "keel:order:o-ann-1", "keel:order:o-ann-2"]  # fmt: skip

    def redis_forgot() -> bool:
        return not any(client.exists(k) for k in redis_keys)

    wait_for("Ann's Redis keys deleted", redis_forgot, 30)
    assert client.get(f"keel:customer:{BO}") is not None
    audit = read_topic(kafka.bootstrap, f"{app_id}.erasures", 30)
    assert len(audit) == 1 and audit[0].key() == ANN.encode()
    status, text = worker.get("/metrics")
    assert metric_value(text, "keel_customers_erased_total") == 1

    # --- no trace in any table of the worker
    worker.stop()
    data_dir = Path(worker.env["KEEL_DATA_DIR"])
    assert list(data_dir.rglob("*.db")), "the worker's tables are where this test looks"
    assert table_traces(data_dir) == []

    # --- a restore from the changelogs (empty data dir) brings nothing back
    shutil.rmtree(data_dir)
    worker.start()
    wait_for("Bo restored", lambda: worker.get(f"/customers/{BO}")[1] == bo_before, 60)
    assert set(lookups(worker).values()) == {404}

    # --- nor does a replay of every input topic from offset 0
    worker.stop()
    assert reset_intake_to_zero(kafka, app_id) > 0
    worker.start()

    def replayed() -> float:
        text = worker.get("/metrics")[1]
        return metric_value(text, "keel_events_total", outcome="erased")

    wait_for("the replayed events of Ann dropped", lambda: replayed() >= 4, 60)
    wait_for("Bo settled", lambda: worker.get(f"/customers/{BO}")[1] == bo_before, 60)
    assert set(lookups(worker).values()) == {404}
    assert metric_value(worker.get("/metrics")[1], "keel_held_events") == 0

    # --- nor a new deployment (own app id, empty tables) replaying every topic from 0: its
    #     intake passes the erasure requests on before any event, so Ann never shows
    other = f"{app_id}-new"
    fresh_deployment = Worker(
        kafka.bootstrap, Path(worker.env["KEEL_DATA_DIR"]).parent / "new-data", free_port(),
        Path(worker.log_file).parent / "new-worker.log",
        **{**{k: v for k, v in worker.env.items() if k.startswith("KEEL_TOPIC_")},
           "KEEL_APP_ID": other, "KEEL_TOPIC_STATE": f"{other}.state",
           "KEEL_HOLD_MAX_S": worker.env["KEEL_HOLD_MAX_S"]},
    )  # fmt: skip
    fresh_deployment.start()
    try:
        def bo_replayed() -> bool:
            status, state = fresh_deployment.get(f"/customers/{BO}")
            return status == 200 and state["orders"] == bo_before["orders"]

        wait_for("Bo replayed by the new deployment", bo_replayed, 60)
        assert set(lookups(fresh_deployment).values()) == {404}
        shown = [m for m in read_topic(kafka.bootstrap, f"{other}.state", 30)
                 if m.key() == ANN.encode() and m.value() is not None]  # fmt: skip
        assert shown == [], "the new deployment published Ann's replayed state"
        # why: in Ann's partition of its customer-events the request comes before her events
        kinds = [message["kind"]
                 for m in read_topic(kafka.bootstrap, f"{other}-customer-events", 30)
                 for key, message in json.loads(m.value()) if key == ANN]  # fmt: skip
        assert kinds[0] == "erasure" and "order" in kinds, kinds
    finally:
        fresh_deployment.stop()

    # --- the person comes back: a new, empty state with only what happened since
    departments.send([order(ANN, "o-ann-9", at=now_ms(), email=EMAIL_ANN)])

    def fresh() -> dict | None:
        status, state = worker.get(f"/customers/{ANN}")
        return state if status == 200 else None

    state = wait_for("Ann's new state", fresh, 60)
    assert [o["order_id"] for o in state["orders"]] == ["o-ann-9"] and state["contacts"] == []

    # --- keel erase, from the command line
    run = subprocess.run(
        [sys.executable, "-m", "streams", "erase", BO, "--reason", "DSR-2026-119", "--by", "dpo"],
        cwd=ROOT, env=worker.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "erasure request" in run.stdout
    wait_for("Bo erased by keel erase", lambda: worker.get(f"/customers/{BO}")[0] == 404, 30)


def test_the_intake_passes_every_erasure_request_on_before_it_reads_anything_else(
    kafka: Kafka,
) -> None:
    """``Intake._erasures_first``, which the intake thread runs before it subscribes to any
    topic: every request in erasures.v1, from the beginning, lands on customer-events."""
    from confluent_kafka.admin import NewTopic

    from streams.app import settings as worker_settings
    from streams.config import Settings
    from streams.domain.erasure import build_request
    from streams.encoding.codec import get_codec
    from streams.kafka.producer import BaseProducer
    from streams.worker.intake import Intake

    tag = uuid.uuid4().hex[:8]
    settings = Settings.from_env({"KAFKA_BOOTSTRAP": kafka.bootstrap, "KEEL_APP_ID": tag,
                                  "KEEL_TOPIC_ERASURES": f"{tag}.erasures"})  # fmt: skip
    names = {"customer": f"{tag}-customer-events", "order": f"{tag}-order-refs"}
    intake = Intake(settings, names)
    producer = BaseProducer(kafka.bootstrap)
    assert intake._erasures_first(producer)  # no such topic yet: nothing to pass on
    # what the worker creates before its intake starts, with the partitions the join hashes to
    # (only this topic: the session's shared topics have the session worker's count)
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    created = admin.create_topics(
        [NewTopic(names["customer"], num_partitions=worker_settings.partitions)]
    )
    created[names["customer"]].result(timeout=30)
    requests = [build_request(f"c-{i}", "DSR", "dpo", now_ms()) for i in range(30)]
    codec = get_codec()
    departments_for(kafka, tag).send_raw(f"{tag}.erasures", b"c-x", b"not avro")  # skipped
    for r in requests:
        departments_for(kafka, tag).send_raw(
            f"{tag}.erasures", r["customer_id"].encode(), codec.encode("ErasureRequest", r)
        )
    assert intake._erasures_first(producer)
    passed = [message["event"]["request_id"]
              for m in read_topic(kafka.bootstrap, names["customer"], 30)
              for _, message in json.loads(m.value())]  # fmt: skip
    assert sorted(passed) == sorted(r["request_id"] for r in requests)
