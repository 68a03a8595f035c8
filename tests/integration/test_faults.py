"""Nothing lost, nothing applied twice: SIGKILLs mid-stream, a lost disk, poison records.

Both tests run a worker on topics of their own and compare with the independent oracle
(tests/oracle.py), so they check what a desk would read, not keel's own bookkeeping.
"""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from deploy.local.stack import Kafka
from streams.config import Settings
from streams.encoding.codec import MAGIC, get_codec
from streams.kafka.config import producer_config
from streams.ops.deadletters import DeadLetterError, replay
from tests.builders import contact, order, shuffled_stories, unique
from tests.integration.harness import read_topic, wait_for
from tests.integration.oracle_checks import (
    departments_for,
    last_states,
    own_worker,
    settled,
    topic_mismatches,
)
from tests.oracle import expected_views

pytestmark = pytest.mark.integration

#: ``make chaos`` runs these with CHAOS_SCALE=4 (more customers, longer streams)
CUSTOMERS = 800 * int(os.environ.get("CHAOS_SCALE", "1"))
KILLS = 5


def test_sigkills_while_a_shuffled_history_streams_in_lose_nothing(
    kafka: Kafka, tmp_path: Path
) -> None:
    rng = random.Random(20261201)
    app_id = unique("kills")
    history, sent = shuffled_stories(rng, CUSTOMERS, resent=0.1)
    expected = expected_views(history, now_ms=int(time.time() * 1000))
    assert len(sent) >= 3000 and len(expected) >= CUSTOMERS // 2

    worker = own_worker(kafka, tmp_path, app_id, "worker-0")
    worker.start()
    departments = departments_for(kafka, app_id)
    # the history streams in over ~40 s from a thread while the worker is killed and restarted
    done = threading.Event()

    def stream_in() -> None:
        slices = 80
        size = len(sent) // slices + 1
        for i in range(slices):
            departments.send(sent[i * size : (i + 1) * size])
            time.sleep(0.5)
        done.set()

    producer = threading.Thread(target=stream_in, daemon=True)
    producer.start()
    kills = 0
    try:
        while kills < KILLS:
            time.sleep(rng.uniform(2.0, 6.0))
            worker.kill()
            kills += 1
            worker = own_worker(kafka, tmp_path, app_id, f"worker-{kills}")
            worker.start()
        producer.join(timeout=120)
        assert done.is_set(), "the history was not produced"
        settled(worker, expected, "API states equal to the oracle after the kills", 180)
        wrong_topic = topic_mismatches(kafka, f"{app_id}.state", expected)
        assert not wrong_topic, f"{len(wrong_topic)} last state records differ: {wrong_topic[:5]}"
    finally:
        worker.stop()
    print(
        f"\nfaults: {kills} SIGKILLs survived, {len(sent)} events "
        f"({len(sent) - len(history)} re-sent), "
        f"{len(expected)} customers checked on the API and customer-state.v1: 0 mismatches"
    )

    # the disk is lost too: everything comes back from the changelog topics
    shutil.rmtree(tmp_path / "data")
    restored = own_worker(kafka, tmp_path, app_id, "worker-restored")
    restored.start(timeout=180)
    try:
        settled(restored, expected, "API states equal to the oracle after a wiped restore", 30)
    finally:
        restored.stop()
    print(
        f"faults: wiped data dir restored from changelogs, {len(expected)} customers: 0 mismatches"
    )


def _big_producer(bootstrap: str) -> Producer:
    # A department's producer that allows big records: lz4 squeezes a 2 MB value of repeated
    # bytes below the broker's limit, so Kafka accepts what librdkafka's default would refuse.
    return Producer(producer_config(bootstrap, **{"message.max.bytes": 4_000_000}))


def test_poison_mixed_into_valid_orders_is_dead_lettered_and_every_valid_order_applies(
    kafka: Kafka, tmp_path: Path
) -> None:
    rng = random.Random(7)
    app_id = unique("poison")
    worker = own_worker(kafka, tmp_path, app_id, "worker")
    worker.start()
    codec = get_codec()
    cids = [unique("c") for _ in range(20)]
    cid = cids[0]
    valid = [
        order(cids[i % 20], unique("o"), at=1_760_000_000_000 + i,
              lines=[{"sku": f"sku-{i}", "quantity": 1, "unit_price_cents": 100}])
        for i in range(400)
    ]  # fmt: skip
    orders_topic = f"{app_id}.orders"
    fingerprint = codec.fingerprint("OrderEvent")

    def poison(i: int) -> tuple[bytes | None, bytes | None]:
        kind = i % 4
        if kind == 0:
            return cid.encode(), b"x" * 2_000_000  # oversize (accepted thanks to lz4)
        if kind == 1:
            return cid.encode(), MAGIC + fingerprint + bytes(rng.randrange(256) for _ in range(40))
        if kind == 2:
            _, other = order(unique("c"), unique("o"))
            return cid.encode(), codec.encode("OrderEvent", other)  # key disagrees with body
        return cid.encode(), bytes(rng.randrange(256) for _ in range(64))  # not Avro at all

    records: list[tuple[bytes | None, bytes | None]] = []
    for _, event in valid:
        records.append((event["customer_id"].encode(), codec.encode("OrderEvent", event)))
    bad = [poison(i) for i in range(200)]
    records += bad
    rng.shuffle(records)
    producer = _big_producer(kafka.bootstrap)
    errors: list[str] = []
    for key, value in records:
        producer.produce(
            orders_topic,
            key=key,
            value=value,
            on_delivery=lambda err, _m: errors.append(str(err)) if err else None,
        )
        producer.poll(0)
    assert producer.flush(60) == 0 and not errors, errors[:3]
    try:

        def applied() -> bool:
            counts = [worker.get(f"/customers/{c}") for c in cids]
            return all(status == 200 for status, _ in counts) and sum(
                len(state["orders"]) for _, state in counts
            ) == len(valid)

        wait_for("every valid order applied", applied, timeout=120)
        wait_for(
            "every poison record dead-lettered",
            lambda: len(read_topic(kafka.bootstrap, f"{app_id}.deadletter")) >= len(bad),
            timeout=60,
        )
        letters = read_topic(kafka.bootstrap, f"{app_id}.deadletter")
        assert len(letters) == len(bad)
        reasons = [dict(m.headers())["x-error"].decode() for m in letters]
        assert all(reasons)
        truncated = [m for m in letters if "x-truncated-from" in dict(m.headers())]
        assert len(truncated) == 50 and all(len(m.value()) <= 65536 for m in truncated)
        assert worker.get("/healthz")[0] == 200
        # a cut-down copy is not the record: `keel deadletters replay` refuses it
        settings = Settings.from_env(
            {"KAFKA_BOOTSTRAP": kafka.bootstrap, "KEEL_TOPIC_DEADLETTER": f"{app_id}.deadletter"}
        )
        cut = truncated[0]
        with pytest.raises(DeadLetterError, match="only the first bytes"):
            replay(settings, [f"{cut.partition()}:{cut.offset()}"])
    finally:
        worker.stop()
    crashes = worker.log_file.read_text().lower().count("crash")
    assert crashes == 0, worker.tail()
    print(
        f"\npoison: {len(records)} records mixed, {len(bad)} dead letters "
        f"({len(truncated)} truncated oversize), {len(valid)} valid orders applied, "
        f"/healthz 200, 0 agent crashes"
    )


def test_a_batch_kafka_refuses_halts_the_worker_unhealthy_instead_of_skipping_it(
    kafka: Kafka, tmp_path: Path
) -> None:
    app_id = unique("halt")
    # states are not bounded here (KEEL_MAX_STATE_BYTES far above Kafka's limit), so that
    # a record Kafka refuses is produced: what any refusal must lead to is tested with it
    worker = own_worker(kafka, tmp_path, app_id, "worker", KEEL_MAX_STATE_BYTES="50000000")
    worker.start()
    departments = departments_for(kafka, app_id)
    big, after = unique("c"), unique("c")
    # four orders of ~270 KB of lines each: valid input records, each small enough to pass
    # on, but together a customer state over what Kafka takes (message.max.bytes, 1,000,000)
    lines = [
        {"sku": f"sku-{i:06d}-{'x' * 40}", "quantity": 1, "unit_price_cents": 1}
        for i in range(5_000)
    ]
    try:
        departments.send([order(big, unique("o"), lines=lines) for _ in range(4)])

        def failed() -> dict | None:
            status, body = worker.get("/healthz")
            return body if status == 500 else None

        body = wait_for("/healthz to report the failure", failed, timeout=60)
        assert "could not be made durable" in body["error"], body
        text = worker.get("/metrics")[1]
        assert "keel_worker_healthy 0.0" in text
        # halted, not skipping: a later valid event is not applied either
        departments.send([order(after, unique("o"))])
        time.sleep(5)
        assert worker.get(f"/customers/{after}")[0] in (404, 503)
    finally:
        worker.stop()
    print(f"\nhalt: /healthz 500 ({body['error'][:80]}...), later events not applied")


def test_a_worker_starts_when_commands_topic_was_created_with_another_partition_count(
    kafka: Kafka, tmp_path: Path
) -> None:
    # A delivery connector that subscribes first has the broker create commands.v1 with its
    # default partition count; commands feed no table, so the worker must not refuse that.
    from confluent_kafka.admin import AdminClient, NewTopic

    app_id = unique("cmdparts")
    topic = f"{app_id}.commands"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(30)
    worker = own_worker(kafka, tmp_path, app_id, "worker", KEEL_TOPIC_COMMANDS=topic)
    try:
        worker.start(timeout=60)
        assert worker.get("/readyz")[0] == 200
    finally:
        worker.stop()


def test_a_customer_whose_history_outgrows_a_kafka_record_is_cut_not_a_stalled_partition(
    kafka: Kafka, tmp_path: Path
) -> None:
    app_id = unique("big")
    worker = own_worker(kafka, tmp_path, app_id, "worker")
    worker.start()
    try:
        departments = departments_for(kafka, app_id)
        big, other = unique("c"), unique("c")
        at = int(time.time() * 1000) - 3_600_000
        # 40 open contacts with 10 notes of 3 kB each: 1.2 MB of state, more than one
        # Kafka record may hold (its changelog and customer-state.v1 records carry it whole)
        departments.send(
            contact(f"{big}-k{i}", at=at + i * 100 + n, customer_id=big,
                    event_id=f"{big}-e{i}-{n}", note=f"{i}/{n} " + "x" * 3000)
            for i in range(40)
            for n in range(10)
        )  # fmt: skip
        departments.send([order(other, unique("o"), at=at)])  # after it, in the same stream

        def bounded() -> dict | None:
            status, state = worker.get(f"/customers/{big}")
            types = [s["type"] for s in state["signals"]] if status == 200 else []
            return state if "STATE_BOUNDED" in types else None

        state = wait_for("the big customer's state, cut", bounded, timeout=120)
        assert worker.get("/healthz")[0] == 200, worker.tail()
        wait_for("the next customer", lambda: worker.get(f"/customers/{other}")[0] == 200, 60)
        assert state["contacts"], "open contacts are the last thing a state sheds"
        last = last_states(kafka, f"{app_id}.state")[big]
        assert [s["type"] for s in last["signals"]] == ["STATE_BOUNDED"]
        print(f"\nbig state: 400 notes of 3 kB on 40 contacts cut to {len(state['contacts'])} "
              "contacts; worker healthy, the next customer applied")  # fmt: skip
    finally:
        worker.stop()
