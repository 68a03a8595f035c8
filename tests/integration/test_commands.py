"""Desk commands end to end: the API, both delivery connectors, and the loop through the demo shop.

Kafka and the worker are the session's (conftest); PostgreSQL is started here from deploy/local;
the webhook's receiver is a local HTTP server on 127.0.0.1. What is checked is what a desk agent
and a department see: HTTP answers, records on commands.v1, rows in keel_inbox, signed POSTs,
dead letters, the departments' answers on command-outcomes.v1, and finally the cancelled (or
refused) order in the customer's state.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from deploy.local.postgres import Postgres
from deploy.local.stack import Kafka, free_port
from streams.encoding.codec import get_codec
from tests.builders import contact, order, shipment, unique
from tests.integration.connectors_harness import Processes, fresh_database
from tests.integration.harness import (
    Departments,
    Worker,
    bearer,
    metric_value,
    read_topic,
    wait_for,
)

pytestmark = pytest.mark.integration

MINUTE = 60_000
LAMP = [{"sku": "desk-lamp", "quantity": 1, "unit_price_cents": 4900}]
SECRET = "test-webhook-secret"


def now_ms() -> int:
    return int(time.time() * 1000)


def post_command(
    worker: Worker,
    customer_id: str,
    body: Any,
    agent: str | None = "rep-7",
    role: str | None = "agent",
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", **bearer(role)}
    if agent is not None:
        headers["X-Keel-Agent"] = agent
    request = urllib.request.Request(
        f"{worker.url}/customers/{customer_id}/commands",
        data=json.dumps(body).encode(),
        headers=headers,
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def customer_when(worker: Worker, customer_id: str, ready: Any, timeout: float = 60) -> dict:
    def check() -> dict | None:
        status, body = worker.get(f"/customers/{customer_id}")
        return body if status == 200 and ready(body) else None

    return wait_for(f"state of {customer_id}", check, timeout)


def commands_on_topic(kafka: Kafka, ids: set[str]) -> list[tuple[bytes, dict[str, Any]]]:
    codec = get_codec()
    found = []
    for message in read_topic(kafka.bootstrap, "commands.v1", timeout=20):
        command = codec.decode(message.value(), "DeskCommand")
        if command["command_id"] in ids:
            found.append((message.key(), command))
    return found


def duplicate_orders(departments: Departments, worker: Worker) -> tuple[str, str, str]:
    """The Sears story's start: one customer, the same lamp ordered twice a minute apart."""
    cid, first, second = unique("c"), unique("o"), unique("o")
    at = now_ms()
    departments.send(
        [
            order(cid, first, at=at - 2 * MINUTE, lines=LAMP),
            order(cid, second, at=at - MINUTE, lines=LAMP, channel="PHONE"),
        ]
    )
    customer_when(worker, cid, lambda s: [g["type"] for g in s["signals"]] == ["DUPLICATE_ORDER"])
    return cid, first, second


# --- fixtures ---------------------------------------------------------------------------------


def inbox_rows(database: str, ids: set[str]) -> list[tuple[Any, ...]]:
    with psycopg.connect(database) as conn:
        return conn.execute(
            "SELECT command_id, type, customer_id, order_id, contact_id, agent, reason, note,"
            " requested_at, received_at FROM keel_inbox WHERE command_id = ANY(%s)"
            " ORDER BY command_id",
            (sorted(ids),),
        ).fetchall()


# --- the API ----------------------------------------------------------------------------------


def test_a_cancel_is_published_once_keyed_by_its_order_and_nonsense_is_refused_unpublished(
    kafka: Kafka, worker: Worker, departments: Departments
) -> None:
    cid, first, second = duplicate_orders(departments, worker)
    kid = unique("k")
    departments.send([contact(kid, at=now_ms(), customer_id=cid, note="two lamps?")])
    customer_when(worker, cid, lambda s: bool(s["contacts"]))
    good = {"command_id": unique("cmd"), "type": "CANCEL_ORDER", "order_id": second,
            "reason": "duplicate of the web order, customer confirmed"}  # fmt: skip

    # the shared agent token says only the role: the agent recorded is the one the desk names
    recorded = {"command_id": good["command_id"], "agent": "rep-7"}
    assert post_command(worker, cid, good) == (202, recorded)
    assert post_command(worker, cid, good) == (202, {**recorded, "duplicate": True})
    other_under_same_id = {**good, "order_id": first}
    status, answer = post_command(worker, cid, other_under_same_id)
    assert status == 409 and answer["field"] == "command_id"

    bad = {
        "unknown type": ({"type": "REFUND"}, 400, "type"),
        "no reason": ({"type": "CANCEL_ORDER", "order_id": first, "reason": " "}, 400, "reason"),
        "not the customer's order": (
            {"type": "CANCEL_ORDER", "order_id": unique("o"), "reason": "r"}, 404, "order_id"),
        "not the customer's contact": (
            {"type": "RESOLVE_CONTACT", "contact_id": unique("k"), "reason": "r"}, 404,
            "contact_id"),
        "a note with no text": (
            {"type": "ADD_NOTE", "contact_id": kid, "reason": "r"}, 400, "note"),
    }  # fmt: skip
    refused_ids = set()
    for what, (fields, status, field) in bad.items():
        body = {"command_id": unique("cmd"), **fields}
        refused_ids.add(body["command_id"])
        got, answer = post_command(worker, cid, body)
        assert (got, answer.get("field")) == (status, field), (what, answer)
        assert answer["error"], what
    no_agent = {**good, "command_id": unique("cmd")}
    refused_ids.add(no_agent["command_id"])
    status, answer = post_command(worker, cid, no_agent, agent=None)
    assert status == 400 and "X-Keel-Agent" in answer["error"]
    status, answer = post_command(worker, unique("c"), {**good, "command_id": unique("cmd")})
    assert status == 404 and "no customer" in answer["error"]
    status, answer = worker.get(f"/customers/{cid}/commands")
    assert status == 405 and answer["error"], answer
    not_json = urllib.request.Request(f"{worker.url}/customers/{cid}/commands", data=b"{nope",
                                      headers={"X-Keel-Agent": "rep-7", **bearer("agent")},
                                      method="POST")  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(not_json, timeout=30)
    assert info.value.code == 400 and "not JSON" in json.loads(info.value.read())["error"]

    note = {"command_id": unique("cmd"), "type": "ADD_NOTE", "contact_id": kid,
            "reason": "callback promised", "note": "Wants the web order only."}  # fmt: skip
    assert post_command(worker, cid, note)[0] == 202

    found = commands_on_topic(kafka, {good["command_id"], note["command_id"]} | refused_ids)
    assert [(key, c["command_id"]) for key, c in found if c["command_id"] in refused_ids] == []
    by_id = {c["command_id"]: (key, c) for key, c in found}
    assert len(found) == 2, "the repeated cancel was published again"
    key, cancel = by_id[good["command_id"]]
    assert key == second.encode()
    assert {k: cancel[k] for k in ("type", "customer_id", "order_id", "agent", "reason")} == {
        "type": "CANCEL_ORDER", "customer_id": cid, "order_id": second, "agent": "rep-7",
        "reason": good["reason"]}  # fmt: skip
    assert abs(cancel["requested_at"] - now_ms()) < 120_000
    key, added = by_id[note["command_id"]]
    assert key == kid.encode() and added["note"] == note["note"]
    text = worker.get("/metrics")[1]
    assert metric_value(text, "keel_desk_commands_total", outcome="duplicate") >= 1
    assert metric_value(text, "keel_desk_commands_total", outcome="refused") >= len(bad)


# --- PostgreSQL inbox -------------------------------------------------------------------------


def test_the_inbox_holds_one_row_per_command_even_when_every_command_is_delivered_again(
    kafka: Kafka, worker: Worker, departments: Departments, postgres_server: Postgres,
    processes: Processes,
) -> None:  # fmt: skip
    database = fresh_database(postgres_server)
    inbox = processes.start(
        "connectors.sinks.postgres_inbox", "KEEL_INBOX_PORT", "inbox",
        POSTGRES_URL=database, KEEL_INBOX_GROUP=unique("inbox"),
    )  # fmt: skip
    cid, _, second = duplicate_orders(departments, worker)
    ids = [unique("cmd") for _ in range(3)]
    bodies = [
        {"command_id": ids[0], "type": "CANCEL_ORDER", "order_id": second, "reason": "duplicate"},
        {"command_id": ids[1], "type": "ADD_NOTE", "note": "Call back about the lamp.",
         "order_id": second, "reason": "customer asked for a call"},
        {"command_id": ids[2], "type": "ADD_NOTE", "note": "Second thought.", "reason": "again"},
    ]  # fmt: skip
    for body in bodies:
        assert post_command(worker, cid, body, agent="priya")[0] == 202

    rows = wait_for("the commands in keel_inbox", lambda: len(inbox_rows(database, set(ids))) == 3)
    rows = inbox_rows(database, set(ids))
    cancel = next(r for r in rows if r[0] == ids[0])
    assert cancel[1:8] == ("CANCEL_ORDER", cid, second, None, "priya", "duplicate", None)
    assert cancel[8].tzinfo is not None and abs(cancel[8].timestamp() * 1000 - now_ms()) < 120_000
    assert inbox.health()["postgres"] == "up"

    # A second inbox connector with a group of its own delivers every command on the topic
    # again, into the same table: at-least-once, and the primary key keeps one row per id.
    again = processes.start(
        "connectors.sinks.postgres_inbox", "KEEL_INBOX_PORT", "inbox-again",
        POSTGRES_URL=database, KEEL_INBOX_GROUP=unique("inbox"),
    )  # fmt: skip
    wait_for(
        "the second connector to have caught up",
        lambda: again.health()["inserted"] >= 3 and metric_value(
            again.metrics(), "keel_connector_accepted_total") >= 3,
    )  # fmt: skip
    with psycopg.connect(database) as conn:
        counts = dict(conn.execute(
            "SELECT command_id, count(*) FROM keel_inbox WHERE command_id = ANY(%s)"
            " GROUP BY command_id", (ids,)).fetchall())  # fmt: skip
    assert counts == dict.fromkeys(ids, 1)


# --- HTTP webhook -----------------------------------------------------------------------------


class Receiver:
    """A department's webhook endpoint on 127.0.0.1: for the ids under test it answers 503
    twice, then 200; a command whose reason says "reject me" gets a 422."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.attempts: Counter[str] = Counter()
        self.delivered: list[tuple[str, dict[str, Any]]] = []
        self.bad_signatures = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(expected, self.headers.get("X-Keel-Signature", "")):
                    receiver.bad_signatures += 1
                    self._answer(401)
                    return
                command = json.loads(body)
                cid = self.headers["X-Keel-Command-Id"]
                assert cid == command["command_id"]
                if not cid.startswith(receiver.prefix):
                    self._answer(200)  # other tests' commands: not this test's business
                    return
                receiver.attempts[cid] += 1
                if "reject me" in command["reason"]:
                    self._answer(422, b'{"error": "the shop cannot do that"}')
                elif receiver.attempts[cid] <= 2:
                    self._answer(503)
                else:
                    receiver.delivered.append((cid, command))
                    self._answer(200)

            def _answer(self, code: int, body: bytes = b"{}") -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/keel/commands"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_webhook_retries_until_accepted_signs_every_post_and_dead_letters_a_rejection(
    kafka: Kafka, worker: Worker, departments: Departments, processes: Processes
) -> None:
    prefix = unique("wh")
    receiver = Receiver(prefix)
    try:
        webhook = processes.start(
            "connectors.sinks.webhook", "KEEL_WEBHOOK_PORT", "webhook",
            KEEL_WEBHOOK_URL=receiver.url, KEEL_WEBHOOK_SECRET=SECRET,
            KEEL_WEBHOOK_GROUP=unique("webhook"),
        )  # fmt: skip
        cid, _, second = duplicate_orders(departments, worker)
        rejected, cancel = f"{prefix}-1", f"{prefix}-2"
        assert post_command(worker, cid, {"command_id": rejected, "type": "ADD_NOTE",
            "note": "n", "reason": "reject me"})[0] == 202  # fmt: skip
        assert post_command(worker, cid, {"command_id": cancel, "type": "CANCEL_ORDER",
            "order_id": second, "reason": "duplicate"})[0] == 202  # fmt: skip

        wait_for("the cancel delivered", lambda: [c for c, _ in receiver.delivered] == [cancel])
        time.sleep(1.0)  # would a delivered command be sent again? (it must not)
        assert [c for c, _ in receiver.delivered] == [cancel], "delivered more than once"
        assert receiver.attempts == {rejected: 1, cancel: 3}  # the 422 is not retried
        assert receiver.bad_signatures == 0
        command = receiver.delivered[0][1]
        assert command["order_id"] == second and command["agent"] == "rep-7"
        assert command["requested_at"].endswith("Z")
        text = webhook.metrics()
        assert metric_value(text, "keel_connector_rejected_total", reason="rejected") == 1
        assert metric_value(text, "keel_connector_retries_total", dependency="sink") >= 2

        def dead_letter() -> Any:
            for message in read_topic(kafka.bootstrap, "deadletter.v1", timeout=20):
                headers = dict(message.headers() or [])
                ours = message.key() == cid.encode()  # a new contact's note: keyed by customer
                if ours and headers.get("x-source-topic") == b"commands.v1":
                    return headers
            return None

        headers = wait_for("the rejected command's dead letter", dead_letter, 30, 1.0)
        assert b"webhook answered 422" in headers["x-error"]
        assert b"cannot do that" in headers["x-error"]
    finally:
        receiver.close()


# --- the loop: desk -> inbox -> shop -> outbox -> orders.v1 -> state --------------------------


def test_a_cancel_ends_with_the_order_cancelled_by_the_shop_and_the_signal_cleared(
    kafka: Kafka, worker: Worker, departments: Departments, postgres_server: Postgres,
    processes: Processes,
) -> None:  # fmt: skip
    database = fresh_database(postgres_server)
    env = {"POSTGRES_URL": database, "KEEL_OUTBOX_POLL_MS": "100"}
    processes.start("connectors.sinks.postgres_inbox", "KEEL_INBOX_PORT", "inbox",
                    KEEL_INBOX_GROUP=unique("inbox"), **env)  # fmt: skip
    processes.start("connectors.sources.postgres_outbox", "KEEL_OUTBOX_PORT", "outbox", **env)
    shop = processes.start("connectors.sources.demo_shop", "KEEL_SHOP_PORT", "shop", **env)
    cid, first, second = duplicate_orders(departments, worker)

    started = time.monotonic()
    command = {"command_id": unique("cmd"), "type": "CANCEL_ORDER", "order_id": second,
               "reason": "duplicate of the web order"}  # fmt: skip
    assert post_command(worker, cid, command)[0] == 202
    state = customer_when(
        worker, cid, lambda s: {o["order_id"]: o["status"] for o in s["orders"]}[second]
        == "CANCELLED",
    )  # fmt: skip
    took = time.monotonic() - started

    assert {o["order_id"]: o["status"] for o in state["orders"]} == {
        first: "PLACED", second: "CANCELLED"}  # fmt: skip
    assert state["signals"] == [] and state["open_orders"] == 1
    assert state["total_spent_cents"] == 4900
    with psycopg.connect(database) as conn:
        outcome = conn.execute(
            "SELECT outcome FROM demo_shop_handled WHERE command_id = %s",
            (command["command_id"],),
        ).fetchone()
    assert outcome == ("cancelled",)
    assert shop.health()["handled"] >= 1

    # the same cancel again is one command: 202, nothing more happens
    assert post_command(worker, cid, command)[1].get("duplicate") is True
    # and cancelling what is now cancelled makes no sense
    status, answer = post_command(worker, cid, {**command, "command_id": unique("cmd")})
    assert status == 409 and "already CANCELLED" in answer["error"]
    print(f"POST cancel -> CANCELLED in the state: {took:.2f} s")


def test_the_shop_also_takes_commands_by_webhook_and_refuses_a_bad_signature(
    kafka: Kafka, worker: Worker, departments: Departments, postgres_server: Postgres,
    processes: Processes,
) -> None:  # fmt: skip
    """`make run`'s second path: webhook connector -> the shop's receiver -> keel_inbox (no
    inbox connector here) -> CANCELLED via the outbox."""
    database = fresh_database(postgres_server)
    env = {"POSTGRES_URL": database, "KEEL_OUTBOX_POLL_MS": "100", "KEEL_WEBHOOK_SECRET": SECRET}
    processes.start("connectors.sources.postgres_outbox", "KEEL_OUTBOX_PORT", "outbox", **env)
    shop = processes.start("connectors.sources.demo_shop", "KEEL_SHOP_PORT", "shop", **env)
    processes.start("connectors.sinks.webhook", "KEEL_WEBHOOK_PORT", "webhook",
                    KEEL_WEBHOOK_URL=f"{shop.url}/keel/commands",
                    KEEL_WEBHOOK_GROUP=unique("webhook"), **env)  # fmt: skip
    forged = urllib.request.Request(
        f"{shop.url}/keel/commands", data=b"{}", method="POST",
        headers={"X-Keel-Signature": "sha256=" + "0" * 64, "Content-Type": "application/json"},
    )  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(forged, timeout=10)
    assert refused.value.code == 401

    cid, first, second = duplicate_orders(departments, worker)
    command = {"command_id": unique("cmd"), "type": "CANCEL_ORDER", "order_id": second,
               "reason": "duplicate"}  # fmt: skip
    assert post_command(worker, cid, command)[0] == 202
    state = customer_when(
        worker, cid, lambda s: {o["order_id"]: o["status"] for o in s["orders"]}[second]
        == "CANCELLED",
    )  # fmt: skip
    assert state["signals"] == []
    rows = inbox_rows(database, {command["command_id"]})
    assert [r[:4] for r in rows] == [(command["command_id"], "CANCEL_ORDER", cid, second)]

    # An order whose parcel has left cannot be cancelled by the shop: it answers the webhook
    # with a 409 and its reason, and the desk sees the command failed with it at once.
    shipped, parcel = unique("o"), unique("s")
    departments.send([order(cid, shipped, at=now_ms() - MINUTE),
                      shipment(shipped, parcel, "DISPATCHED", at=now_ms())])  # fmt: skip
    customer_when(worker, cid, lambda s: any(o["order_id"] == shipped and o["shipments"]
                                             for o in s["orders"]))  # fmt: skip
    time.sleep(1.0)  # the shop reads shipments.v1 itself; keel's state took longer to show it
    refused = {"command_id": unique("cmd"), "type": "CANCEL_ORDER", "order_id": shipped,
               "reason": "customer changed their mind"}  # fmt: skip
    assert post_command(worker, cid, refused)[0] == 202

    def failed(s: dict) -> bool:
        return any(g["type"] == "COMMAND_FAILED" and g["order_id"] == shipped for g in s["signals"])

    state = customer_when(worker, cid, failed)
    (signal,) = [g for g in state["signals"] if g["type"] == "COMMAND_FAILED"]
    assert (f"the web shop refused it: order {shipped} has already shipped (parcel {parcel} is "
            "DISPATCHED); arrange a return instead (HTTP 409)") in signal["detail"]  # fmt: skip
    assert {o["order_id"]: o["status"] for o in state["orders"]}[shipped] == "PLACED"
    with psycopg.connect(database) as conn:
        handled = conn.execute("SELECT outcome FROM demo_shop_handled WHERE command_id = %s",
                               (refused["command_id"],)).fetchone()  # fmt: skip
    assert handled is not None and handled[0].startswith("rejected: order")


# --- several workers: a command is checked and published by the customer's owner ------------


@pytest.fixture
def two_workers(kafka: Kafka, tmp_path: Path, departments: Departments) -> Iterator[list[Worker]]:
    from tests.integration.harness import TOPIC
    from tests.integration.test_scale_out import PARTITIONS, own_topics

    app_id = unique("keel-cmd")
    topics = {**own_topics(app_id), "KEEL_TOPIC_COMMANDS": f"{app_id}.commands"}
    departments.topics = {
        "order": topics["KEEL_TOPIC_ORDERS"],
        "shipment": topics["KEEL_TOPIC_SHIPMENTS"],
        "contact": topics["KEEL_TOPIC_CONTACTS"],
    }
    workers = [
        Worker(kafka.bootstrap, tmp_path / f"worker-{n}", free_port(), tmp_path / f"w{n}.log",
               KEEL_APP_ID=app_id, KEEL_PARTITIONS=str(PARTITIONS), **topics)
        for n in (1, 2)
    ]  # fmt: skip
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda w: w.start(), workers))
        yield workers
    finally:
        departments.topics = dict(TOPIC)
        for w in workers:
            w.stop()


def test_any_worker_takes_a_command_and_the_customers_owner_checks_and_publishes_it(
    kafka: Kafka, two_workers: list[Worker], departments: Departments
) -> None:
    from tests.integration.test_scale_out import assigned_partitions, partition_of

    front, owner = two_workers

    def split() -> frozenset[int] | None:
        mine, theirs = assigned_partitions(front), assigned_partitions(owner)
        ready = all(w.get("/readyz")[0] == 200 for w in two_workers)
        return theirs if ready and mine and theirs and not (mine & theirs) else None

    owners_partitions = wait_for("the group to split the partitions", split, 90)
    cid = next(c for c in iter(lambda: unique("c"), None) if partition_of(c) in owners_partitions)
    oid = unique("o")
    departments.send([order(cid, oid, at=now_ms() - MINUTE)])
    customer_when(front, cid, lambda s: bool(s["orders"]))
    command = {"command_id": unique("cmd"), "type": "CANCEL_ORDER", "order_id": oid,
               "reason": "asked by phone"}  # fmt: skip

    assert post_command(front, cid, command, agent="rep-front") == (
        202, {"command_id": command["command_id"], "agent": "rep-front"})  # fmt: skip
    # the owner handled it (and remembers the id); the front worker only passed it on
    assert post_command(owner, cid, command, agent="rep-front")[1].get("duplicate") is True
    status, answer = post_command(front, cid, {**command, "command_id": unique("cmd"),
                                               "order_id": unique("o")})  # fmt: skip
    assert status == 404 and "has no order" in answer["error"]

    topic = f"{front.env['KEEL_APP_ID']}.commands"
    codec = get_codec()
    records = [codec.decode(m.value(), "DeskCommand") for m in read_topic(kafka.bootstrap, topic)]
    assert [(c["command_id"], c["agent"]) for c in records] == [
        (command["command_id"], "rep-front")]  # fmt: skip


def test_a_command_is_pending_in_the_state_then_failed_when_no_department_acts(
    kafka: Kafka, departments: Departments, tmp_path: Path
) -> None:
    from tests.integration.oracle_checks import own_worker

    app_id = unique("pending")
    worker = own_worker(kafka, tmp_path, app_id, "worker", KEEL_COMMAND_TIMEOUT_S="4",
                        KEEL_SIGNAL_CHECK_INTERVAL_S="1")  # fmt: skip
    worker.start()
    try:
        mine = Departments(kafka.bootstrap)
        mine.topics = {k: f"{app_id}.{k}s" for k in ("order", "shipment", "contact")}
        cid, first, second = duplicate_orders(mine, worker)
        command = {"command_id": unique("cmd"), "type": "CANCEL_ORDER", "order_id": second,
                   "reason": "duplicate of the web order"}  # fmt: skip
        assert post_command(worker, cid, command)[0] == 202

        def signal(kind: str) -> Any:
            return lambda s: [g for g in s["signals"] if g["type"] == kind]

        pending = signal("COMMAND_PENDING")(customer_when(worker, cid, signal("COMMAND_PENDING")))
        assert [(g["order_id"], g["contact_id"]) for g in pending] == [(second, None)]
        assert f"cancellation of order {second} asked by rep-7" in pending[0]["detail"]
        failed = signal("COMMAND_FAILED")(customer_when(worker, cid, signal("COMMAND_FAILED"), 30))
        assert failed[0]["order_id"] == second
        assert "the web shop did not act on it within" in failed[0]["detail"]
        # the shop cancels after all: the failure and the duplicate go away
        mine.send([order(cid, second, "CANCELLED", at=now_ms(), lines=LAMP, channel="PHONE")])
        state = customer_when(worker, cid, lambda s: s["signals"] == [])
        assert {o["order_id"]: o["status"] for o in state["orders"]}[second] == "CANCELLED"
    finally:
        worker.stop()


def test_a_personal_tokens_holder_is_the_commands_agent_whatever_the_page_claims(
    kafka: Kafka, departments: Departments, tmp_path: Path
) -> None:
    import secrets

    from streams.auth import hash_token
    from tests.integration.oracle_checks import own_worker

    personal = secrets.token_urlsafe(32)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{hash_token(personal)} agent rep-9\n")
    app_id = unique("agents")
    worker = own_worker(kafka, tmp_path, app_id, "worker", KEEL_AUTH_TOKENS_FILE=str(tokens))
    worker.start()
    try:
        mine = Departments(kafka.bootstrap)
        mine.topics = {k: f"{app_id}.{k}s" for k in ("order", "shipment", "contact")}
        cid, _, second = duplicate_orders(mine, worker)
        ids = {}
        for who, headers in (
            ("personal", {"Authorization": f"Bearer {personal}", "X-Keel-Agent": "impostor"}),
            ("shared", {**bearer("agent"), "X-Keel-Agent": "rep-7"}),
        ):
            body = {"command_id": unique("cmd"), "type": "ADD_NOTE", "note": f"from {who}",
                    "reason": "r", "order_id": second}  # fmt: skip
            request = urllib.request.Request(
                f"{worker.url}/customers/{cid}/commands", data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json", **headers}, method="POST",
            )  # fmt: skip
            with urllib.request.urlopen(request, timeout=60) as resp:
                assert resp.status == 202
            ids[body["command_id"]] = who
        agents = {ids[c["command_id"]]: c["agent"] for _, c in commands_on_topic(kafka, set(ids))}
        assert agents == {"personal": "rep-9", "shared": "rep-7"}
    finally:
        worker.stop()


class Refuser:
    """A department's webhook that refuses every cancel with a 409 and its reason, and takes
    everything else."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        refuser = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                command = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                refuser.seen[command["command_id"]] += 1
                if command["type"] == "CANCEL_ORDER":
                    why = f"order {command['order_id']} has already left the warehouse"
                    self._answer(409, json.dumps({"error": why}).encode())
                else:
                    self._answer(200, b"{}")

            def _answer(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/keel/commands"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_command_the_department_refuses_fails_at_once_with_its_reason(
    kafka: Kafka, processes: Processes, tmp_path: Path
) -> None:
    """The webhook's final 4xx reaches the state as a REJECTED outcome: COMMAND_FAILED with the
    department's words within seconds, not after KEEL_COMMAND_TIMEOUT_S (10 min here)."""
    from tests.integration.oracle_checks import departments_for, own_worker

    app_id = unique("refused")
    topics = {"KEEL_TOPIC_COMMANDS": f"{app_id}.commands",
              "KEEL_TOPIC_COMMAND_OUTCOMES": f"{app_id}.outcomes"}  # fmt: skip
    worker = own_worker(kafka, tmp_path, app_id, "worker", KEEL_COMMAND_TIMEOUT_S="600",
                        KEEL_SIGNAL_CHECK_INTERVAL_S="1", **topics)  # fmt: skip
    receiver = Refuser()
    worker.start()
    try:
        processes.start(
            "connectors.sinks.webhook", "KEEL_WEBHOOK_PORT", "webhook",
            KEEL_WEBHOOK_URL=receiver.url, KEEL_WEBHOOK_SECRET=SECRET,
            KEEL_WEBHOOK_GROUP=unique("webhook"), **topics,
        )  # fmt: skip
        mine = departments_for(kafka, app_id)
        cid, _, second = duplicate_orders(mine, worker)
        kid = unique("k")
        mine.send([contact(kid, at=now_ms(), customer_id=cid, note="two lamps?")])
        customer_when(worker, cid, lambda s: bool(s["contacts"]))
        cancel = {"command_id": unique("cmd"), "type": "CANCEL_ORDER", "order_id": second,
                  "reason": "duplicate of the web order"}  # fmt: skip
        note = {"command_id": unique("cmd"), "type": "ADD_NOTE", "contact_id": kid,
                "note": "Wants the web order only.", "reason": "callback promised"}  # fmt: skip
        started = time.monotonic()
        assert post_command(worker, cid, cancel)[0] == 202
        assert post_command(worker, cid, note)[0] == 202

        def signals(s: dict) -> dict[str, dict]:
            return {g["type"]: g for g in s["signals"] if g["type"].startswith("COMMAND_")}

        def answered(s: dict) -> bool:
            found = signals(s)
            return "COMMAND_FAILED" in found and "delivered by the webhook" in found.get(
                "COMMAND_PENDING", {}).get("detail", "")  # fmt: skip

        state = customer_when(worker, cid, answered, timeout=60)
        took = time.monotonic() - started
        failed, pending = signals(state)["COMMAND_FAILED"], signals(state)["COMMAND_PENDING"]
        assert (failed["order_id"], failed["contact_id"]) == (second, None)
        assert (f"the web shop refused it: order {second} has already left the warehouse "
                "(HTTP 409)") in failed["detail"]  # fmt: skip
        assert cancel["command_id"] in failed["detail"]
        assert (pending["order_id"], pending["contact_id"]) == (None, kid)
        assert "waiting for the contact centre's event" in pending["detail"]
        assert {o["order_id"]: o["status"] for o in state["orders"]}[second] == "PLACED"
        assert took < 60, took  # far from the 600 s timeout
        assert receiver.seen == {cancel["command_id"]: 1, note["command_id"]: 1}

        codec = get_codec()
        answers = [
            (m.key(), codec.decode(m.value(), "CommandOutcome"))
            for m in read_topic(kafka.bootstrap, f"{app_id}.outcomes", timeout=20)
        ]
        assert sorted((key, a["command_id"], a["outcome"], a["connector"])
                      for key, a in answers) == sorted([
            (cid.encode(), cancel["command_id"], "REJECTED", "webhook"),
            (cid.encode(), note["command_id"], "DELIVERED", "webhook"),
        ])  # fmt: skip
        signal_records = read_topic(kafka.bootstrap, f"{app_id}.signals", timeout=20)
        raised = [codec.decode(m.value(), "CustomerSignal") for m in signal_records]
        assert [(r["status"], r["order_id"]) for r in raised if r["type"] == "COMMAND_FAILED"
                ] == [("RAISED", second)]  # fmt: skip
        print(f"POST cancel -> COMMAND_FAILED with the department's reason: {took:.2f} s")
    finally:
        receiver.close()
        worker.stop()
