"""schemathesis against the worker's /openapi.json with each role's token: every answer the
worker gives is the one the document promises, bad input is a 4xx and never a 5xx.

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
from deploy.local.stack import Kafka, free_port
from tests.builders import unique
from tests.integration import schemathesis_run
from tests.integration.connectors_harness import fresh_database
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
