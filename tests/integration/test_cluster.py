"""A replicated 3-broker KRaft cluster: a broker killed mid-stream loses nothing.

The cluster is deploy/local's own (``KafkaCluster``, what ``KEEL_KAFKA_BROKERS=3 make up``
runs); the worker creates its topics with replication 3 and ``min.insync.replicas`` 2, and
the history streams in while one broker is SIGKILLed and, later, started again. Every
customer's API state and last customer-state.v1 record must equal the oracle's.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from deploy.local.stack import KafkaCluster, free_port
from streams.encoding.codec import get_codec
from streams.kafka.config import producer_config
from tests.builders import shuffled_stories, unique
from tests.integration.connectors_harness import ConnectorProcess, post
from tests.integration.harness import KEY_FIELD, SCHEMA, Worker
from tests.integration.oracle_checks import (
    departments_for,
    own_worker,
    settled,
    topic_mismatches,
)
from tests.integration.test_connectors import as_json
from tests.oracle import expected_views

pytestmark = pytest.mark.integration

#: ``make chaos`` runs these with CHAOS_SCALE=4 (more customers, longer streams)
CUSTOMERS = 300 * int(os.environ.get("CHAOS_SCALE", "1"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    with KafkaCluster(tmp_path_factory.mktemp("cluster"), brokers=3) as running:
        yield running


def replication_of(cluster: KafkaCluster, topic: str) -> tuple[set[int], str]:
    """(replica counts of the topic's partitions, its min.insync.replicas)."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    resource = ConfigResource(ResourceType.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    return {len(p.replicas) for p in partitions.values()}, configs["min.insync.replicas"].value


def test_a_broker_killed_mid_stream_loses_nothing(cluster: KafkaCluster, tmp_path: Path) -> None:
    rng = random.Random(20261202)
    app_id = unique("cluster")
    history, sent = shuffled_stories(rng, CUSTOMERS, resent=0.1)
    expected = expected_views(history, now_ms=int(time.time() * 1000))

    worker = own_worker(cluster, tmp_path, app_id, "worker", KEEL_REPLICATION="3")
    worker.start(timeout=180)
    for topic in (f"{app_id}.orders", f"{app_id}.state", f"{app_id}-customers-changelog"):
        assert replication_of(cluster, topic) == ({3}, "2"), topic

    departments = departments_for(cluster, app_id)
    # the contact centre posts its contacts to the HTTP ingest connector, as a client would:
    # an answer other than 202 is counted (the connector's error rate) and posted again
    port = free_port()
    ingest = ConnectorProcess(
        "connectors.sources.http_ingest", port, tmp_path / "ingest.log",
        KAFKA_BOOTSTRAP=cluster.bootstrap, KEEL_INGEST_PORT=str(port), KEEL_REPLICATION="3",
        KEEL_TOPIC_CONTACTS=f"{app_id}.contacts",
    ).start(timeout=60)  # fmt: skip
    done = threading.Event()
    send_seconds: list[float] = []
    refused: list[int] = []  # HTTP statuses other than 202
    posted = 0

    def post_contact(item: tuple[str, dict]) -> None:
        nonlocal posted
        body = json.dumps(as_json(item)).encode()
        while (status := post(f"{ingest.url}/events/contacts", body)[0]) != 202:
            refused.append(status)
            time.sleep(0.2)
        posted += 1

    def stream_in() -> None:
        slices = 40
        size = len(sent) // slices + 1
        for i in range(slices):
            began = time.monotonic()
            part = sent[i * size : (i + 1) * size]
            departments.send(item for item in part if item[0] != "contact")
            for item in part:
                if item[0] == "contact":
                    post_contact(item)
            send_seconds.append(time.monotonic() - began)
            time.sleep(0.5)
        done.set()

    producer = threading.Thread(target=stream_in, daemon=True)
    producer.start()
    victim = rng.randrange(3)
    try:
        time.sleep(rng.uniform(3.0, 6.0))
        worker_lines, ingest_lines = problems(worker.log_file), problems(ingest.log_file)
        refused_before = len(refused)
        cluster.kill(victim)
        killed_at = time.monotonic()
        time.sleep(10.0)  # the stream goes on with two of three brokers
        cluster.start_node(victim)
        outage = time.monotonic() - killed_at
        worker_lines = problems(worker.log_file) - worker_lines
        ingest_lines = problems(ingest.log_file) - ingest_lines
        refused_during = len(refused) - refused_before
        producer.join(timeout=180)
        assert done.is_set(), "the history was not produced"
        assert worker.child.running, worker.tail()
        assert worker.get("/healthz")[0] == 200, (
            f"unhealthy after the broker came back: {worker.tail()}"
        )
        settled(worker, expected, "API states equal to the oracle after a broker crash", 180)
        wrong_topic = topic_mismatches(cluster, f"{app_id}.state", expected)
        assert not wrong_topic, f"{len(wrong_topic)} last state records differ: {wrong_topic[:5]}"
    finally:
        worker.stop()
        ingest.stop()
    print(
        f"\ncluster: broker {victim + 1} of 3 SIGKILLed and back after {outage:.1f} s; "
        f"during the outage the worker logged {worker_lines} warning/error lines and the HTTP "
        f"ingest {ingest_lines}; the ingest answered {refused_during} contact POSTs with an "
        f"error during it, {len(refused)} of {posted} in the whole run "
        f"({sorted(set(refused))}, each posted again); "
        f"{len(sent)} events ({len(sent) - len(history)} re-sent), slowest slice of "
        f"{len(sent) // 40 + 1} sent in {max(send_seconds):.1f} s (median "
        f"{sorted(send_seconds)[len(send_seconds) // 2]:.2f} s); {len(expected)} customers "
        "checked on the API and customer-state.v1: 0 mismatches"
    )


def problems(log: Path) -> int:
    """Lines of a process' log at WARNING or ERROR so far: its error rate, read in windows."""
    try:
        return sum(
            1 for line in log.read_text().splitlines() if "WARNING" in line or "ERROR" in line
        )
    except FileNotFoundError:
        return 0


def handled_events(worker: Worker) -> int:
    """Input events the worker has applied, found duplicate or held (its /metrics)."""
    status, text = worker.get("/metrics")
    assert status == 200, text
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in str(text).splitlines()
            if line.startswith("keel_events_total{") and 'outcome="dead_letter"' not in line
        )
    )


def test_the_whole_cluster_down_for_30_s_mid_stream_resumes_by_itself(
    cluster: KafkaCluster, tmp_path: Path
) -> None:
    rng = random.Random(20261203)
    app_id = unique("outage")
    history, sent = shuffled_stories(rng, CUSTOMERS // 2, resent=0.1)
    expected = expected_views(history, now_ms=int(time.time() * 1000))
    worker = own_worker(cluster, tmp_path, app_id, "worker", KEEL_REPLICATION="3")
    worker.start(timeout=180)
    departments = departments_for(cluster, app_id)
    codec = get_codec()
    # a department's producer that keeps what it could not send yet (librdkafka retries it
    # until message.timeout.ms, 5 min by default) instead of blocking on each record
    producer = Producer(producer_config(cluster.bootstrap))
    first = len(sent) * 2 // 3

    def produce(items: list[tuple[str, dict]]) -> None:
        for kind, event in items:
            topic, key = departments.topics[kind], event[KEY_FIELD[kind]].encode()
            producer.produce(topic, key=key, value=codec.encode(SCHEMA[kind], event))
            producer.poll(0)

    try:
        produce(sent[:first])
        assert producer.flush(30) == 0
        cluster.kill_all()  # at once: the worker is still reading what was just sent
        down_at = time.monotonic()
        handled = handled_events(worker)
        produce(sent[first:])  # queued while no broker answers
        time.sleep(30.0)
        cluster.start()
        outage = time.monotonic() - down_at
        assert producer.flush(120) == 0, "the department's records never reached Kafka"
        settled(worker, expected, "API states equal to the oracle after the outage", 240)
        assert worker.child.running, worker.tail()
        assert worker.get("/healthz")[0] == 200, f"unhealthy after the outage: {worker.tail()}"
        wrong_topic = topic_mismatches(cluster, f"{app_id}.state", expected)
        assert not wrong_topic, f"{len(wrong_topic)} last state records differ: {wrong_topic[:5]}"
    finally:
        worker.stop()
    print(
        f"\ncluster: all 3 brokers SIGKILLed when the worker had handled {handled} of the "
        f"{first} events sent, started again after {outage:.1f} s; the same worker resumed "
        f"by itself; {len(sent)} events, {len(expected)} customers checked on "
        "the API and customer-state.v1: 0 mismatches"
    )
