"""The connectors end to end: HTTP ingest, PostgreSQL outbox and Redis sink, all real processes.

Kafka and the worker are the session's, Redis the module's (conftest); PostgreSQL is started
here from deploy/local, on ports the OS hands out. What is checked is what a department or an
app sees: HTTP answers, rows gone from keel_outbox, records on the topics, values in Redis.
"""

from __future__ import annotations

import http.client
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from deploy.local.postgres import Postgres
from deploy.local.stack import Kafka, Redis, free_port
from streams.encoding.codec import CodecError, get_codec
from streams.encoding.jsonconv import to_json
from tests.builders import T0, contact, order, shipment, unique
from tests.integration import schemathesis_run
from tests.integration.connectors_harness import ConnectorProcess, ndjson, post
from tests.integration.harness import (
    Departments,
    Worker,
    bearer,
    http_get,
    metric_value,
    read_topic,
    token,
    wait_for,
)

pytestmark = pytest.mark.integration

HOUR = 3_600_000
RECORD = {"order": "OrderEvent", "shipment": "ShipmentEvent", "contact": "ContactEvent"}


def as_json(item: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """An event as a department sends it: JSON with ISO-8601 timestamps."""
    kind, event = item
    return to_json(RECORD[kind], event)


# --- fixtures: PostgreSQL, Redis and the connector processes -------------------------------


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    # Not under pytest's tmp dir: that is private to root, and PostgreSQL runs as `postgres`.
    base = Path(tempfile.mkdtemp(prefix="keel-pg-"))  # Postgres hands it to that user
    server = Postgres(base, port=free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def fresh_database(server: Postgres) -> str:
    """A new empty database of its own for one test (the outbox leader lock is per database)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="module")
def connector_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("connectors")


@pytest.fixture(scope="module")
def ingest(kafka: Kafka, connector_logs: Path) -> Iterator[ConnectorProcess]:
    """Ingest into the real input topics the session worker reads."""
    port = free_port()
    process = ConnectorProcess(
        "connectors.sources.http_ingest",
        port,
        connector_logs / "ingest.log",
        KAFKA_BOOTSTRAP=kafka.bootstrap,
        KEEL_INGEST_PORT=str(port),
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def side_ingest(kafka: Kafka, connector_logs: Path) -> Iterator[ConnectorProcess]:
    """Ingest into topics of its own, so rejected or fuzzed input never reaches the worker."""
    port, tag = free_port(), uuid.uuid4().hex[:8]
    process = ConnectorProcess(
        "connectors.sources.http_ingest",
        port,
        connector_logs / "side-ingest.log",
        KAFKA_BOOTSTRAP=kafka.bootstrap,
        KEEL_INGEST_PORT=str(port),
        KEEL_TOPIC_ORDERS=f"side-orders-{tag}",
        KEEL_TOPIC_SHIPMENTS=f"side-shipments-{tag}",
        KEEL_TOPIC_CONTACTS=f"side-contacts-{tag}",
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def redis_sink(
    kafka: Kafka, redis_server: Redis, connector_logs: Path
) -> Iterator[ConnectorProcess]:
    port = free_port()
    process = ConnectorProcess(
        "connectors.sinks.redis",
        port,
        connector_logs / "redis-sink.log",
        KAFKA_BOOTSTRAP=kafka.bootstrap,
        REDIS_URL=redis_server.url,
        KEEL_REDIS_SINK_PORT=str(port),
        KEEL_REDIS_SINK_GROUP=f"redis-sink-{uuid.uuid4().hex[:8]}",
        KEEL_REDIS_SINK_BATCH="200",
    ).start()
    yield process
    process.stop()


class Outboxes:
    """Starts outbox connectors for one test; the fixture stops every one, pass or fail."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[ConnectorProcess] = []

    def start(self, kafka: Kafka, database_url: str, name: str, **env: str) -> ConnectorProcess:
        """Start one and wait until it is connected (so its tables exist)."""
        port = free_port()
        outbox = ConnectorProcess(
            "connectors.sources.postgres_outbox",
            port,
            self.log_dir / f"{name}.log",
            KAFKA_BOOTSTRAP=kafka.bootstrap,
            POSTGRES_URL=database_url,
            KEEL_OUTBOX_PORT=str(port),
            KEEL_OUTBOX_POLL_MS="50",
            **env,
        )
        self.started.append(outbox)
        outbox.start()
        wait_for("the outbox connected", lambda: outbox.health()["role"] != "disconnected")
        return outbox


@pytest.fixture
def outboxes(connector_logs: Path) -> Iterator[Outboxes]:
    fleet = Outboxes(connector_logs)
    try:
        yield fleet
    finally:
        for outbox in fleet.started:
            outbox.stop()


def outbox_rows(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM keel_outbox").fetchone()
        return int(row[0]) if row else 0


def redis_state(client: redis.Redis, customer_id: str) -> dict[str, Any] | None:
    raw = client.get(f"keel:customer:{customer_id}")
    return json.loads(raw) if raw is not None else None


# --- the three connectors together ----------------------------------------------------------


def test_order_via_http_shipment_via_outbox_and_ndjson_contact_make_one_customer(
    kafka: Kafka,
    worker: Worker,
    ingest: ConnectorProcess,
    postgres: Postgres,
    redis_server: Redis,
    redis_sink: ConnectorProcess,
    outboxes: Outboxes,
) -> None:
    cid, oid, sid, kid = unique("c"), unique("o"), unique("s"), unique("k")
    placed = as_json(order(cid, oid, email=f"ada.{cid}@example.com", phone="+49 30 555 0100"))
    status, body = post(f"{ingest.url}/events/orders", json.dumps(placed).encode())
    assert (status, body) == (202, {"accepted": 1, "event_ids": [placed["event_id"]]})

    database = fresh_database(postgres)
    outboxes.start(kafka, database, "outbox-e2e")
    dispatched = as_json(shipment(oid, sid, "DISPATCHED", T0 + HOUR))
    with psycopg.connect(database) as conn:  # the department's own transaction
        conn.execute(
            "INSERT INTO keel_outbox(topic, key, payload) VALUES (%s, %s, %s)",
            ("shipments.v1", oid, json.dumps(dispatched)),
        )
    wait_for("the outbox row published and deleted", lambda: outbox_rows(database) == 0)

    case = [
        as_json(contact(kid, "OPENED", T0 + 2 * HOUR, order_id=oid, note="where is it?")),
        as_json(contact(kid, "NOTE_ADDED", T0 + 3 * HOUR, note="gave tracking number")),
    ]
    status, body = post(f"{ingest.url}/events/contacts", ndjson(case), "application/x-ndjson")
    assert status == 202 and body["accepted"] == 2

    def joined() -> dict[str, Any] | None:
        code, state = worker.get(f"/customers/{cid}")
        if code != 200 or not state["orders"] or not state["orders"][0]["shipments"]:
            return None
        return state if state["contacts"] and len(state["contacts"][0]["notes"]) == 2 else None

    api = wait_for("the joined state in the query API", joined)
    assert api["orders"][0]["shipments"][0]["shipment_id"] == sid
    assert api["contacts"][0]["contact_id"] == kid

    client = redis.Redis.from_url(redis_server.url)

    def caught_up() -> dict[str, Any] | None:
        state = redis_state(client, cid)
        return state if state is not None and state["version"] >= api["version"] else None

    in_redis = wait_for("the same state in Redis", caught_up)
    assert in_redis == worker.get(f"/customers/{cid}")[1]
    # index keys come from the owners changelogs, other topics than the state: either may lead
    index = [f"keel:order:{oid}", f"keel:email:ada.{cid}@example.com"]
    index.append(f"keel:phone:{api['phones'][0]}")
    wait_for("the index keys", lambda: all(client.get(k) == cid.encode() for k in index), 30)


# --- HTTP ingest: what a sender sees on bad input --------------------------------------------


def test_an_invalid_event_is_a_400_naming_the_field_and_publishes_nothing_of_its_request(
    kafka: Kafka, side_ingest: ConnectorProcess
) -> None:
    topic = side_ingest.env["KEEL_TOPIC_ORDERS"]
    good = as_json(order(unique("c"), unique("o")))
    bad = as_json(order(unique("c"), unique("o")))
    bad["items"][0]["quantity"] = "two"
    status, body = post(f"{side_ingest.url}/events/orders", ndjson([good, bad]))

    assert status == 400
    assert body["field"] == "items[0].quantity" and body["line"] == 2
    assert "items[0].quantity" in body["error"] and "line 2" in body["error"]

    # A later request that succeeds: once it is on the topic, anything the rejected request
    # had produced (before its 400) would be there too.
    marker = as_json(order(unique("c"), unique("o")))
    assert post(f"{side_ingest.url}/events/orders", json.dumps(marker).encode())[0] == 202
    codec = get_codec()

    def event_ids() -> set[str] | None:
        ids = {
            codec.decode(m.value(), "OrderEvent")["event_id"]
            for m in read_topic(kafka.bootstrap, topic)
        }
        return ids if marker["event_id"] in ids else None

    ids = wait_for("the marker event on the topic", event_ids)
    assert good["event_id"] not in ids and bad["event_id"] not in ids
    assert metric_value(side_ingest.metrics(), "keel_connector_rejected_total") >= 1


@pytest.mark.parametrize(
    ("path", "event", "field"),
    [
        ("orders", order("c-1", "o-1"), "customer_id"),
        ("orders", order("c-1", "o-1"), "order_id"),
        ("orders", order("c-1", "o-1"), "event_id"),
        ("shipments", shipment("o-1", "s-1"), "shipment_id"),
        ("contacts", contact("k-1"), "contact_id"),
        ("contacts", contact("k-1"), "customer_id"),  # optional, but not blank when sent
    ],
)
def test_a_blank_id_is_a_400_naming_the_field(
    side_ingest: ConnectorProcess, path: str, event: tuple[str, dict[str, Any]], field: str
) -> None:
    for blank in ("", "  "):
        body = {**as_json(event), field: blank}
        status, answer = post(f"{side_ingest.url}/events/{path}", json.dumps(body).encode())
        assert (status, answer.get("field")) == (400, field), answer
        assert "an id must contain a character other than whitespace" in answer["error"]


def test_integers_written_with_a_zero_fraction_are_accepted_and_published_as_integers(
    kafka: Kafka, side_ingest: ConnectorProcess
) -> None:
    body = as_json(order(unique("c"), unique("o")))
    body["items"][0]["quantity"] = 2.0
    body["total_cents"] = 5998.0
    raw = json.dumps(body).encode()
    assert b'"quantity": 2.0' in raw
    status, answer = post(f"{side_ingest.url}/events/orders", raw)
    assert (status, answer["event_ids"]) == (202, [body["event_id"]]), answer

    body["items"][0]["quantity"] = 1.5
    status, answer = post(f"{side_ingest.url}/events/orders", json.dumps(body).encode())
    assert (status, answer["field"]) == (400, "items[0].quantity"), answer

    codec, topic = get_codec(), side_ingest.env["KEEL_TOPIC_ORDERS"]

    def published() -> dict[str, Any] | None:
        for message in read_topic(kafka.bootstrap, topic):
            event = codec.decode(message.value(), "OrderEvent")
            if event["event_id"] == body["event_id"]:
                return event
        return None

    event = wait_for("the order on its topic", published)
    assert (event["items"][0]["quantity"], event["total_cents"]) == (2, 5998)


def test_oversized_bodies_are_413_with_or_without_a_content_length(
    side_ingest: ConnectorProcess,
) -> None:
    limit = 1_048_576  # KEEL_INGEST_MAX_BYTES default
    event = json.dumps(as_json(order(unique("c"), unique("o")))).encode()
    body = event + b" " * (limit + 1 - len(event))  # valid JSON, one byte too many

    status, answer = post(f"{side_ingest.url}/events/orders", body)
    assert status == 413 and "bytes" in answer["error"]

    connection = http.client.HTTPConnection("127.0.0.1", side_ingest.port, timeout=30)
    chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
    connection.request(
        "POST", "/events/orders", body=chunks, encode_chunked=True, headers=bearer("write")
    )
    response = connection.getresponse()
    assert response.status == 413 and "error" in json.loads(response.read())

    fits = event + b" " * (limit - len(event))
    assert post(f"{side_ingest.url}/events/orders", fits)[0] == 202


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/events/orders", b"{not json", 400),
        ("POST", "/events/orders", b"", 400),
        ("POST", "/events/orders", b"[]", 400),
        ("POST", "/events/orders", b'{"total_cents": 1e999}', 400),
        ("POST", "/events/orders", b'{"total_cents": 99999999999999999999999}', 400),
        ("POST", "/events/orders", b"\xff\xfe\x00garbage", 400),
        ("POST", "/events/refunds", b"{}", 404),
        ("GET", "/events/orders", None, 405),
        ("GET", "/nowhere", None, 404),
    ],
)
def test_bad_requests_get_json_errors_never_5xx(
    side_ingest: ConnectorProcess, method: str, path: str, body: bytes | None, status: int
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", side_ingest.port, timeout=30)
    headers = {"Content-Type": "text/plain", **bearer("write")}
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    assert response.status == status
    assert "error" in json.loads(response.read())


SCHEMATHESIS_EXAMPLES = 40
"""Fuzzing examples per operation (on top of the examples and coverage phases' own cases)."""


def test_schemathesis_with_all_checks_passes_against_the_ingests_openapi(
    side_ingest: ConnectorProcess, tmp_path: Path
) -> None:
    """``schemathesis run --checks all`` on /openapi.json, as a client would check the ingest
    (tests/integration/schemathesis_run.py).

    Every answer is documented, valid input is accepted (202) and invalid input is refused
    (4xx), never a 5xx. About 1,000 requests in ~15 s (40 fuzzed per operation, plus the
    examples and coverage phases). tests/integration/schemathesis_hooks.py adds the NDJSON
    serializer and drops the one failure that is right (a date-time string outside years
    0001..9999 UTC; see there).
    """
    before = side_ingest.metrics()
    # as a department would send its events; ignored_auth checks the token is needed
    totals = schemathesis_run.run(side_ingest.url, tmp_path, SCHEMATHESIS_EXAMPLES, 1011,
                                  f"Authorization: Bearer {token('write')}")  # fmt: skip
    print(f"ingest: {totals.operations} operations, {totals.cases} cases, "
          f"{totals.failures} failures in {totals.seconds:.0f}s")  # fmt: skip
    assert totals.cases >= 500 and totals.operations == 5, totals.output[-3000:]

    after = side_ingest.metrics()
    published = metric_value(after, "keel_connector_published_total") - metric_value(
        before, "keel_connector_published_total"
    )
    rejected = metric_value(after, "keel_connector_rejected_total") - metric_value(
        before, "keel_connector_rejected_total"
    )
    assert published >= 20 and rejected >= 20, (published, rejected, totals.output[-3000:])


# --- PostgreSQL outbox -----------------------------------------------------------------------


def test_outbox_killed_mid_way_publishes_every_row_in_key_order_after_restart(
    kafka: Kafka, postgres: Postgres, outboxes: Outboxes
) -> None:
    database, topic = fresh_database(postgres), f"outbox-kill-{uuid.uuid4().hex[:8]}"
    orders = [unique("o") for _ in range(25)]
    rows = []
    for seq in range(5000):
        oid = orders[seq % len(orders)]
        event = as_json(shipment(oid, f"s-{seq}", "IN_TRANSIT", T0 + seq, note=str(seq)))
        rows.append((topic, oid, json.dumps(event)))
    env = {"KEEL_TOPIC_SHIPMENTS": topic, "KEEL_OUTBOX_BATCH": "50"}
    outbox = outboxes.start(kafka, database, "outbox-kill", **env)
    with psycopg.connect(database) as conn, conn.cursor() as cursor:  # one department commit
        cursor.executemany("INSERT INTO keel_outbox(topic, key, payload) VALUES (%s, %s, %s)", rows)

    wait_for("a quarter of the rows published", lambda: outbox_rows(database) <= 3750, 60, 0.005)
    outbox.kill()
    left = outbox_rows(database)
    assert 0 < left < 5000, f"the kill should land mid-way, {left} rows left"

    outbox.start()
    wait_for("every row published after the restart", lambda: outbox_rows(database) == 0)
    outbox.stop()

    codec = get_codec()
    seen: dict[bytes, list[int]] = {}
    for message in read_topic(kafka.bootstrap, topic, timeout=30):
        event = codec.decode(message.value(), "ShipmentEvent")
        assert message.key() == event["order_id"].encode()
        seen.setdefault(message.key(), []).append(int(event["note"]))
    published = [seq for seqs in seen.values() for seq in seqs]
    assert set(published) == set(range(5000)), "rows lost"
    for key, seqs in seen.items():
        first_seen = list(dict.fromkeys(seqs))  # duplicates allowed, reordering not
        assert first_seen == sorted(first_seen), f"key {key!r} reordered"
        assert len(first_seen) == 200


def test_outbox_moves_invalid_rows_aside_and_keeps_publishing_across_a_postgres_restart(
    kafka: Kafka, postgres: Postgres, outboxes: Outboxes
) -> None:
    database, tag = fresh_database(postgres), uuid.uuid4().hex[:8]
    topic = f"outbox-bad-{tag}"
    outbox = outboxes.start(kafka, database, "outbox-bad", KEEL_TOPIC_CONTACTS=topic)
    good = [as_json(contact(unique("k"), note=f"good {i}")) for i in range(3)]
    wrong_type = as_json(contact(unique("k")))
    wrong_type["channel"] = "PIGEON"
    mismatch = as_json(contact(unique("k")))
    blank_case = {**as_json(contact(unique("k"))), "contact_id": " "}
    blank_customer = {**as_json(contact(unique("k"))), "customer_id": ""}
    inserts = [
        (topic, good[0]["contact_id"], json.dumps(good[0])),
        (topic, wrong_type["contact_id"], json.dumps(wrong_type)),
        ("returns.v1", good[1]["contact_id"], json.dumps(good[1])),
        (topic, "someone-else", json.dumps(mismatch)),
        (topic, good[1]["contact_id"], json.dumps(good[1])),
        (topic, None, json.dumps(blank_case)),
        (topic, blank_customer["contact_id"], json.dumps(blank_customer)),
    ]
    with psycopg.connect(database) as conn, conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO keel_outbox(topic, key, payload) VALUES (%s, %s, %s)", inserts
        )
    wait_for("the batch handled", lambda: outbox_rows(database) == 0)

    with psycopg.connect(database) as conn:
        reasons = dict(conn.execute("SELECT id, reason FROM keel_outbox_rejected").fetchall())
    assert sorted(reasons) == [2, 3, 4, 6, 7]
    assert "payload.channel" in reasons[2] and "PIGEON" in reasons[2]
    assert "unknown topic 'returns.v1'" in reasons[3]
    assert "someone-else" in reasons[4] and "contact_id" in reasons[4]
    rule = "an id must contain a character other than whitespace"
    assert reasons[6] == f"payload.contact_id: {rule}"
    assert reasons[7] == f"payload.customer_id: {rule}"
    assert metric_value(outbox.metrics(), "keel_connector_rejected_total") == 5

    postgres.stop()  # the department's database restarts under the running connector
    postgres.start()
    with psycopg.connect(database) as conn:
        conn.execute(
            "INSERT INTO keel_outbox(topic, key, payload) VALUES (%s, %s, %s)",
            (topic, good[2]["contact_id"], json.dumps(good[2])),
        )
    wait_for("the row after the restart published", lambda: outbox_rows(database) == 0)
    assert outbox.health()["role"] == "leader"
    outbox.stop()

    codec = get_codec()
    notes = [
        codec.decode(m.value(), "ContactEvent")["note"] for m in read_topic(kafka.bootstrap, topic)
    ]
    assert sorted(set(notes)) == ["good 0", "good 1", "good 2"]


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[Kafka]:
    """A broker of this test's own, to crash without disturbing the session's worker."""
    broker = Kafka(tmp_path / "kafka", port=free_port(), log_file=tmp_path / "kafka.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def test_outbox_rides_out_a_kafka_crash_without_losing_or_reordering_rows(
    own_kafka: Kafka, postgres: Postgres, outboxes: Outboxes
) -> None:
    database, topic = fresh_database(postgres), f"outbox-crash-{uuid.uuid4().hex[:8]}"
    outboxes.start(own_kafka, database, "outbox-crash", KEEL_TOPIC_SHIPMENTS=topic)
    oid = unique("o")

    def insert(seqs: range) -> None:
        rows = [
            (topic, oid, json.dumps(as_json(shipment(oid, f"s-{n}", at=T0 + n, note=str(n)))))
            for n in seqs
        ]
        with psycopg.connect(database) as conn, conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO keel_outbox(topic, key, payload) VALUES (%s, %s, %s)", rows
            )

    insert(range(0, 100))
    wait_for("the first rows published", lambda: outbox_rows(database) == 0)
    own_kafka.kill()
    insert(range(100, 200))  # written while Kafka is gone
    own_kafka.start()
    wait_for("the rows written during the crash published", lambda: outbox_rows(database) == 0)

    codec = get_codec()
    notes = [
        int(codec.decode(m.value(), "ShipmentEvent")["note"])
        for m in read_topic(own_kafka.bootstrap, topic, timeout=30)
    ]
    assert list(dict.fromkeys(notes)) == list(range(200))


def test_a_second_outbox_instance_waits_as_standby_and_takes_over(
    kafka: Kafka, postgres: Postgres, outboxes: Outboxes
) -> None:
    database, topic = fresh_database(postgres), f"outbox-ha-{uuid.uuid4().hex[:8]}"
    env = {"KEEL_TOPIC_ORDERS": topic}
    first = outboxes.start(kafka, database, "outbox-ha-1", **env)
    wait_for("the first instance to lead", lambda: first.health()["role"] == "leader")
    second = outboxes.start(kafka, database, "outbox-ha-2", **env)
    assert second.health()["role"] == "standby"

    first.kill()
    wait_for("the standby to take over", lambda: second.health()["role"] == "leader")
    event = as_json(order(unique("c"), unique("o")))
    with psycopg.connect(database) as conn:
        conn.execute(
            "INSERT INTO keel_outbox(topic, key, payload) VALUES (%s, %s, %s)",
            (topic, event["customer_id"], json.dumps(event)),
        )
    wait_for("the new leader to publish", lambda: outbox_rows(database) == 0)
    assert len(read_topic(kafka.bootstrap, topic)) == 1


# --- Redis sink ------------------------------------------------------------------------------


def latest_states(bootstrap: str) -> dict[str, dict[str, Any] | None]:
    """customer_id -> the latest customer-state.v1 value as JSON (None for a tombstone).

    A key whose latest value is not a decodable state (none should be) is left out: the sink
    leaves Redis as it was for it, so there is nothing to compare.
    """
    codec, latest = get_codec(), {}
    for message in read_topic(bootstrap, "customer-state.v1", timeout=30):
        key, value = message.key().decode(), message.value()
        try:
            latest[key] = (
                None
                if value is None
                else to_json("CustomerState", codec.decode(value, "CustomerState"))
            )
        except CodecError:
            latest.pop(key, None)
    return latest


def test_redis_down_for_10s_then_every_customer_converges_and_tombstones_delete(
    kafka: Kafka,
    worker: Worker,
    departments: Departments,
    redis_server: Redis,
    redis_sink: ConnectorProcess,
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    steady = [(unique("c"), unique("o")) for _ in range(10)]
    departments.send(order(cid, oid, email=f"{cid}@example.com") for cid, oid in steady)
    wait_for(
        "the customers in Redis",
        lambda: all(client.get(f"keel:order:{oid}") == cid.encode() for cid, oid in steady),
    )
    retries_before = metric_value(redis_sink.metrics(), "keel_redis_retries_total")

    redis_server.stop()
    newcomers: list[tuple[str, str]] = []
    down_until, step = time.monotonic() + 10, 0
    while time.monotonic() < down_until:  # 10 s of changes while Redis is down
        cid, oid = steady[step % len(steady)]
        lines = [{"sku": "kettle", "quantity": step + 1, "unit_price_cents": 100}]
        departments.send([order(cid, oid, "AMENDED", T0 + (step + 1) * HOUR, lines=lines)])
        newcomers.append((unique("c"), unique("o")))
        departments.send([order(*newcomers[-1])])
        step += 1
        time.sleep(0.25)  # pacing the load, not waiting for an outcome
    wait_for(
        "the sink to notice Redis is down",
        lambda: metric_value(redis_sink.metrics(), "keel_redis_retries_total") > retries_before,
    )
    assert redis_sink.health()["redis"] == "down"
    redis_server.start()

    erased_cid, erased_oid = steady[0]
    wait_for(
        "the amendments in Redis",
        lambda: (
            (s := redis_state(client, erased_cid)) is not None
            and s["orders"][0]["status"] == "AMENDED"
        ),
    )
    departments.send_raw("customer-state.v1", erased_cid.encode(), None)  # the worker's erase

    def converged() -> bool:
        latest = latest_states(kafka.bootstrap)
        return all(redis_state(client, cid) == state for cid, state in latest.items())

    wait_for("Redis equal to the latest customer-state.v1 of every customer", converged, 90, 1)
    assert all(redis_state(client, cid) is not None for cid, _ in newcomers)
    assert client.get(f"keel:customer:{erased_cid}") is None
    assert client.get(f"keel:order:{erased_oid}") is None
    assert client.get(f"keel:email:{erased_cid}@example.com") is None
    assert http_get(f"{redis_sink.url}/healthz")[1]["redis"] == "up"


def test_redis_index_keys_name_the_owner_the_api_names_when_two_customers_claim_one_id(
    kafka: Kafka,
    worker: Worker,
    departments: Departments,
    redis_server: Redis,
    redis_sink: ConnectorProcess,
) -> None:
    """A conflicting history: B's orders carry A's e-mail and phone, and reuse A's order id.

    The worker's first bind wins (A), so the API answers A for all three; Redis must say A
    too, although B's state, which lists them, reached the sink after A's.
    """
    client = redis.Redis.from_url(redis_server.url)
    a, b, shared_order = unique("c-a"), unique("c-b"), unique("o")
    email, phone = f"{unique('shared')}@example.com", f"+49170{uuid.uuid4().int % 10**8:08d}"
    departments.send([order(a, shared_order, email=email, phone=phone)])
    lookups = {
        f"keel:email:{email}": f"/customers?email={email}",
        f"keel:phone:{phone}": f"/customers?phone={phone.replace('+', '%2B')}",
        f"keel:order:{shared_order}": f"/customers?order_id={shared_order}",
    }
    for path in lookups.values():
        wait_for(f"the API to resolve {path}", lambda p=path: worker.get(p)[0] == 200)

    departments.send([order(b, shared_order, "PLACED", T0 + HOUR, email=email, phone=phone)])
    departments.send([order(b, unique("o"), "PLACED", T0 + HOUR, email=email, phone=phone)])
    wait_for(
        "B's state, listing A's e-mail, phone and order, in Redis",
        lambda: (s := redis_state(client, b)) is not None
        and email in s["emails"]
        and phone in s["phones"]
        and shared_order in {o["order_id"] for o in s["orders"]},
    )
    for key, path in lookups.items():
        assert worker.get(path)[1]["customer_id"] == a  # the worker's first bind
        assert client.get(key) == a.encode(), f"{key} names {client.get(key)!r}, the API {a}"
