"""Departments' databases through Debezium: rows committed in PostgreSQL become keel's state.

Real servers only: PostgreSQL (``wal_level=logical``), Kafka Connect in distributed mode with
Debezium's PostgreSQL connector and Outbox Event Router (jars from Maven Central, as
``make deps`` fetches them), the session's Kafka and keel worker. One Connect serves the
module; the web shop's and the shipping department's outboxes are each read by a connector of
their own. The tests check what a desk would read (the customer's state over the query API)
and what a subscriber would get (the records on the input topics, the dead letters).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import KafkaException

from connectors.demo.shop import cancel_event_id
from connectors.sources.debezium_outbox import OutboxRow, outbox_row, schema_sql
from deploy.local.connect import DEPARTMENTS, Connect, outbox_connector
from deploy.local.envfile import read_env
from deploy.local.postgres import Postgres
from deploy.local.process import Child
from deploy.local.stack import Kafka, free_port
from deploy.local.tls import Certificates
from streams.kafka.config import KafkaSecurity
from tests.builders import T0, order, shipment, unique
from tests.integration.cdc_harness import (
    HOUR,
    ShippedConnect,
    Tail,
    commit,
    counted_until,
    desk_cancel,
    events_counted,
    first_seen,
    interleaved,
    launcher_log,
    percentiles,
    stories,
    wait_for_states,
    write_through,
)
from tests.integration.harness import (
    ROOT,
    Worker,
    customer_when,
    read_topic,
    wait_for,
)
from tests.integration.secure import KAFKA_PASSWORD, KAFKA_USER, kafka_env
from tests.integration.test_make_targets import stack_env, target, wait_well

pytestmark = pytest.mark.integration

ROWS_MEASURED = 200  # rows of the latency measurement, one transaction each


@pytest.fixture(scope="module")
def department_db() -> Iterator[Postgres]:
    """The departments' PostgreSQL, restarted by one test (so not the shared one)."""
    base = Path(tempfile.mkdtemp(prefix="keel-cdc-pg-"))
    base.chmod(0o755)  # PostgreSQL runs as `postgres` when the tests run as root
    server = Postgres(base, port=free_port(), log_file=base / "postgres.log")
    server.start()
    try:
        with psycopg.connect(server.url, autocommit=True) as conn:
            for department in DEPARTMENTS:
                conn.execute(schema_sql(department))
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def connect(
    kafka: Kafka, department_db: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Connect]:
    """One Connect worker with a connector per department, RUNNING before the first test."""
    base = tmp_path_factory.mktemp("connect")
    # offsets committed every 10 s, not every second: a kill then surely finds rows sent but
    # not yet committed, which Connect sends again, so keel's deduplication is under test
    worker = Connect(base, kafka.bootstrap, port=free_port(), log_file=base / "connect.log",
                     group=unique("keel-connect"), offset_flush_ms=10_000)  # fmt: skip
    began = time.monotonic()
    worker.start()
    ready = time.monotonic()
    try:
        for department in DEPARTMENTS:
            worker.put_connector(*outbox_connector(department, department_db.url))
        for department in DEPARTMENTS:
            worker.wait_running(outbox_connector(department, department_db.url)[0])
        print(f"\nConnect ready in {ready - began:.1f} s, connectors running after "
              f"{time.monotonic() - began:.1f} s")  # fmt: skip
        yield worker
    finally:
        worker.stop()


def test_rows_of_one_transaction_become_events_in_order_for_both_departments(
    connect: Connect, department_db: Postgres, worker: Worker, kafka: Kafka
) -> None:
    cid, oid, sid = unique("c-cdc"), unique("o"), unique("s")
    orders = [order(cid, oid, kind, T0 + i * HOUR)[1]
              for i, kind in enumerate(("PLACED", "AMENDED", "COMPLETED"))]  # fmt: skip
    parcels = [shipment(oid, sid, kind, T0 + (i + 1) * HOUR)[1]
               for i, kind in enumerate(("CREATED", "DISPATCHED", "DELIVERED"))]  # fmt: skip
    with Tail(kafka, "orders.v1", "shipments.v1") as tail:
        commit(department_db.url, "webshop", [outbox_row("order", e) for e in orders])
        commit(department_db.url, "shipping", [outbox_row("shipment", e) for e in parcels])

        state = customer_when(
            worker, cid,
            lambda s: s["orders"] and s["orders"][0]["status"] == "COMPLETED"
            and s["orders"][0]["shipments"]
            and s["orders"][0]["shipments"][0]["status"] == "DELIVERED",
        )  # fmt: skip
    assert [o["order_id"] for o in state["orders"]] == [oid]
    assert first_seen(tail.of({cid})) == {cid: [e["event_id"] for e in orders]}
    assert first_seen(tail.of({oid}, "shipments.v1")) == {oid: [e["event_id"] for e in parcels]}


def test_connect_killed_mid_stream_every_row_reaches_the_state_once_in_key_order(
    connect: Connect, department_db: Postgres, worker: Worker, kafka: Kafka
) -> None:
    written, expected = stories(40)
    batches = interleaved(written, per_transaction=2)

    def kill_and_restart() -> None:
        wait_for("some rows through Connect", lambda: tail.of(set(written)), 60)
        connect.kill()
        time.sleep(1.0)  # rows keep coming while Connect is down
        connect.start()

    before = events_counted(worker)
    with Tail(kafka, "orders.v1") as tail:
        write_through(department_db.url, batches, kill_and_restart)
        wait_for_states(worker, expected, timeout=120)
        tail.wait_for_all(written)
    records = tail.of(set(written))
    order_of = first_seen(records)
    for cid, events in written.items():
        assert order_of[cid] == [e["event_id"] for e in events], cid
    rows = sum(len(events) for events in written.values())
    again = len(records) - rows
    assert again > 0, "rows sent but not committed before the kill are sent again"
    print(f"\n{rows} rows, {len(records)} records on orders.v1 ({again} sent again after the kill)")
    # every row applied once, every record sent again absorbed as a duplicate by its event_id
    counted_until(worker, before, applied=rows, again=again)


def test_postgres_restarted_mid_stream_nothing_is_lost(
    connect: Connect, department_db: Postgres, worker: Worker, kafka: Kafka
) -> None:
    written, expected = stories(20)

    def restart() -> None:
        department_db.stop()  # a fast shutdown: sessions and the replication connection cut
        time.sleep(1.0)
        department_db.start()

    before = events_counted(worker)
    with Tail(kafka, "orders.v1") as tail:
        writer = write_through(department_db.url, interleaved(written, per_transaction=1),
                               restart)  # fmt: skip
        assert writer.failures > 0, "the writer saw PostgreSQL go down"
        wait_for_states(worker, expected, timeout=150)
        tail.wait_for_all(written)
    records = tail.of(set(written))
    order_of = first_seen(records)
    for cid, events in written.items():
        assert order_of[cid] == [e["event_id"] for e in events], cid
    rows = sum(len(events) for events in written.values())
    counted_until(worker, before, applied=rows, again=len(records) - rows)


def test_a_row_keel_cannot_decode_is_a_dead_letter_with_its_reason(
    connect: Connect, department_db: Postgres, worker: Worker, kafka: Kafka
) -> None:
    cid, oid = unique("c-cdc"), unique("o")
    garbage = b"not avro: " + cid.encode()
    good = order(cid, oid)[1]
    with Tail(kafka, "deadletter.v1") as tail:
        commit(department_db.url, "webshop", [
            OutboxRow(unique("e"), "orders.v1", cid, garbage), outbox_row("order", good),
        ])  # fmt: skip
        dead = wait_for("the undecodable row's dead letter", lambda: next(
            (m for _, m, _ in list(tail.records) if m.value() == garbage), None), 60)  # fmt: skip
    headers = {k: v.decode() for k, v in dead.headers()}
    assert dead.key() == cid.encode()
    assert headers["x-source-topic"] == "orders.v1"
    assert headers["x-error"].strip()
    assert headers["x-error"].startswith("not Avro single-object encoding"), headers
    state = customer_when(worker, cid, lambda s: bool(s["orders"]))
    assert [o["order_id"] for o in state["orders"]] == [oid], "the good row behind it applies"


def test_row_to_state_latency(
    connect: Connect, department_db: Postgres, worker: Worker, kafka: Kafka
) -> None:
    """Rows committed one at a time → the record on orders.v1 → the order visible in the
    query API: p50/p99 printed for docs/connectors/debezium.md (a measurement, not a timed
    pass/fail)."""
    to_topic, to_state = [], []
    with Tail(kafka, "orders.v1") as tail:
        for _ in range(ROWS_MEASURED):
            cid, oid = unique("c-cdc"), unique("o")
            committed = commit(department_db.url, "webshop",
                               [outbox_row("order", order(cid, oid)[1])])  # fmt: skip

            def visible(cid: str = cid) -> bool:
                status, state = worker.get(f"/customers/{cid}")
                return status == 200 and bool(state["orders"])

            wait_for(f"{cid} visible", visible, 60, interval=0.005)
            to_state.append(time.time() - committed)
            to_topic.append(wait_for(f"{cid} on orders.v1", lambda c=cid: tail.arrived(c))
                            - committed)  # fmt: skip
    print(f"\nover {ROWS_MEASURED} rows, row committed -> record on orders.v1: "
          f"{percentiles(to_topic)}; -> state visible: {percentiles(to_state)}")
    assert len(to_state) == len(to_topic) == ROWS_MEASURED


def test_make_run_with_keel_cdc_debezium_plays_the_demo_and_the_desk_stories_through_it(
    tmp_path: Path,
) -> None:
    """`KEEL_CDC=debezium make run`: Connect instead of the poller, the demo's orders and
    parcels and the shop's cancellations through Debezium, and the desk's two cancel stories."""
    base = Path(tempfile.mkdtemp(prefix="keel-cdc-stack-"))
    base.chmod(0o755)  # PostgreSQL runs as `postgres`
    env = {**stack_env(base / "run"), "KEEL_CDC": "debezium", "KEEL_CONNECT_PORT": str(free_port())}
    launcher = Child("make run", tmp_path / "make-run.log")
    launcher.start([sys.executable, "-m", "deploy.local.run"], cwd=ROOT, env=env)
    try:
        status = wait_well(env)
        assert "keel: connect " in status and "/health 200" in status, status
        assert "postgres-outbox" not in status, "Debezium instead of the poller"
        wait_for("make run's ready", lambda: "keel: ready:" in launcher_log(tmp_path), 240, 1)
        api = f"http://127.0.0.1:{env['KEEL_API_PORT']}"
        tokens = read_env(base / "run" / "tokens.env")
        cancels = {"c-dup": "o-dup-2", "c-late": "o-late-1"}

        def state(cid: str) -> dict[str, Any]:
            request = urllib.request.Request(f"{api}/customers/{cid}", headers={
                "Authorization": f"Bearer {tokens['KEEL_READ_TOKEN']}"})  # fmt: skip
            with urllib.request.urlopen(request, timeout=10) as resp:
                return json.loads(resp.read())  # type: ignore[no-any-return]

        # "ready" means c-dup is known, not yet every order of the story: the agent cancels
        # an order the desk shows (a command for an order not in the state is a 404)
        def has_order(cid: str, oid: str) -> bool:
            try:
                return oid in {x["order_id"] for x in state(cid)["orders"]}
            except OSError:  # 404: not known yet; 503: a moment's rebalance
                return False

        for cid, oid in cancels.items():
            wait_for(f"{oid} in {cid}'s state", lambda c=cid, o=oid: has_order(c, o), 90, 1)
        commands = {cid: desk_cancel(api, tokens["KEEL_AGENT_TOKEN"], cid, oid)
                    for cid, oid in cancels.items()}  # fmt: skip

        wait_for("o-dup-2 cancelled", lambda: {o["order_id"]: o["status"] for o in
                 state("c-dup")["orders"]}.get("o-dup-2") == "CANCELLED", 90, 1)  # fmt: skip
        refused = wait_for("o-late-1's cancellation refused", lambda: next(
            (s for s in state("c-late")["signals"] if s["type"] == "COMMAND_FAILED"), None),
            90, 1)  # fmt: skip
        assert "already shipped" in refused["detail"], refused
        assert {o["order_id"]: o["status"] for o in state("c-late")["orders"]}["o-late-1"] \
            == "PLACED"  # fmt: skip

        postgres = f"postgresql://keel@127.0.0.1:{env['KEEL_POSTGRES_PORT']}/keel"
        with psycopg.connect(postgres) as conn:
            cancelled = conn.execute(
                "SELECT key FROM webshop.keel_outbox WHERE event_id = %s",
                (cancel_event_id(commands["c-dup"]),)).fetchall()  # fmt: skip
            parcels = conn.execute("SELECT count(*) FROM shipping.keel_outbox").fetchone()
            poller_rows = conn.execute("SELECT count(*) FROM keel_outbox").fetchone()
        assert cancelled == [("c-dup",)], "the shop's CANCELLED went through its outbox"
        assert parcels and parcels[0] > 0, "the demo's parcels went through shipping's outbox"
        assert poller_rows == (0,), "nothing for the poller"
    finally:
        target(env, "--down")
        launcher.stop(60)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("deployment", ["compose", "k8s"])
def test_the_shipped_connect_worker_and_connector_files_work_against_a_sasl_ssl_kafka(
    deployment: str, secure_kafka: Kafka, certs: Certificates, department_db: Postgres,
    tmp_path: Path,
) -> None:  # fmt: skip
    """deploy/compose/connect and deploy/k8s/debezium as shipped: the worker logs in to a
    SASL_SSL Kafka (PLAIN in compose, SCRAM-SHA-512 on Kubernetes), the connector JSON with its
    ``${env:…}`` references reads the web shop's outbox, a row arrives on orders.v1."""
    folder = ROOT / "deploy" / ("compose/connect" if deployment == "compose" else "k8s/debezium")
    db = urllib.parse.urlsplit(department_db.url)
    env = {"KAFKA_SASL_USERNAME": KAFKA_USER, "KAFKA_SASL_PASSWORD": KAFKA_PASSWORD,
           "POSTGRES_PASSWORD": "unused-with-trust", "POD_IP": "127.0.0.1",
           "KEEL_CDC_DATABASE_HOST": "127.0.0.1", "KEEL_CDC_DATABASE_PORT": str(db.port),
           "KEEL_CDC_DATABASE_USER": "keel", "KEEL_CDC_DATABASE_PASSWORD": "unused-with-trust",
           "KEEL_CDC_DATABASE_NAME": "keel"}  # fmt: skip
    worker = ShippedConnect(folder / "connect-distributed.properties", tmp_path, secure_kafka,
                            certs.ca, env)  # fmt: skip
    config = json.loads((folder / "keel-outbox-webshop.json").read_text())
    if deployment == "compose":  # its database is the service `postgres` on 5432
        config |= {"database.hostname": "127.0.0.1", "database.port": str(db.port)}
    slot = f"keel_{deployment}_{uuid.uuid4().hex[:8]}"  # the module's connector has keel_webshop
    config |= {"slot.name": slot, "publication.name": slot, "topic.prefix": slot}
    worker.start()
    try:
        worker.put_connector("keel-outbox-webshop", config)
        worker.wait_running("keel-outbox-webshop")
        cid = unique("c-cdc")
        event = order(cid, unique("o"))[1]
        commit(department_db.url, "webshop", [outbox_row("order", event)])
        security = KafkaSecurity.from_env(kafka_env(secure_kafka, certs))

        def arrived() -> list[Any]:
            try:
                records = read_topic(secure_kafka.sasl_bootstrap, "orders.v1", security=security)
            except KafkaException:  # orders.v1 being created by the connector's first record
                return []  # (its leaders not elected yet): look again
            return [m for m in records if m.key() == cid.encode()]

        found = wait_for("the row on the SASL_SSL Kafka's orders.v1", arrived, 60, interval=1)
        assert [dict(m.headers())["id"].decode() for m in found] == [event["event_id"]]
        assert found[0].value() == outbox_row("order", event).payload
    finally:
        worker.stop()
        with psycopg.connect(department_db.url, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
