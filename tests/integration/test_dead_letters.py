"""Bad records become dead letters with a reason; valid neighbours are all applied.

Each kind of bad input the issue names is produced to an input topic between valid events
of one customer, as a misbehaving department system would send it.
"""

from __future__ import annotations

import copy
import io
import json

import fastavro
import pytest

from streams.codec import MAGIC, get_codec
from tests.builders import T0, contact, order, shipment, unique
from tests.integration.harness import Departments, Worker, read_topic, wait_for

pytestmark = pytest.mark.integration

HOUR = 3_600_000


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
