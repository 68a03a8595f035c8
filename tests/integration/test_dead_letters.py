"""Bad records become dead letters with a reason; valid neighbours are all applied.

Each kind of bad input the issue names is produced to an input topic between valid events
of one customer, as a misbehaving department system would send it.
"""

from __future__ import annotations

import copy
import io
import json
import time
import uuid
from pathlib import Path

import fastavro
import pytest
from aiokafka.partitioner import murmur2

from deploy.local.stack import free_port
from streams.encoding.codec import MAGIC, get_codec
from tests.builders import T0, contact, order, shipment, unique
from tests.integration.harness import (
    Departments,
    Worker,
    metric_value,
    read_topic,
    wait_for,
)

pytestmark = pytest.mark.integration

HOUR = 3_600_000


def now_ms() -> int:
    return int(time.time() * 1000)


def _with_foreign_enum_symbol(event: dict) -> bytes:
    """An OrderEvent whose `type` is a symbol v1 does not have, under v1's fingerprint."""
    codec = get_codec()
    schema = copy.deepcopy(codec.schema("OrderEvent"))
    for f in schema["fields"]:
        if f["name"] == "type":
            f["type"]["symbols"] = [*f["type"]["symbols"], "REFUNDED"]
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), {**event, "type": "REFUNDED"})
    return MAGIC + codec.fingerprint("OrderEvent") + buf.getvalue()


def test_each_kind_of_bad_record_is_dead_lettered_and_valid_ones_around_it_apply(
    worker: Worker, departments: Departments, kafka: object
) -> None:
    codec = get_codec()
    cid, oid = unique("c"), unique("o")
    good_order = order(cid, oid, phone="+1 212 555 0101")
    _, template = order(cid, unique("o"))
    valid_bytes = codec.encode("OrderEvent", template)
    huge_lines = [
        {"sku": f"sku-{i:05d}", "quantity": 1, "unit_price_cents": 1} for i in range(9000)
    ]
    oversized = codec.encode("OrderEvent", order(cid, unique("o"), lines=huge_lines)[1])
    assert len(oversized) > 65536  # the test worker's KEEL_MAX_RECORD_BYTES
    bad = {
        "undecodable bytes": ("orders.v1", cid.encode(), b"not avro at all"),
        "unknown schema fingerprint": (
            "orders.v1",
            cid.encode(),
            MAGIC + b"\x00" * 8 + valid_bytes[10:],
        ),
        "missing required fields (truncated body)": (
            "orders.v1",
            cid.encode(),
            valid_bytes[: len(valid_bytes) // 2],
        ),
        "unknown enum symbol": ("orders.v1", cid.encode(), _with_foreign_enum_symbol(template)),
        "oversized record": ("orders.v1", cid.encode(), oversized),
        "key disagrees with body": ("orders.v1", b"someone-else", valid_bytes),
        "shipment key disagrees": (
            "shipments.v1",
            b"o-wrong",
            codec.encode("ShipmentEvent", shipment(oid, "s-x")[1]),
        ),
        "null value": ("contacts.v1", b"k-null", None),
        "blank customer_id": (
            "orders.v1",
            b"",
            codec.encode("OrderEvent", {**template, "customer_id": ""}),
        ),
        "blank customer_id on a contact": (
            "contacts.v1",
            b"k-blank",
            codec.encode("ContactEvent", {**contact("k-blank")[1], "customer_id": " "}),
        ),
    }
    departments.send([good_order])
    for topic, key, value in bad.values():
        departments.send_raw(topic, key, value)
    departments.send(
        [
            shipment(oid, unique("s"), "DELIVERED", T0 + HOUR),
            contact(unique("k"), at=T0 + 2 * HOUR, phone="+1 (212) 555-0101", note="all good"),
        ]
    )

    def dead_letters_of_this_test() -> list | None:
        mine = [
            m
            for m in read_topic(kafka.bootstrap, "deadletter.v1")  # type: ignore[attr-defined]
            if m.value() in {v for _, _, v in bad.values()} or m.key() == b"k-null"
        ]
        return mine if len(mine) >= len(bad) else None

    letters = wait_for("a dead letter for every bad record", dead_letters_of_this_test)
    assert len(letters) == len(bad)
    for m in letters:
        headers = {k: v.decode() for k, v in m.headers()}
        assert set(headers) >= {
            "x-error",
            "x-source-topic",
            "x-source-partition",
            "x-source-offset",
            "x-failed-at",
        }
        assert headers["x-error"].strip(), "a reason a person can act on"
        assert headers["x-failed-at"].endswith("Z")
        source = [
            v for t, k, v in bad.values() if v == m.value() and t == headers["x-source-topic"]
        ]
        assert source or m.key() == b"k-null"
    reasons = " | ".join(dict(m.headers())["x-error"].decode() for m in letters)
    assert "KEEL_MAX_RECORD_BYTES" in reasons
    assert "disagrees" in reasons
    assert reasons.count("an id must contain a character other than whitespace") == 2

    def all_valid_applied() -> dict | None:
        status, state = worker.get(f"/customers/{cid}")
        if status != 200 or not state["contacts"] or not state["orders"][0]["shipments"]:
            return None
        return state

    state = wait_for("the valid events around the bad ones", all_valid_applied)
    assert [o["order_id"] for o in state["orders"]] == [oid]
    assert state["orders"][0]["shipments"][0]["status"] == "DELIVERED"
    assert json.dumps(state).count("all good") == 1


def test_dead_letters_can_be_listed_with_reasons_and_replayed_to_their_source(
    worker: Worker, departments: Departments, kafka: object
) -> None:
    import subprocess
    import sys

    from tests.integration.harness import ROOT

    key = unique("c").encode()
    garbage = b"garbage " + key
    departments.send_raw("orders.v1", key, garbage)
    env = {**worker.env}

    def listed() -> list | None:
        out = subprocess.run(
            [sys.executable, "-m", "streams", "deadletters", "list", "--json"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        mine = [d for d in json.loads(out.stdout) if d["key"] == key.decode()]
        return mine or None

    [letter] = wait_for("the garbage record among the listed dead letters", listed)
    assert letter["reason"].startswith("not Avro single-object encoding")
    assert letter["source"].startswith("orders.v1[")

    replayed = subprocess.run(
        [sys.executable, "-m", "streams", "deadletters", "replay", letter["position"]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"replayed {letter['position']} to orders.v1" in replayed.stdout
    copies = [
        m
        for m in read_topic(kafka.bootstrap, "orders.v1")  # type: ignore[attr-defined]
        if m.value() == garbage
    ]
    assert len(copies) == 2  # the original and the replayed one, byte for byte

    wrong = subprocess.run(
        [sys.executable, "-m", "streams", "deadletters", "replay", "0:999999"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert wrong.returncode == 2 and "no dead letter at 0:999999" in wrong.stderr


def test_a_shipment_whose_order_never_comes_is_dead_lettered_after_the_hold_time(
    kafka: object, tmp_path: Path
) -> None:
    """A worker of its own (own group, own topics) holding events for KEEL_HOLD_MAX_S=2.

    The shipment waits for an order that never comes. Once its partition has seen events
    more than 2 s of event time later, it is in deadletter.v1 with the reason and the event
    as sent, and keel_held_events is back down; the order arriving afterwards finds nothing
    held (the dead letter can be replayed).
    """
    bootstrap = kafka.bootstrap  # type: ignore[attr-defined]
    tag = uuid.uuid4().hex[:8]
    topics = {kind: f"expiry-{kind}s-{tag}" for kind in ("order", "shipment", "contact")}
    deadletters = f"expiry-deadletters-{tag}"
    own = Worker(
        bootstrap, tmp_path / "data", free_port(), tmp_path / "worker.log",
        KEEL_APP_ID=f"keel-expiry-{tag}", KEEL_HOLD_MAX_S="2",
        KEEL_TOPIC_ORDERS=topics["order"], KEEL_TOPIC_SHIPMENTS=topics["shipment"],
        KEEL_TOPIC_CONTACTS=topics["contact"], KEEL_TOPIC_DEADLETTER=deadletters,
        KEEL_TOPIC_STATE=f"expiry-state-{tag}", KEEL_TOPIC_SIGNALS=f"expiry-signals-{tag}",
        KEEL_TOPIC_COMMANDS=f"expiry-commands-{tag}",
    )  # fmt: skip
    own.start()
    try:
        departments = Departments(bootstrap)
        departments.topics = topics
        oid = unique("o")
        kind, waiting = shipment(oid, unique("s"), "DISPATCHED", now_ms() - 60_000)
        departments.send([(kind, waiting)])
        wait_for("the shipment held", lambda: held_events(own) == 1)

        # time goes on on the shipment's partition: an order of a customer hashed there
        partition = key_partition(oid)
        cid = next(c for c in (unique("c") for _ in range(1000)) if key_partition(c) == partition)

        def expired() -> list | None:
            departments.send([order(cid, unique("o"), at=now_ms())])
            mine = [m for m in read_topic(bootstrap, deadletters) if m.key() == oid.encode()]
            return mine or None

        [letter] = wait_for("the held shipment dead-lettered", expired, timeout=60, interval=3)
        headers = {k: v.decode() for k, v in letter.headers()}
        assert headers["x-error"].startswith(f"no customer ever became known for order {oid}")
        assert headers["x-source-topic"] == topics["shipment"]
        assert get_codec().decode(letter.value(), "ShipmentEvent") == waiting
        wait_for("keel_held_events back down", lambda: held_events(own) == 0)
        departments.send([order(unique("c"), oid, at=now_ms())])  # too late: nothing released
        status, state = wait_for(
            "the late order applied",
            lambda: (r := own.get(f"/customers?order_id={oid}"))[0] == 200 and r or None,
        )
        assert state["orders"][0]["shipments"] == []
    finally:
        own.stop()


def held_events(worker: Worker) -> float:
    return metric_value(worker.get("/metrics")[1], "keel_held_events")


def key_partition(key: str, partitions: int = 4) -> int:
    """The partition of ``key`` on the test worker's topics (KEEL_PARTITIONS=4, murmur2)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
