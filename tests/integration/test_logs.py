"""A worker's log, as a log shipper and a data-protection officer would read it.

With ``KEEL_LOG_FORMAT=json`` every line is one JSON object; and whatever the format, a
worker logging at INFO writes no customer PII (names, e-mails, phones, notes) while it joins
a customer's orders, parcels and contacts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from deploy.local.stack import Kafka, free_port
from tests.builders import contact, order, shipment, unique
from tests.integration.harness import Departments, Worker, wait_for

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
