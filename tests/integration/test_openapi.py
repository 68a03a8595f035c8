"""schemathesis against the worker's /openapi.json with each role's token, and against each
connector's status port: every answer is the one the document promises, bad input is a 4xx and
never a 5xx. (The HTTP ingest's run is in test_connectors.py, beside its other tests.)

One worker (its topics and a directory database of its own) serves every run; each run takes
the token of one role — read (the query API), agent (commands, assignments, announcements),
admin (erasure, the dead-letter queue) — so each operation is fuzzed once with the role it
needs and answered 403 for the others. The desk's live streams (text/event-stream) are read
up to their first event (tests/integration/schemathesis_run.py), which is checked against the
documented event, its ``data`` against the ``contentSchema`` (CustomerState for a ``state``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.local.postgres import Postgres
from deploy.local.stack import Kafka, Redis, free_port
from tests.builders import contact, order, shipment, unique
from tests.integration import schemathesis_run
from tests.integration.connectors_harness import Processes, fresh_database
from tests.integration.harness import (
    EVERY_TOPIC,
    TOPIC,
    Departments,
    Worker,
    customer_when,
    own_topics,
    token,
    wait_for,
)

EXAMPLES = 10
"""Fuzzed cases per operation and role, on top of the examples and coverage phases' own."""


@dataclass(frozen=True)
class ApiWorker:
    """The worker of this module, and ids it knows: schemathesis draws path parameters and
    body fields from them half of the time, so answers with data are checked too (a state
    with orders, parcels, contacts and linked accounts; an unmatched contact)."""

    worker: Worker
    known: dict[str, list[str]]

    def config(self) -> str:
        """schemathesis.toml: the known ids as dictionaries bound to their parameters."""
        lines = []
        for name, values in self.known.items():
            lines.append(f"[dictionaries.{name}]\nvalues = {json.dumps(values)}\n")
        lines.append("[parameters]")
        for binding, name in BINDINGS.items():
            lines.append(f'"{binding}" = {{ dictionary = "{name}", probability = 0.5 }}')
        return "\n".join(lines) + "\n"


BINDINGS = {
    "path.customer_id": "customers",
    "path.contact_id": "unmatched",
    "body.order_id": "orders",
    "body.contact_id": "contacts",
    "body.customer_id": "customers",
    "query.topic": "topics",
}


@pytest.fixture(scope="module")
def api_worker(
    kafka: Kafka, postgres_server: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiWorker]:
    base: Path = tmp_path_factory.mktemp("openapi-worker")
    app_id = unique("keel-openapi")
    topics = own_topics(app_id, EVERY_TOPIC)
    worker = Worker(kafka.bootstrap, base / "data", free_port(), base / "worker.log",
                    KEEL_APP_ID=app_id, KEEL_DIRECTORY_URL=fresh_database(postgres_server),
                    **topics)  # fmt: skip
    departments = Departments(kafka.bootstrap)
    departments.topics = {kind: topics[f"KEEL_TOPIC_{kind.upper()}S"] for kind in TOPIC}
    try:
        worker.start()
        yield ApiWorker(worker, seed(worker, departments))
    finally:
        worker.stop()


def seed(worker: Worker, departments: Departments) -> dict[str, list[str]]:
    """Two customers linked by a phone number, with an order, a parcel and a complaint each,
    and a contact through that phone (unmatched); their ids once the worker shows them."""
    now = int(time.time() * 1000)
    phone = f"+4930{now % 10**7:07d}"
    first, second = unique("c"), unique("c")
    orders, contacts = [unique("o"), unique("o")], [unique("k"), unique("k")]
    stray = unique("k")
    events = []
    for customer, order_id, contact_id in zip((first, second), orders, contacts, strict=True):
        events += [
            order(customer, order_id, "PLACED", now - 60_000, email=f"{customer}@example.com",
                  phone=phone),
            shipment(order_id, unique("s"), "DISPATCHED", now - 50_000,
                     expected_by=now - 40_000),
            contact(contact_id, "OPENED", now - 30_000, customer_id=customer, order_id=order_id,
                    kind="COMPLAINT", topic="delivery", note="the parcel is late"),
        ]  # fmt: skip
    # through the phone both share: it could be either, so it waits for an agent
    events.append(contact(stray, "OPENED", now - 20_000, phone=phone, channel="CHAT",
                          note="where is my parcel?"))  # fmt: skip
    departments.send(events)
    customer_when(worker, first, lambda state: state["linked"] and state["contacts"])
    customer_when(worker, second, lambda state: state["contacts"])
    wait_for("the stray contact unmatched", lambda: stray in str(worker.get("/unmatched")[1]))
    return {"customers": [first, second], "orders": orders, "contacts": contacts,
            "unmatched": [stray], "topics": ["delivery"]}  # fmt: skip


@pytest.mark.parametrize("role", ["read", "agent", "admin"])
def test_schemathesis_with_all_checks_passes_against_the_workers_openapi(
    api_worker: ApiWorker, role: str, tmp_path: Path
) -> None:
    worker = api_worker.worker
    totals = schemathesis_run.run(
        worker.url, tmp_path, EXAMPLES, 2025, f"Authorization: Bearer {token(role)}",
        "X-Keel-Agent: rep-fuzz", config=api_worker.config(),
    )  # fmt: skip
    print(f"worker as {role}: {totals.operations} operations, {totals.cases} cases, "
          f"{totals.failures} failures in {totals.seconds:.0f}s")  # fmt: skip
    status, document = worker.get("/openapi.json", role=None)
    operations = sum(len(methods) for methods in document["paths"].values())
    # all but GET /openapi.json itself, which schemathesis leaves out of the run
    assert status == 200 and totals.operations == operations - 1, totals.output[-3000:]
    assert worker.get("/readyz")[0] == 200, worker.tail()
    # the known ids took the requests past the 404s: answers with data were checked too
    first = api_worker.known["customers"][0]
    reached = {
        "read": [("GET", 200, f"/customers/{first}", "include=linked"),
                 ("GET", 200, f"/desk/customers/{first}/events")],
        "agent": [("POST", 202, "/commands"), ("POST", 202, "/unmatched/")],
        "admin": [("DELETE", 202, f"/customers/{first}")],
    }[role]  # fmt: skip
    for method, status, *parts in reached:
        assert totals.answered(method, status, *parts), (method, status, parts)


#: connector module, its status port variable, what else it needs (filled in by the test)
STATUS_PORTS = {
    "redis-sink": ("connectors.sinks.redis", "KEEL_REDIS_SINK_PORT"),
    "outbox": ("connectors.sources.postgres_outbox", "KEEL_OUTBOX_PORT"),
    "inbox": ("connectors.sinks.postgres_inbox", "KEEL_INBOX_PORT"),
    "webhook": ("connectors.sinks.webhook", "KEEL_WEBHOOK_PORT"),
    "directory-sink": ("connectors.sinks.directory", "KEEL_DIRECTORY_SINK_PORT"),
}


@pytest.mark.parametrize("name", sorted(STATUS_PORTS))
def test_schemathesis_with_all_checks_passes_against_each_connectors_status_port(
    name: str, processes: Processes, redis_server: Redis, postgres_server: Postgres,
    tmp_path: Path,
) -> None:  # fmt: skip
    module, port_variable = STATUS_PORTS[name]
    app_id = unique(f"keel-{name}")
    database = fresh_database(postgres_server)
    connector = processes.start(
        module, port_variable, name, **own_topics(app_id, EVERY_TOPIC),
        REDIS_URL=redis_server.url, POSTGRES_URL=database, KEEL_DIRECTORY_URL=database,
        KEEL_WEBHOOK_URL=f"http://127.0.0.1:{free_port()}/nowhere",
        KEEL_WEBHOOK_SECRET="status-fuzz-secret",
        **{f"KEEL_{kind}_GROUP": unique(kind.lower())
           for kind in ("REDIS_SINK", "INBOX", "WEBHOOK", "DIRECTORY_SINK")},
    )  # fmt: skip
    totals = schemathesis_run.run(
        connector.url, tmp_path, EXAMPLES, 2025, f"Authorization: Bearer {token('metrics')}"
    )
    print(f"{name} status: {totals.operations} operations, {totals.cases} cases, "
          f"{totals.failures} failures in {totals.seconds:.0f}s")  # fmt: skip
    # /healthz and /metrics (schemathesis leaves the document's own route out)
    assert totals.operations == 2, totals.output[-3000:]
    assert connector.health()["status"] == "ok", connector.tail()
