"""schemathesis against the worker's /openapi.json with each role's token, and against each
connector's status port: every answer is the one the document promises, bad input is a 4xx and
never a 5xx. (The HTTP ingest's run is in test_connectors.py, beside its other tests.)

One worker (its topics and a directory database of its own) serves every run; each run takes
the token of one role — read (the query API), agent (commands, assignments, announcements),
admin (erasure, the dead-letter queue) — so each operation is fuzzed once with the role it
needs and answered 403 for the others. The desk's live streams (text/event-stream) are read
up to their first event and checked against the event schema
(tests/integration/schemathesis_run.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local.postgres import Postgres
from deploy.local.stack import Kafka, Redis, free_port
from tests.builders import unique
from tests.integration import schemathesis_run
from tests.integration.connectors_harness import Processes, fresh_database
from tests.integration.harness import EVERY_TOPIC, Worker, own_topics, token

EXAMPLES = 10
"""Fuzzed cases per operation and role, on top of the examples and coverage phases' own."""


@pytest.fixture(scope="module")
def api_worker(
    kafka: Kafka, postgres_server: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    base: Path = tmp_path_factory.mktemp("openapi-worker")
    app_id = unique("keel-openapi")
    worker = Worker(kafka.bootstrap, base / "data", free_port(), base / "worker.log",
                    KEEL_APP_ID=app_id, KEEL_DIRECTORY_URL=fresh_database(postgres_server),
                    **own_topics(app_id, EVERY_TOPIC))  # fmt: skip
    try:
        worker.start()
        yield worker
    finally:
        worker.stop()


@pytest.mark.parametrize("role", ["read", "agent", "admin"])
def test_schemathesis_with_all_checks_passes_against_the_workers_openapi(
    api_worker: Worker, role: str, tmp_path: Path
) -> None:
    totals = schemathesis_run.run(
        api_worker.url, tmp_path, EXAMPLES, 2025, f"Authorization: Bearer {token(role)}",
        "X-Keel-Agent: rep-fuzz",
    )  # fmt: skip
    print(f"worker as {role}: {totals.operations} operations, {totals.cases} cases, "
          f"{totals.failures} failures in {totals.seconds:.0f}s")  # fmt: skip
    status, document = api_worker.get("/openapi.json", role=None)
    operations = sum(len(methods) for methods in document["paths"].values())
    # all but GET /openapi.json itself, which schemathesis leaves out of the run
    assert status == 200 and totals.operations == operations - 1, totals.output[-3000:]
    assert api_worker.get("/readyz")[0] == 200, api_worker.tail()


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
