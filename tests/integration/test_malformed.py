"""Malformed records by the thousand, mixed into valid traffic (issue #13 §3.4).

Random bytes, truncated Avro, an unknown schema fingerprint, a record of another topic's
schema, a key that disagrees with the body, null values, keys that are not UTF-8 and oversize
records go onto the orders topic in one shuffled stream with valid orders; deeply nested JSON
goes to the HTTP ingest. Every malformed record must come out as exactly one dead letter with
a reason (the ingest: a 400 with one), the worker must never restart, and the valid orders'
delay from produce to their customer's record on customer-state.v1 may grow by less than a
second at the 99th percentile over the same valid traffic sent alone just before. ``make
test`` sends 2,500 of them, ``make chaos`` 10,000.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer

from deploy.local.stack import Kafka, free_port
from streams.encoding.codec import MAGIC, get_codec
from streams.kafka.config import producer_config
from tests.builders import order, shipment, unique
from tests.integration.connectors_harness import ConnectorProcess, post
from tests.integration.harness import read_topic, wait_for
from tests.integration.oracle_checks import own_worker
from tests.integration.test_connectors import as_json

pytestmark = pytest.mark.integration

SCALE = int(os.environ.get("CHAOS_SCALE", "1"))
BAD = 2_500 * SCALE
VALID = 1_000 * SCALE
OVERSIZE = 10  # 1.2 MB each: a few suffice, and they are what costs
NESTED = 25 * SCALE
KINDS = ("random", "truncated", "fingerprint", "wrong-topic", "mismatch", "null", "utf8")


def test_thousands_of_malformed_records_are_dead_lettered_and_valid_ones_stay_fast(
    kafka: Kafka, tmp_path: Path
) -> None:
    rng = random.Random(20261205)
    codec = get_codec()
    app_id = unique("malformed")
    topic = f"{app_id}.orders"
    worker = own_worker(kafka, tmp_path, app_id, "worker")
    customers = [unique("c") for _ in range(100)]

    def malformed(i: int) -> tuple[str, bytes | None, bytes | None]:
        kind = "oversize" if i < OVERSIZE else KINDS[i % len(KINDS)]
        key = f"bad-{kind}-{i}".encode()
        _, placed = order(f"bad-{kind}-{i}", unique("o"))
        valid = codec.encode("OrderEvent", placed)
        if kind == "oversize":
            return kind, key, valid + b"\0" * 1_200_000
        if kind == "random":
            return kind, key, rng.randbytes(rng.randrange(1, 200))
        if kind == "truncated":
            return kind, key, valid[: rng.randrange(10, len(valid) - 1)]
        if kind == "fingerprint":
            return kind, key, MAGIC + rng.randbytes(8) + valid[10:]
        if kind == "wrong-topic":
            _, parcel = shipment(f"bad-{kind}-{i}", unique("s"), "DISPATCHED")
            return kind, key, codec.encode("ShipmentEvent", parcel)
        if kind == "mismatch":
            return kind, b"someone-else-" + key, valid
        if kind == "null":
            return kind, key, None
        return kind, b"\xff\xfe-" + key, valid  # utf8: a key that is not UTF-8

    bad = [malformed(i) for i in range(BAD)]
    Entry = tuple[str, bytes | None, bytes | None, str]  # kind, key, value, order id

    def valid_orders() -> list[Entry]:
        return [
            ("valid", e["customer_id"].encode(), codec.encode("OrderEvent", e), e["order_id"])
            for _, e in (order(customers[i % len(customers)], unique("o")) for i in range(VALID))
        ]

    # The same valid traffic twice, at the same pace: alone first (the baseline), then mixed
    # with the malformed records ("skip" holds a malformed record's place in the baseline).
    clean: list[Entry] = valid_orders() + [("skip", None, None, "")] * BAD
    mixed: list[Entry] = valid_orders() + [(kind, key, value, "") for kind, key, value in bad]
    rng.shuffle(clean)
    rng.shuffle(mixed)
    warm_up = valid_orders()[:300]  # a fresh worker's first seconds are slower: not measured
    order_ids = [entry[3] for entry in warm_up + clean + mixed if entry[0] == "valid"]

    port = free_port()
    ingest = ConnectorProcess(
        "connectors.sources.http_ingest", port, tmp_path / "ingest.log",
        KAFKA_BOOTSTRAP=kafka.bootstrap, KEEL_INGEST_PORT=str(port),
        KEEL_TOPIC_ORDERS=topic, KEEL_APP_ID=app_id,
    )  # fmt: skip
    producer = Producer(producer_config(kafka.bootstrap, **{"message.max.bytes": 4_000_000}))
    errors: list[str] = []
    try:
        worker.start()
        ingest.start(timeout=60)
        pid = worker.child.pid
        sent_at: dict[str, dict[str, int]] = {"warm-up": {}, "clean": {}, "mixed": {}}
        seconds = {}
        for phase, stream in (("warm-up", warm_up), ("clean", clean), ("mixed", mixed)):
            began = time.monotonic()
            for start in range(0, len(stream), 100):
                for kind, key, value, order_id in stream[start : start + 100]:
                    if kind == "skip":
                        continue
                    now = int(time.time() * 1000)
                    if kind == "valid":
                        sent_at[phase][order_id] = now
                    producer.produce(
                        topic, key=key, value=value, timestamp=now,
                        on_delivery=lambda err, _m: errors.append(str(err)) if err else None,
                    )  # fmt: skip
                    producer.poll(0)
                producer.flush(30)
                time.sleep(0.2)
            assert producer.flush(60) == 0 and not errors, errors[:3]
            seconds[phase] = time.monotonic() - began
            time.sleep(2.0)  # the phases' delays stay apart

        # deeply nested JSON at the ingest: a 400 with a reason each, and it keeps serving
        answers = []
        for i in range(NESTED):
            depth = 2_000 + 5_000 * (i % 20)
            body = (
                b"[" * depth + b"]" * depth
                if i % 2
                else b'{"customer_id": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"
            )
            answers.append(post(f"{ingest.url}/events/orders", body))
        refused = [a for a in answers if a[0] == 400 and a[1].get("error")]
        assert len(refused) == NESTED, [a for a in answers if a not in refused][:3]
        fine = as_json(order(customers[0], unique("o")))
        assert post(f"{ingest.url}/events/orders", json.dumps(fine).encode())[0] == 202
        order_ids.append(fine["order_id"])

        deadletter = f"{app_id}.deadletter"
        wait_for(
            "every malformed record dead-lettered",
            lambda: len(read_topic(kafka.bootstrap, deadletter, 30)) >= BAD,
            300,
            2.0,
        )
        letters = read_topic(kafka.bootstrap, deadletter, 60)
        expected_keys = Counter(key for _, key, _ in bad)
        got_keys = Counter(m.key() for m in letters)
        assert got_keys == expected_keys, "not exactly one dead letter per malformed record"
        reasons: Counter[str] = Counter()
        for m in letters:
            reason = dict(m.headers())["x-error"].decode()
            assert reason, m.key()
            reasons[_category(reason)] += 1
        assert reasons["unknown"] == 0, reasons

        # every valid order in its customer's state: the delay from produce to the state record
        states = f"{app_id}.state"

        def delays() -> dict[str, list[float]] | None:
            first_seen: dict[str, int] = {}
            for m in read_topic(kafka.bootstrap, states, 60):
                state = codec.decode(m.value(), "CustomerState")
                for o in state["orders"]:
                    first_seen.setdefault(o["order_id"], m.timestamp()[1])
            if any(oid not in first_seen for oid in order_ids):
                return None
            return {
                phase: sorted((first_seen[oid] - at) / 1000 for oid, at in sent.items())
                for phase, sent in sent_at.items()
            }

        seen = wait_for("every valid order on customer-state.v1", delays, 180, 2.0)
        p50 = {phase: d[len(d) // 2] for phase, d in seen.items()}
        p99 = {phase: d[int(len(d) * 0.99)] for phase, d in seen.items()}
        assert worker.child.running, worker.tail()
        assert worker.child.pid == pid
        assert worker.get("/healthz")[0] == 200
        assert ingest.health()["status"] == "ok"
    finally:
        ingest.stop()
        worker.stop()
    log = worker.log_file.read_text().lower()
    assert log.count("crash") == 0 and "traceback" not in log, worker.tail()
    added = p99["mixed"] - p99["clean"]
    print(
        f"\nmalformed: {BAD} malformed records ({dict(Counter(k for k, _, _ in bad))}) mixed "
        f"with {VALID} valid orders over {seconds['mixed']:.1f} s: {len(letters)} dead letters, "
        f"one per record, each with a reason ({dict(reasons)}); {NESTED} deeply nested JSON "
        f"bodies refused by the ingest with 400; 0 worker restarts; valid orders produce -> "
        f"state record p50 {p50['mixed']:.3f} s, p99 {p99['mixed']:.3f} s (the same {VALID} "
        f"alone: p50 {p50['clean']:.3f} s, p99 {p99['clean']:.3f} s): added p99 {added:.3f} s"
    )
    assert added < 1.0, f"malformed records added {added:.3f} s to the valid events' p99"


def _category(reason: str) -> str:
    """What a dead letter's reason says, roughly (for the figures; "unknown": no reason)."""
    text = reason.lower()
    for word, category in (
        ("too big to copy", "oversize"),
        ("keel_max_record_bytes", "oversize"),
        ("null", "null"),
        ("utf-8", "utf8"),
        ("disagrees", "mismatch"),
        ("fingerprint", "fingerprint"),
        ("schema", "schema"),
        ("truncated", "truncated"),
    ):
        if word in text:
            return category
    return "other" if text else "unknown"
