"""The intake does not run ahead of the join (streams/worker/backpressure.py).

A backlog produced at once to a worker's orders topic must wait there, where
``keel_consumer_lag_records`` and the lag alerts see it, not in keel's internal topics: the
intake has read all of it only once the join is near its end (seen: 84-86 % applied with the
limit; 29 % without one, ``KEEL_INTAKE_AHEAD_RECORDS=0``, which fails this test),
``keel_intake_waiting`` says so meanwhile, and every event is applied in the end.
"""

from __future__ import annotations

import threading
import time

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from deploy.local.stack import Kafka
from streams.kafka.config import KafkaSecurity, client_config
from tests.builders import order
from tests.integration.harness import (
    PARTITIONS,
    SCHEMA,
    Cluster,
    Departments,
    metric_value,
    wait_for,
)

EVENTS = 40_000
LIMIT = 20  # internal records the join may be behind


def _lag(admin: AdminClient, group: str, topics: list[str]) -> int:
    """Records of ``topics`` the group has not committed (a partition never committed: all)."""
    tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
    ends = {tp: f.result(10).offset for tp, f in admin.list_offsets(
        {tp: OffsetSpec.latest() for tp in tps}).items()}  # fmt: skip
    [done] = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, tps)]).values()
    at = {(tp.topic, tp.partition): tp.offset for tp in done.result(10).topic_partitions}
    return sum(max(0, end - max(at.get((tp.topic, tp.partition), 0), 0))
               for tp, end in ends.items())  # fmt: skip


def test_a_backlog_waits_in_the_departments_topic_not_in_keels_internal_topics(
    kafka: Kafka, cluster: Cluster, departments: Departments
) -> None:
    [worker] = cluster(1, "keel-ahead", env={"KEEL_INTAKE_AHEAD_RECORDS": str(LIMIT)})
    app_id = worker.env["KEEL_APP_ID"]
    internal = [f"{app_id}-customer-events", *(f"{app_id}-{ns}-refs"
                                               for ns in ("order", "contact", "email", "phone"))]
    orders_topic = departments.topics["order"]
    admin = AdminClient(client_config(kafka.bootstrap, KafkaSecurity({})))

    events = [order(f"c-{n % 6000}", f"o-{n}", event_id=f"e-{n}") for n in range(EVENTS)]
    encoded = [(e["customer_id"].encode(), departments.codec.encode(SCHEMA["order"], e))
               for _, e in events]  # fmt: skip
    #: (the join's internal lag, the intake's lag on the orders topic, events applied, when
    #: the sample began)
    samples: list[tuple[int, int, float, float]] = []
    waiting_seen: list[float] = []
    done = threading.Event()

    def metric(name: str, **labels: str) -> float:
        _, body = worker.get("/metrics")
        return metric_value(body, name, **labels)

    def applied() -> float:
        return metric("keel_events_total", topic=orders_topic, outcome="applied")

    def watch() -> None:
        while not done.is_set():
            try:
                began = time.monotonic()  # a sample begun after the publication saw all of it
                samples.append((_lag(admin, app_id, internal),
                                _lag(admin, f"{app_id}-intake", [orders_topic]), applied(),
                                began))
                waiting_seen.append(metric("keel_intake_waiting"))
            except Exception:  # noqa: BLE001 - a sample missed while topics are created
                pass
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    departments.producer.publish(orders_topic, encoded)
    published = time.monotonic()  # before this the intake may have read all there was so far
    deadline = time.monotonic() + 240
    while applied() < EVENTS and time.monotonic() < deadline:
        time.sleep(0.5)
    done.set()
    watcher.join(10)
    assert applied() == EVENTS, f"{applied():.0f} of {EVENTS} events applied\n{worker.tail()}"

    # when the intake had read the whole backlog, the join was near its end: the intake
    # was never more than about LIMIT internal records (a few thousand events here) ahead
    read_all = next((s for s in samples if s[3] > published and s[1] == 0), None)
    print(f"backlog {EVENTS}: the join at most {max(s[0] for s in samples)} internal records "
          f"behind; the intake had read all of it when {read_all} events were applied")
    assert read_all is not None and read_all[2] >= 0.6 * EVENTS, samples
    assert 1.0 in waiting_seen, waiting_seen

    def reading_again() -> bool:  # the join caught up: the intake reads on
        return metric("keel_intake_waiting") == 0.0

    wait_for("the intake to read again", reading_again, timeout=30)
