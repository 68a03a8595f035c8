"""The worker's /metrics as an SRE's Prometheus sees it: names, types, labels, and movement.

Events go in through the input topics; what is checked is the scrape, and at the end a real
Prometheus (Debian's /usr/bin/prometheus) that scrapes the worker, evaluates keel's alert
rules on the live series and fires the dead-letter alert.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from deploy.local.process import Child
from deploy.local.stack import free_port
from tests.builders import order, shipment, unique
from tests.integration.harness import Departments, Worker, http_get, token, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "keel-alerts.yml"

# family name (as the parser reports it) -> (type, label names besides "le")
EXPECTED = {
    "keel_events": ("counter", {"topic", "outcome"}),
    "keel_event_freshness_seconds": ("histogram", {"source"}),
    "keel_source_lag_seconds": ("gauge", {"source"}),
    "keel_consumer_lag_records": ("gauge", {"topic", "partition"}),
    "keel_held_events": ("gauge", set()),
    "keel_customers": ("gauge", set()),
    "keel_signals_active": ("gauge", {"type"}),
    "keel_api_request_duration_seconds": ("histogram", {"route", "status"}),
    "keel_worker_ready": ("gauge", set()),
    "keel_rebalances": ("counter", set()),
    "keel_state_published": ("counter", set()),
}


def scrape(worker: Worker) -> dict[str, Any]:
    status, body = worker.get("/metrics")
    assert status == 200 and isinstance(body, str), (status, body)
    return {family.name: family for family in text_string_to_metric_families(body)}


def value(worker: Worker, sample: str, **labels: str) -> float | None:
    """The value of one sample (e.g. ``keel_events_total``) with exactly ``labels``."""
    for family in scrape(worker).values():
        for s in family.samples:
            if s.name == sample and {k: v for k, v in s.labels.items()} == labels:
                return float(s.value)
    return None


def summed(worker: Worker, sample: str, **labels: str) -> float:
    """The sum of ``sample`` over every series whose labels include ``labels``."""
    return sum(
        float(s.value)
        for family in scrape(worker).values()
        for s in family.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


def now_ms() -> int:
    return int(time.time() * 1000)


def test_every_metric_has_its_type_labels_and_help(worker: Worker) -> None:
    assert worker.get("/customers/no-such-customer-metrics")[0] == 404  # an API sample

    def measured() -> dict[str, Any] | None:
        families = scrape(worker)
        lag = families.get("keel_consumer_lag_records")
        return families if "keel_customers" in families and lag and lag.samples else None

    families = wait_for("the census and consumer-lag measurements", measured, timeout=40)
    for name, (kind, labels) in EXPECTED.items():
        assert name in families, f"{name} missing from /metrics"
        family = families[name]
        assert family.type == kind, (name, family.type)
        assert len(family.documentation) > 40, f"{name} needs a help text that explains it"
        for s in family.samples:
            assert set(s.labels) - {"le"} == labels, (name, s.labels)
    # Series that must exist from the start, so increase() sees their first change.
    topics = {s.labels["topic"] for s in families["keel_events"].samples}
    assert {"orders.v1", "shipments.v1", "contacts.v1"} <= topics
    assert {s.labels["type"] for s in families["keel_signals_active"].samples} >= {
        "SHIPMENT_LATE",
        "DUPLICATE_ORDER",
    }
    assert value(worker, "keel_worker_ready") == 1.0


def test_the_exposition_passes_promtool_lint(worker: Worker) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: apt-get install prometheus (make deps does)"
    status, body = worker.get("/metrics")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body.encode(), capture_output=True, timeout=30
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


def test_applied_and_held_events_move_counters_freshness_and_lag(
    worker: Worker, departments: Departments
) -> None:
    applied = value(worker, "keel_events_total", topic="orders.v1", outcome="applied") or 0
    held = value(worker, "keel_events_total", topic="shipments.v1", outcome="held") or 0
    fresh = summed(worker, "keel_event_freshness_seconds_count")
    within_10s = summed(worker, "keel_event_freshness_seconds_bucket", le="10.0")
    published = value(worker, "keel_state_published_total") or 0
    [customers] = wait_for(
        "a first table census",
        lambda: [n] if (n := value(worker, "keel_customers")) is not None else None,
        timeout=40,
    )
    duplicates = value(worker, "keel_signals_active", type="DUPLICATE_ORDER") or 0

    # A shipment before its order is held; the order then releases it.
    cid, oid = unique("c"), unique("o")
    departments.send([shipment(oid, unique("s"), "DISPATCHED", now_ms() - 1000)])
    wait_for(
        "the shipment counted as held",
        lambda: (
            (value(worker, "keel_events_total", topic="shipments.v1", outcome="held") or 0) > held
        ),
    )
    held_now = value(worker, "keel_held_events") or 0
    assert held_now >= 1
    departments.send([order(cid, oid, at=now_ms() - 2000)])

    def moved() -> bool:
        return (
            (value(worker, "keel_events_total", topic="orders.v1", outcome="applied") or 0)
            > applied
            and summed(worker, "keel_event_freshness_seconds_count") >= fresh + 2
            and (value(worker, "keel_state_published_total") or 0) >= published + 2
        )

    wait_for("applied events in the counters", moved)
    # Both happened seconds ago: both observations fall within 10 s.
    assert summed(worker, "keel_event_freshness_seconds_bucket", le="10.0") >= within_10s + 2
    # labelled by source: the order (webshop) and the shipment (its carrier) each once at least
    assert summed(worker, "keel_event_freshness_seconds_count", source="webshop") >= 1
    lag = value(worker, "keel_source_lag_seconds", source="webshop")
    assert lag is not None and 0 <= lag < 60, lag
    status, state = worker.get(f"/customers/{cid}")
    assert status == 200 and state["orders"][0]["shipments"], state
    # The held shipment was released.
    assert value(worker, "keel_held_events") == held_now - 1

    # A customer ordering the same basket twice within minutes gets a DUPLICATE_ORDER; the
    # next table census counts both new customers and the signal.
    twice = unique("c")
    departments.send(
        [order(twice, unique("o"), at=now_ms() - 60_000), order(twice, unique("o"), at=now_ms())]
    )

    def counted() -> bool:
        return (value(worker, "keel_customers") or 0) >= customers + 2 and (
            value(worker, "keel_signals_active", type="DUPLICATE_ORDER") or 0
        ) >= duplicates + 1

    wait_for("the census to count the customers and the signal", counted, timeout=40)


def test_a_garbage_record_counts_as_a_dead_letter(worker: Worker, departments: Departments) -> None:
    before = value(worker, "keel_events_total", topic="orders.v1", outcome="dead_letter")
    assert before is not None, "dead_letter series must exist before the first dead letter"
    departments.send_raw("orders.v1", b"c-garbage", b"\x00\x01 this is not Avro")
    wait_for(
        "the dead letter counted",
        lambda: (
            (value(worker, "keel_events_total", topic="orders.v1", outcome="dead_letter") or 0)
            >= before + 1
        ),
    )


def test_api_requests_are_timed_by_route_template(worker: Worker) -> None:
    cid = unique("c-unknown")
    route = "/customers/{customer_id}"
    before = value(worker, "keel_api_request_duration_seconds_count", route=route, status="404")
    assert worker.get(f"/customers/{cid}")[0] == 404
    after = value(worker, "keel_api_request_duration_seconds_count", route=route, status="404")
    assert after is not None and after >= (before or 0) + 1
    body = worker.get("/metrics")[1]
    assert cid not in body, "the raw path must not become a label value"
    assert (
        value(worker, "keel_api_request_duration_seconds_count", route="/readyz", status="200") or 0
    ) >= 1


# ----------------------------------------------------------------------- a real Prometheus


@pytest.fixture
def prometheus(worker: Worker, tmp_path: Path) -> Iterator[str]:
    """Prometheus scraping the session worker every second, with keel's alert rules."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus not found: apt-get install prometheus (make deps does)"
    port = free_port()
    config = tmp_path / "prometheus.yml"
    credentials = tmp_path / "metrics-token"  # how an operator hands Prometheus the token
    credentials.write_text(token("metrics"))
    credentials.chmod(0o600)
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{ALERTS}']\n"
        "scrape_configs:\n"
        "  - job_name: keel-worker\n"
        f"    authorization: {{type: Bearer, credentials_file: '{credentials}'}}\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{worker.port}']}}]\n"
    )
    prometheus = Child("prometheus", tmp_path / "prometheus.log")
    prometheus.start(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
    )
    url = f"http://127.0.0.1:{port}"
    try:
        ready = time.monotonic() + 30
        prometheus.wait_ready(lambda: http_get(f"{url}/-/ready", timeout=2)[0] == 200, ready, 0.2)
        yield url
    finally:
        prometheus.stop(20)


def query(url: str, promql: str) -> list[dict]:
    status, body = http_get(f"{url}/api/v1/query?query={urllib.parse.quote(promql)}")
    assert status == 200, body
    return body["data"]["result"]  # type: ignore[no-any-return]


def test_prometheus_scrapes_the_worker_and_fires_the_dead_letter_alert(
    prometheus: str, worker: Worker, departments: Departments
) -> None:
    first = wait_for(
        "keel_events_total in Prometheus",
        lambda: query(prometheus, "sum(keel_events_total)"),
        timeout=30,
    )
    start = float(first[0]["value"][1])
    assert query(prometheus, 'up{job="keel-worker"}')[0]["value"][1] == "1"

    departments.send([order(unique("c"), unique("o"), at=now_ms())])
    departments.send_raw("orders.v1", b"c-prom", b"not avro either")

    wait_for(
        "keel_events_total rising in Prometheus",
        lambda: float(query(prometheus, "sum(keel_events_total)")[0]["value"][1]) >= start + 2,
        timeout=30,
    )

    def dead_letter_alert() -> dict | None:
        status, body = http_get(f"{prometheus}/api/v1/alerts")
        alerts = body["data"]["alerts"] if status == 200 else []
        return next(
            (
                a
                for a in alerts
                if a["labels"]["alertname"] == "KeelDeadLetters" and a["state"] == "firing"
            ),
            None,
        )

    alert = wait_for("KeelDeadLetters firing", dead_letter_alert, timeout=30)
    assert alert["labels"]["topic"] == "orders.v1"
    assert "keel deadletters list" in alert["annotations"]["description"]

    # Every rule evaluates cleanly against the worker's real series.
    status, body = http_get(f"{prometheus}/api/v1/rules")
    rules = [r for g in body["data"]["groups"] for r in g["rules"]]
    assert len(rules) >= 6
    assert all(r["health"] == "ok" for r in rules), json.dumps(rules, indent=1)[:2000]
