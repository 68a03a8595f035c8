"""The failover phase: two workers under live load, then faults, with clients asking all along.

A second worker joins the measured one (its own data dir and port, the same group); once both
are ready and each holds a current standby copy of the other's partitions, events are offered
at ``failover_rate`` (bench.offer, topic freshness) while a client asks for a sample of
customers over and over, through both workers as a load balancer would (the next worker when
one refuses the connection or says 503). Three faults, each under its own offer run:

- **kill**: the second worker is SIGKILLed. Figures: the longest any sampled customer waited
  for an answer after the kill (from its first ask to its first 200, p100), and the seconds
  until processing resumed on every partition (the first customer-state.v1 record of each
  partition created after the kill; the slowest partition); then the victim is started again
  (data dir kept).
- **rolling**: both workers stopped and started one after the other (a deploy).
- **lost disk**: the second worker SIGKILLed, its data dir wiped, started again: its tables
  restored from the changelogs while the first holds a standby copy; seconds until ready.

For each: the answers (stale, failed: no worker gave a 200) and the events' topic freshness
over the whole fault (p50/p99, bench.offer).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from bench import phases
from bench.kafka import partitions_of
from bench.settings import BenchSettings
from bench.worker import BenchError, KeelNames, KeelWorker, http_get
from streams.kafka.config import client_config


class Asker(threading.Thread):
    """Asks ``GET /customers/{id}`` for ``customers`` in turn, through ``workers`` in rotation,
    passing a request on to the next worker when one refuses it or says 503; keeps
    ``(wall time, customer, status, stale)`` of every answer."""

    def __init__(self, workers: list[KeelWorker], customers: list[str]) -> None:
        super().__init__(daemon=True)
        self.workers, self.customers = workers, customers
        #: (asked at, answered at, customer, status, stale), wall-clock seconds
        self.answers: list[tuple[float, float, str, int, bool]] = []
        self.stop_flag = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop_flag.is_set():
            cid = self.customers[n % len(self.customers)]
            asked = time.time()
            status, body = 0, None
            for i in range(len(self.workers)):
                w = self.workers[(n + i) % len(self.workers)]
                status, body = http_get(f"{w.url}/customers/{cid}", timeout=10, role="read")
                if status not in (0, 503):
                    break
            stale = status == 200 and isinstance(body, dict) and bool(body.get("stale"))
            self.answers.append((asked, time.time(), cid, status, stale))
            n += 1
            time.sleep(0.005)

    def summary(self, since: float, until: float) -> dict[str, Any]:
        seen = [a for a in self.answers if since <= a[1] <= until]
        return {
            "answers": len(seen),
            "stale": sum(1 for a in seen if a[4]),
            "failed": sum(1 for a in seen if a[3] != 200),
            "failed_statuses": sorted({a[3] for a in seen if a[3] != 200}),
        }

    def answered_again_s(self, since: float) -> float | None:
        """The longest any customer waited for an answer after ``since``: from the first time
        it was asked to its first 200 (a client retrying; p100 over the customers); None until
        every customer was answered since."""
        asked: dict[str, float] = {}
        waited: dict[str, float] = {}
        for started, answered, cid, status, _ in self.answers:
            if started < since or cid in waited:
                continue
            asked.setdefault(cid, started)
            if status == 200:
                waited[cid] = answered - asked[cid]
        if set(waited) != set(self.customers):
            return None
        return round(max(waited.values()), 2)


def resumed_s(bootstrap: str, topic: str, since: float, timeout: float = 10.0) -> float | None:
    """Seconds from ``since`` (epoch s) until the slowest partition of ``topic`` had its first
    record created after it (None: a partition had none)."""
    consumer = Consumer(client_config(bootstrap, None, **{
        "group.id": "bench-failover", "enable.auto.commit": False}))  # fmt: skip
    try:
        stamp = int(since * 1000)
        wanted = [TopicPartition(topic, p, stamp) for p in range(partitions_of(bootstrap, topic))]
        starts = consumer.offsets_for_times(wanted, timeout=timeout)
        slowest = 0.0
        for tp in starts:
            if tp.offset < 0:
                return None
            consumer.assign([tp])
            msg = consumer.consume(1, timeout=timeout)
            if not msg or msg[0].error():
                return None
            slowest = max(slowest, msg[0].timestamp()[1] / 1000 - since)
        return round(slowest, 2)
    finally:
        consumer.close()


def _copies_current(workers: list[KeelWorker], customers: list[str], timeout: float) -> None:
    """Wait until each worker answers every customer (asked as a forwarded request: from its
    own table or its copy, never passed on)."""
    deadline = time.monotonic() + timeout
    for w in workers:
        for cid in customers:
            while True:
                status, _ = http_get(f"{w.url}/customers/{cid}", timeout=10, role="read",
                                     headers={"X-Keel-Forwarded-By": "bench"})  # fmt: skip
                if status == 200:
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"{w.url} has no current copy of {cid} after {timeout:g}s")
                time.sleep(0.2)


def run(
    s: BenchSettings,
    bootstrap: str,
    first: KeelWorker,
    env: dict[str, str],
    names: KeelNames,
    history_file: Path,
    work: Path,
    scratch: Path,
    customers: list[str],
    port: int,
) -> dict[str, Any]:
    second = KeelWorker(env, scratch / "worker-2", port, work / "worker-2.log")
    try:
        return _faults(s, bootstrap, first, second, names, history_file, work, customers)
    finally:
        second.stop()


def _faults(
    s: BenchSettings,
    bootstrap: str,
    first: KeelWorker,
    second: KeelWorker,
    names: KeelNames,
    history_file: Path,
    work: Path,
    customers: list[str],
) -> dict[str, Any]:
    joined = second.start()
    second.wait_ready(s.restore_timeout_s)
    first.wait_ready(s.ready_timeout_s)
    sample = random.Random(s.seed + 2).sample(customers, min(len(customers), 500))
    _copies_current([first, second], sample, s.restore_timeout_s)
    out: dict[str, Any] = {
        "second_ready_s": round(time.time() - joined, 2),
        "customers_asked": len(sample),
        "rate": s.failover_rate,
    }
    asker = Asker([first, second], sample)
    asker.start()
    try:

        def under_load(name: str, fault: Callable[[], dict[str, Any]]) -> dict[str, Any]:
            plan = phases._offer_plan(
                s, bootstrap, names, history_file, None, [(s.failover_rate, s.failover_s)]
            )
            plan["stop_when_saturated"] = False
            offer = phases._spawn("bench.offer", plan, work, f"failover-{name}")
            began = time.time()
            try:
                time.sleep(min(3.0, s.failover_s / 4))
                figures = fault()
            except BaseException:
                offer[0].kill()
                raise
            load = phases._result(offer, f"failover {name}", s.failover_s + s.grace_s + 60)
            step = load["steps"][0]
            return {
                **figures,
                **asker.summary(began, time.time()),
                "offered_per_s": step.get("offered_per_s"),
                "events": step.get("events"),
                "topic": step.get("topic"),
                "not_seen_within_grace": step.get("not_seen_within_grace"),
            }

        def kill() -> dict[str, Any]:
            second.kill()
            killed = time.time()
            deadline = killed + s.failover_s
            again = None
            while again is None and time.time() < deadline:
                time.sleep(0.2)
                again = asker.answered_again_s(killed)
            time.sleep(max(0.0, deadline - time.time() - 2))
            resumed = resumed_s(bootstrap, names.state, killed)
            second.start()
            second.wait_ready(s.ready_timeout_s)
            return {"answered_again_s": again, "processing_resumed_s": resumed}

        def rolling() -> dict[str, Any]:
            began = time.time()
            for w in (first, second):
                w.stop()
                w.start()
                w.wait_ready(s.ready_timeout_s)
            return {"rolled_s": round(time.time() - began, 2)}

        def lost_disk() -> dict[str, Any]:
            second.kill()
            second.wipe()
            launched = second.start()
            ready = second.wait_ready(s.restore_timeout_s)
            return {"ready_s": round(ready - launched, 2)}

        out["kill"] = under_load("kill", kill)
        out["rolling"] = under_load("rolling", rolling)
        out["lost_disk"] = under_load("lost-disk", lost_disk)
    finally:
        asker.stop_flag.set()
        asker.join(15)
    return out
