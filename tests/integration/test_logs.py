"""A worker's log, as a log shipper and a data-protection officer would read it.

With ``KEEL_LOG_FORMAT=json`` every line is one JSON object; and whatever the format, a
worker logging at INFO writes no customer PII (names, e-mails, phones, notes) while it joins
a customer's orders, parcels and contacts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from deploy.local.stack import Kafka, free_port
from tests.builders import contact, order, shipment, unique
from tests.integration.harness import ROOT, Departments, Worker, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def json_worker(kafka: Kafka, tmp_path: Path) -> Iterator[Worker]:
    w = Worker(
        kafka.bootstrap,
        tmp_path / "data",
        free_port(),
        tmp_path / "worker.log",
        KEEL_APP_ID=unique("keel-logs"),
        KEEL_LOG_FORMAT="json",
        KEEL_LOG_LEVEL="info",
    )
    w.start()
    try:
        yield w
    finally:
        w.stop()


def test_json_log_lines_carry_no_customer_pii(
    json_worker: Worker, departments: Departments
) -> None:
    cid, oid, tag = unique("c"), unique("o"), unique("x")[2:]
    digits = str(int(tag, 16))[-7:].rjust(7, "0")
    name = f"Zelda Quistorp {tag}"
    email = f"Zelda.Quistorp.{tag}@Example.org"
    phone = f"+49 151 {digits}"
    notes = [f"customer says the parcel {tag} was wet", f"called back about {tag} refund"]
    at = int(time.time() * 1000)
    departments.send(
        [
            contact(unique("k"), at=at, email=email, note=notes[0], agent=f"agent {tag}"),
            order(cid, oid, at=at + 1, email=email, phone=phone, name=name),
            shipment(oid, unique("s"), "DELAYED", at + 2, note=notes[1]),
            contact(unique("k"), at=at + 3, phone=phone, note=notes[1], kind="COMPLAINT"),
        ]
    )

    def joined() -> dict | None:
        status, state = json_worker.get(f"/customers/{cid}")
        done = status == 200 and len(state["contacts"]) == 2 and state["orders"][0]["shipments"]
        return state if done else None

    state = wait_for("the customer joined", joined)
    assert state["name"] == name  # the PII did go through the worker
    # Lookups carry PII in the query string: not logged either.
    for query in (f"email={quote(email)}", f"phone={quote(phone)}"):
        status, found = json_worker.get(f"/customers?{query}")
        assert (status, found["customer_id"]) == (200, cid)

    text = json_worker.log_file.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) > 20, "the worker logged its start-up at INFO"
    for line in lines:
        entry = json.loads(line)  # every line is one JSON object
        assert {"ts", "level", "logger", "message"} <= entry.keys(), entry
        assert entry["ts"].endswith("Z")
    pii = [name, email, email.lower(), phone, phone.replace(" ", ""), digits, *notes]
    pii += [f"agent {tag}", "Quistorp"]
    leaked = [p for p in pii if p.lower() in text.lower()]
    assert not leaked, f"customer PII in the worker log: {leaked}"


def test_no_process_logs_customer_pii_in_a_full_run(kafka: Kafka, tmp_path: Path) -> None:
    """Worker, HTTP ingest, PostgreSQL outbox, Redis sink and the CLI at INFO, fed good and
    bad events full of PII (a rejected ingest request, a rejected outbox row, a dead letter):
    not one of their log lines carries a name, e-mail, phone or note."""
    import psycopg

    from deploy.local.postgres import Postgres
    from deploy.local.stack import Redis
    from tests.integration.connectors_harness import ConnectorProcess, post
    from tests.integration.test_connectors import as_json

    tag = unique("x")[2:]
    digits = str(int(tag, 16))[-7:].rjust(7, "0")
    name, email = f"Ottilie Brannigan {tag}", f"Ottilie.B.{tag}@Example.net"
    phone = f"+49 152 {digits}"
    notes = [f"left at the back door {tag}", f"wants a callback {tag}"]
    pii = [name, "Brannigan", email, email.lower(), phone, phone.replace(" ", ""), digits, *notes]
    app_id = unique("pii")
    topics = {
        "KEEL_APP_ID": app_id,
        "KEEL_TOPIC_ORDERS": f"{app_id}.orders",
        "KEEL_TOPIC_SHIPMENTS": f"{app_id}.shipments",
        "KEEL_TOPIC_CONTACTS": f"{app_id}.contacts",
        "KEEL_TOPIC_STATE": f"{app_id}.state",
        "KEEL_TOPIC_DEADLETTER": f"{app_id}.deadletter",
        "KAFKA_BOOTSTRAP": kafka.bootstrap,
        "KEEL_LOG_LEVEL": "info",
    }
    pg_dir = Path(tempfile.mkdtemp(prefix="keel-pg-"))
    postgres = Postgres(pg_dir, port=free_port())
    redis_server = Redis(tmp_path / "redis", free_port(), tmp_path / "redis.log")
    worker = Worker(kafka.bootstrap, tmp_path / "data", free_port(), tmp_path / "worker.log",
                    **topics)  # fmt: skip
    ports = {name_: free_port() for name_ in ("ingest", "outbox", "sink")}
    processes = [
        ConnectorProcess("connectors.sources.http_ingest", ports["ingest"],
                         tmp_path / "ingest.log", KEEL_INGEST_PORT=str(ports["ingest"]), **topics),
        ConnectorProcess("connectors.sources.postgres_outbox", ports["outbox"],
                         tmp_path / "outbox.log", KEEL_OUTBOX_PORT=str(ports["outbox"]),
                         POSTGRES_URL=postgres.url, KEEL_OUTBOX_POLL_MS="50", **topics),
        ConnectorProcess("connectors.sinks.redis", ports["sink"], tmp_path / "sink.log",
                         KEEL_REDIS_SINK_PORT=str(ports["sink"]), REDIS_URL=redis_server.url,
                         KEEL_REDIS_SINK_GROUP=unique("g"), **topics),
    ]  # fmt: skip
    ingest, outbox, sink = processes
    try:
        postgres.start()
        redis_server.start()
        worker.start()
        for process in processes:
            process.start(timeout=60)
        wait_for("the outbox leading", lambda: outbox.health()["role"] == "leader", 60)
        cid, oid = unique("c"), unique("o")
        at = int(time.time() * 1000)
        placed = as_json(order(cid, oid, at=at, email=email, phone=phone, name=name))
        assert post(f"{ingest.url}/events/orders", json.dumps(placed).encode())[0] == 202
        # a request the ingest refuses, with PII in the field it names
        bad = {**placed, "event_id": unique("e"), "placed_at": f"not a time {email}"}
        assert post(f"{ingest.url}/events/orders", json.dumps(bad).encode())[0] == 400
        wet = as_json(shipment(oid, unique("s"), "DELAYED", at + 1, note=notes[0]))
        said = as_json(contact(unique("k"), at=at + 2, phone=phone, note=notes[1]))
        broken = {**said, "event_id": unique("e"), "contact_id": "", "note": notes[1]}
        with psycopg.connect(postgres.url) as conn:
            for topic, key, payload in (
                (topics["KEEL_TOPIC_SHIPMENTS"], oid, wet),
                (topics["KEEL_TOPIC_CONTACTS"], said["contact_id"], said),
                (topics["KEEL_TOPIC_CONTACTS"], "k-broken", broken),  # moved aside
            ):
                conn.execute(
                    "INSERT INTO keel_outbox(topic, key, payload) VALUES (%s, %s, %s)",
                    (topic, key, json.dumps(payload)),
                )
        # a record the worker dead-letters: readable text full of PII, not Avro
        Departments(kafka.bootstrap).send_raw(
            topics["KEEL_TOPIC_ORDERS"], cid.encode(), f"{name} {email} {phone}".encode()
        )

        def joined() -> dict | None:
            status, state = worker.get(f"/customers/{cid}")
            done = status == 200 and state["contacts"] and state["orders"][0]["shipments"]
            return state if done else None

        assert wait_for("the customer joined", joined, 120)["name"] == name  # PII went through

        def rejected_rows() -> int | None:
            with psycopg.connect(postgres.url) as conn:
                left = conn.execute("SELECT count(*) FROM keel_outbox").fetchone()
                aside = conn.execute("SELECT count(*) FROM keel_outbox_rejected").fetchone()
            return aside[0] if left == (0,) and aside else None

        assert wait_for("the broken row moved aside", rejected_rows, 60) == 1
        client = redis.Redis.from_url(redis_server.url)
        in_redis = wait_for("the state in Redis", lambda: client.get(f"keel:customer:{cid}"), 60)
        assert email.lower().encode() in in_redis.lower()
        for query in (f"email={quote(email)}", f"phone={quote(phone)}"):
            assert worker.get(f"/customers?{query}")[0] == 200
        cli = subprocess.run(
            [sys.executable, "-m", "streams", "deadletters", "list"],
            cwd=ROOT, env={**os.environ, **topics}, capture_output=True, timeout=120, check=False,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert b"1 dead letter(s)" in cli.stdout, cli.stdout
    finally:
        for process in reversed(processes):
            process.stop()
        worker.stop()
        redis_server.stop()
        postgres.stop()
        shutil.rmtree(pg_dir, ignore_errors=True)
    logs = {p.log_file.name: p.log_file.read_text() for p in processes}
    logs["worker.log"] = worker.log_file.read_text()
    logs["cli (stderr)"] = cli.stderr.decode(errors="replace")
    leaked = {
        log: [p for p in pii if p.lower() in text.lower()] for log, text in logs.items()
    }
    leaked = {log: found for log, found in leaked.items() if found}
    assert not leaked, f"customer PII in the logs: {leaked}"
    lines = sum(len(text.splitlines()) for text in logs.values())
    print(f"\nPII scan: {lines} log lines of {len(logs)} processes, 0 with PII")
