"""Who may do what, on the real stack: 401 without a token, 403 with the wrong role, the right
role passes — on every HTTP surface: the worker's API, desk console and live stream, desk
commands, a request forwarded from one worker to another, the HTTP ingest and a connector's
status port. And no token in any log line.

The session's tokens (one per role, tests/integration/harness.py) are what every process
accepts; a client here sends them as a user who sourced .run/tokens.env would.
"""

from __future__ import annotations

import http.client
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from deploy.local.stack import Kafka, free_port
from streams.auth import hash_token
from streams.encoding.jsonconv import to_json
from tests.builders import contact, order, unique
from tests.integration.connectors_harness import ConnectorProcess, Processes, post
from tests.integration.harness import (
    TOPIC,
    Departments,
    Worker,
    bearer,
    token,
    wait_for,
)
from tests.integration.test_scale_out import (
    PARTITIONS,
    assigned_partitions,
    own_topics,
    partition_of,
)

pytestmark = pytest.mark.integration

ROLES = ("read", "write", "agent", "admin", "metrics")


def request(
    url: str,
    role: str | None = None,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, Any]:
    """(status, JSON or text body, headers) of one request with ``role``'s token (or none)."""
    sent = {**bearer(role), **(headers or {})}
    if body is not None:
        sent.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=body, headers=sent, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, raw, got = resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as exc:
        status, raw, got = exc.code, exc.read(), exc.headers
    try:
        return status, json.loads(raw), got
    except ValueError:
        return status, raw.decode(errors="replace"), got


def assert_refused(status: int, body: Any, headers: Any, expected: int) -> None:
    """keel's JSON error, with the challenge of RFC 6750."""
    assert status == expected, (status, body)
    assert isinstance(body, dict) and set(body) == {"error"} and body["error"], body
    assert headers["WWW-Authenticate"].startswith('Bearer realm="keel"'), headers
    assert headers["Content-Type"].startswith("application/json")


def only(role_ok: set[str], check: Any) -> None:
    """``check(role)`` for no token, an unknown token and every role: 401, 401, then 200
    for the roles in ``role_ok`` and 403 for the others."""
    check(None, 401)
    for role in ROLES:
        check(role, 200 if role in role_ok else 403)


def customer_when(worker: Worker, customer_id: str, ready: Any, timeout: float = 60) -> dict:
    def check() -> dict | None:
        status, body = worker.get(f"/customers/{customer_id}")
        return body if status == 200 and ready(body) else None

    return wait_for(f"state of {customer_id}", check, timeout)


def logged_tokens(*logs: Path) -> list[str]:
    text = "".join(p.read_text(errors="replace") for p in logs)
    return [role for role in ROLES if token(role) in text]


def sse_first_event(url: str, headers: dict[str, str]) -> tuple[int, str]:
    """(status, the first event's type) of the desk's live stream; the stream is then closed."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
    try:
        conn.request("GET", parts.path, headers={"Accept": "text/event-stream", **headers})
        resp = conn.getresponse()
        if resp.status != 200:
            return resp.status, json.loads(resp.read())["error"]
        while True:
            line = resp.readline().decode().strip()
            if line.startswith("event:"):
                return 200, line.removeprefix("event:").strip()
    finally:
        conn.close()


# -- one worker --------------------------------------------------------------------------------


def test_the_worker_api_desk_and_metrics_need_their_roles(
    worker: Worker, departments: Departments
) -> None:
    cid = unique("c")
    email = f"ada.{cid}@example.com"
    departments.send([order(cid, unique("o"), email=email)])
    customer_when(worker, cid, lambda s: bool(s["orders"]))
    by_email = f"{worker.url}/customers?email={quote(email)}"
    # the e-mail's owner is bound one batch after the state (a bind through its refs topic)
    wait_for("the e-mail lookup", lambda: request(by_email, "read")[0] == 200)

    def check_get(path: str) -> Any:
        def check(role: str | None, expected: int) -> None:
            status, body, headers = request(f"{worker.url}{path}", role)
            if expected == 200:
                assert status == 200, (path, role, status, body)
            else:
                assert_refused(status, body, headers, expected)

        return check

    only({"read", "agent"}, check_get(f"/customers/{cid}"))
    only({"read", "agent"}, check_get(f"/customers?email={quote(email)}"))
    only({"metrics"}, check_get("/metrics"))
    unknown = request(f"{worker.url}/customers/{cid}", headers={"Authorization": "Bearer nope"})
    assert_refused(*unknown, 401)
    basic = request(f"{worker.url}/customers/{cid}", headers={"Authorization": "Basic cmVhZA=="})
    assert_refused(*basic, 401)

    # What orchestrators probe, and the console's page (which then asks for a token), are open.
    for path in ("/healthz", "/readyz", "/desk/", "/desk/static/desk.js", "/desk/config.json"):
        assert request(f"{worker.url}{path}")[0] == 200, path
    # Any other path is not for strangers (faust's own /router/ too); a token sees the 404.
    assert_refused(*request(f"{worker.url}/no-such-page"), 401)
    assert request(f"{worker.url}/no-such-page", "read")[0] == 404

    # Desk commands: the agent role (an agent's malformed command gets past it, to the 400).
    def check_command(role: str | None, expected: int) -> None:
        status, body, headers = request(
            f"{worker.url}/customers/{cid}/commands",
            role,
            method="POST",
            body=b"{}",
            headers={"X-Keel-Agent": "rep-7"},
        )
        if expected == 200:
            assert status == 400 and "command_id" in body["error"], (role, status, body)
        else:
            assert_refused(status, body, headers, expected)

    only({"agent"}, check_command)

    # The live stream: a header, or the console's cookie (only there).
    stream = f"{worker.url}/desk/customers/{cid}/events"
    assert sse_first_event(stream, {})[0] == 401
    assert sse_first_event(stream, bearer("write"))[0] == 403
    assert sse_first_event(stream, bearer("read")) == (200, "state")
    assert sse_first_event(stream, {"Cookie": f"keel_token={token('agent')}"}) == (200, "state")
    assert sse_first_event(stream, {"Cookie": f"keel_token={token('write')}"})[0] == 403
    assert sse_first_event(stream, {"Cookie": "keel_token=forged-0123456789abcdef"})[0] == 401
    cookie_elsewhere = request(
        f"{worker.url}/customers/{cid}", headers={"Cookie": f"keel_token={token('read')}"}
    )
    assert_refused(*cookie_elsewhere, 401)

    assert logged_tokens(worker.log_file) == []


# -- two workers: a forwarded request is checked again by the owner ----------------------------


@pytest.fixture
def pair(kafka: Kafka, tmp_path: Path, departments: Departments) -> Iterator[list[Worker]]:
    """Two workers of a group of their own; the front one also accepts a token the owner
    does not know (its own KEEL_AUTH_TOKENS_FILE)."""
    app_id = unique("keel-auth")
    topics = own_topics(app_id)
    departments.topics = {
        "order": topics["KEEL_TOPIC_ORDERS"],
        "shipment": topics["KEEL_TOPIC_SHIPMENTS"],
        "contact": topics["KEEL_TOPIC_CONTACTS"],
    }
    front_only = tmp_path / "front-only.tokens"
    front_only.write_text(f"{hash_token(FRONT_ONLY)} read,agent rep-at-the-front-only\n")
    workers = [
        Worker(
            kafka.bootstrap,
            tmp_path / f"worker-{n}",
            free_port(),
            tmp_path / f"worker-{n}.log",
            KEEL_APP_ID=app_id,
            KEEL_PARTITIONS=str(PARTITIONS),
            **topics,
            **({"KEEL_AUTH_TOKENS_FILE": str(front_only)} if n == 1 else {}),
        )
        for n in (1, 2)
    ]
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda w: w.start(), workers))
        yield workers
    finally:
        departments.topics = dict(TOPIC)
        for w in workers:
            w.stop()


FRONT_ONLY = secrets.token_urlsafe(32)


def test_a_forwarded_request_carries_the_callers_token_and_the_owner_checks_it(
    pair: list[Worker], departments: Departments
) -> None:
    front, owner = pair

    def split() -> frozenset[int] | None:
        mine, theirs = assigned_partitions(front), assigned_partitions(owner)
        ready = all(w.get("/readyz")[0] == 200 for w in pair)
        return theirs if ready and mine and theirs and not (mine & theirs) else None

    owners = wait_for("the group to split the partitions", split, 90)
    cid = next(c for c in iter(lambda: unique("c"), None) if partition_of(c) in owners)
    oid, kid = unique("o"), unique("k")
    departments.send([order(cid, oid), contact(kid, customer_id=cid, order_id=oid)])
    state = customer_when(owner, cid, lambda s: bool(s["orders"]) and bool(s["contacts"]))

    # Through the front worker, with the session's tokens: forwarded, and answered by the
    # owner, which knows those tokens too (it would answer 401 had the forward dropped them).
    status, body, _ = request(f"{front.url}/customers/{cid}", "read")
    assert (status, body) == (200, state)
    lookup = f"{front.url}/customers?order_id={oid}"  # the order's owner, then the customer's
    wait_for("the order lookup", lambda: request(lookup, "agent")[:2] == (200, state))
    assert_refused(*request(f"{front.url}/customers/{cid}", "write"), 403)
    assert_refused(*request(f"{front.url}/customers/{cid}"), 401)

    # A token only the front worker accepts: the front lets it pass, the owner refuses it.
    # So a forward is no way around the owner's own check.
    alien = {"Authorization": f"Bearer {FRONT_ONLY}"}
    assert request(f"{front.url}/no-such-page", headers=alien)[0] == 404  # the front knows it
    assert_refused(*request(f"{front.url}/customers/{cid}", headers=alien), 401)
    command = {
        "command_id": unique("cmd"),
        "type": "RESOLVE_CONTACT",
        "contact_id": kid,
        "reason": "answered",
    }
    to_front = f"{front.url}/customers/{cid}/commands"
    agent = {"X-Keel-Agent": "rep-7"}
    sent = request(
        to_front, method="POST", body=json.dumps(command).encode(), headers={**alien, **agent}
    )
    assert_refused(*sent, 401)
    assert_refused(
        *request(to_front, "read", method="POST", body=json.dumps(command).encode(), headers=agent),
        403,
    )
    status, body, _ = request(
        to_front, "agent", method="POST", body=json.dumps(command).encode(), headers=agent
    )
    assert (status, body) == (202, {"command_id": command["command_id"], "agent": "rep-7"})

    # The live stream through the front worker: the console's cookie becomes a header there.
    stream = f"{front.url}/desk/customers/{cid}/events"
    assert sse_first_event(stream, {"Cookie": f"keel_token={token('read')}"}) == (200, "state")
    assert sse_first_event(stream, {"Cookie": f"keel_token={FRONT_ONLY}"})[0] == 401

    # Saying "forwarded" grants nothing: straight to the owner, without a token, is a 401.
    forged = request(f"{owner.url}/customers/{cid}", headers={"X-Keel-Forwarded-By": front.url})
    assert_refused(*forged, 401)

    assert logged_tokens(front.log_file, owner.log_file) == []
    assert FRONT_ONLY not in front.log_file.read_text() + owner.log_file.read_text()


# -- connectors -------------------------------------------------------------------------------


def test_the_ingest_needs_write_and_its_metrics_the_metrics_role(
    kafka: Kafka, processes: Processes
) -> None:
    tag = unique("auth")
    ingest = processes.start(
        "connectors.sources.http_ingest",
        "KEEL_INGEST_PORT",
        "ingest",
        KEEL_TOPIC_ORDERS=f"{tag}.orders",
        KEEL_TOPIC_SHIPMENTS=f"{tag}.shipments",
        KEEL_TOPIC_CONTACTS=f"{tag}.contacts",
    )
    event = order(unique("c"), unique("o"))[1]
    body = json.dumps(to_json("OrderEvent", event)).encode()

    def check_post(role: str | None, expected: int) -> None:
        status, answer = post(f"{ingest.url}/events/orders", body, role=role)
        if expected == 200:
            assert status == 202 and answer["accepted"] == 1, (role, status, answer)
        else:
            assert status == expected and set(answer) == {"error"}, (role, status, answer)

    only({"write"}, check_post)
    refused = request(f"{ingest.url}/events/orders", method="POST", body=body)
    assert_refused(*refused, 401)

    def check_metrics(role: str | None, expected: int) -> None:
        status, answer, headers = request(f"{ingest.url}/metrics", role)
        if expected == 200:
            assert status == 200 and "keel_connector_accepted_total" in answer
        else:
            assert_refused(status, answer, headers, expected)

    only({"metrics"}, check_metrics)
    assert request(f"{ingest.url}/healthz")[0] == 200
    status, document, _ = request(f"{ingest.url}/openapi.json")
    assert status == 200 and document["components"]["securitySchemes"]["bearer"]
    assert logged_tokens(ingest.log_file) == []


def test_a_connectors_status_port_needs_the_metrics_role_for_metrics(
    kafka: Kafka, processes: Processes
) -> None:
    sink: ConnectorProcess = processes.start(
        "connectors.sinks.webhook",
        "KEEL_WEBHOOK_PORT",
        "webhook",
        KEEL_WEBHOOK_URL=f"http://127.0.0.1:{free_port()}/nowhere",
        KEEL_WEBHOOK_SECRET="auth-test-secret",
        KEEL_WEBHOOK_GROUP=unique("webhook"),
        KEEL_TOPIC_COMMANDS=unique("auth-commands"),
    )

    def check(role: str | None, expected: int) -> None:
        status, answer, headers = request(f"{sink.url}/metrics", role)
        if expected == 200:
            assert status == 200 and "keel_connector_retries_total" in answer
        else:
            assert_refused(status, answer, headers, expected)

    only({"metrics"}, check)
    assert request(f"{sink.url}/healthz")[0] == 200
    assert logged_tokens(sink.log_file) == []


# -- switched off -----------------------------------------------------------------------------


def test_auth_off_is_explicit_and_warned_about_on_a_non_loopback_bind(
    kafka: Kafka, tmp_path: Path
) -> None:
    port = free_port()
    w = Worker(
        kafka.bootstrap,
        tmp_path / "data",
        port,
        tmp_path / "worker.log",
        KEEL_APP_ID=unique("keel-auth-off"),
        KEEL_AUTH="off",
        KEEL_API_BIND="0.0.0.0",
        KEEL_CANONICAL_URL=f"http://127.0.0.1:{port}",
    )
    try:
        w.start()
        assert request(f"{w.url}/customers/{unique('c')}")[0] == 404  # no token needed
        assert request(f"{w.url}/metrics")[0] == 200
    finally:
        w.stop()
    log = w.log_file.read_text()
    assert "KEEL_AUTH=off while listening on 0.0.0.0" in log, log[-3000:]
    assert "authentication off" in log
    assert logged_tokens(w.log_file) == []
