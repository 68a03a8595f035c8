"""Offer live events at fixed rates and measure how fast keel makes them visible.

Each event's ``occurred_at`` is the moment it is produced, so the newest ``last_event_at`` of
its source in the customer's state says when that event arrived there. Two clocks run:

- **topic**: a consumer of customer-state.v1 (assigned at the end before the first event) sees
  the first record whose ``last_event_at[source]`` reaches the stamp: produce → record
  received (keel publishes a customer's state once per chunk of events, so a record may
  stand for several events of the customer);
- **api**: a sample of events (``probes_per_s``) is polled on ``GET /customers/{id}`` every
  ``poll_ms`` until the stamp shows: produce → first answer showing it (resolution poll_ms
  for the first 100 ms, then 10 % of the time waited so far). Probes send the read token
  (``KEEL_READ_TOKEN``, as a client has it after ``. .run/tokens.env``); every answer is
  counted by status (``api_answers``), so a refused probe shows instead of an empty figure.

Steps run in order, each at a fixed rate (paced every millisecond, never bursting ahead);
after a step whose events are not all seen within ``grace_s``, or whose p99 passes
``saturated_p99_s``, the ladder stops: that rate is past saturation. The world (a pickled
bench.generator.History) is advanced and written back, so the next run continues it.

    python -m bench.offer PLAN.json   # prints one JSON object with every step's figures
"""

from __future__ import annotations

import http.client
import json
import os
import pickle
import queue
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from bench.kafka import partitions
from bench.stats import latency_summary
from bench.throughput import KEY_OF_KIND, SCHEMA_OF_KIND
from streams.encoding.codec import get_codec
from streams.encoding.jsonconv import iso_ms
from streams.kafka.config import client_config, producer_config

# (customer, source) -> [(stamp, produced at)], oldest first
Pending = dict[tuple[str, str], list[tuple[int, float]]]


class StateWatcher(threading.Thread):
    """Reads customer-state.v1 from its end; matches records to produced stamps."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.pending: Pending = {}
        self.seen: list[float] = []
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.consumer = Consumer(
            {
                **client_config(bootstrap),
                "group.id": f"bench-offer-{time.time_ns()}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 20,
            }
        )
        # Start at each partition's current end as an explicit offset: with OFFSET_END the
        # consumer resolves "the end" only once it first fetches, up to a second later, and
        # the states of the first events offered meanwhile were never seen (~0.8 s of every
        # step read as lost events, so every rate looked saturated).
        tps = [
            TopicPartition(tp.topic, tp.partition, self.consumer.get_watermark_offsets(tp, 10)[1])
            for tp in partitions(bootstrap, [topic])
        ]
        self.consumer.assign(tps)
        self.ready = threading.Event()

    def run(self) -> None:
        codec = get_codec()
        while not self.stop_flag.is_set():
            msg = self.consumer.poll(0.05)
            self.ready.set()
            if msg is None or msg.error() or msg.value() is None:
                continue
            now = time.time()
            state = codec.decode(msg.value(), "CustomerState")
            cid = state["customer_id"]
            with self.lock:
                for source, at in state["last_event_at"].items():
                    waiting = self.pending.get((cid, source))
                    # A state shows an event once its source's newest time reaches the stamp:
                    # a chunk publishes a customer's state once, so two events of one customer
                    # and source in one chunk share a record showing only the later stamp.
                    while waiting and waiting[0][0] <= at:
                        self.seen.append(now - waiting.pop(0)[1])
                    if waiting == []:
                        del self.pending[(cid, source)]
        self.consumer.close()


def prober(
    url: str, jobs: queue.Queue, results: list, answers: Counter, poll_s: float, timeout_s: float
) -> None:
    """Probe each job's customer until its stamp shows; ``answers`` counts every status
    (``"error"``: nothing answered)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {"Authorization": f"Bearer {os.environ['KEEL_READ_TOKEN']}"}
    while True:
        job = jobs.get()
        if job is None:
            return
        cid, source, stamp, produced = job
        deadline = produced + timeout_s
        wait = poll_s
        while True:
            try:
                conn.request("GET", f"/customers/{cid}", headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                answers[str(resp.status)] += 1
                if resp.status == 200:
                    shown = json.loads(body)["last_event_at"].get(source, "")
                    if shown >= stamp:
                        results.append(time.time() - produced)
                        break
            except (OSError, http.client.HTTPException, ValueError):
                answers["error"] += 1
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
            if time.time() > deadline:
                results.append(None)
                break
            time.sleep(wait)
            # Polling every poll_s for the whole grace period would load the worker with
            # requests for events it has not got to (and queue the next probes behind them):
            # past 100 ms the interval grows to at most 10 % of the time already waited.
            if time.time() - produced > 0.1:
                wait = min(max(poll_s, (time.time() - produced) / 10), 0.5)


def run_step(
    plan: dict,
    history: Any,
    producer: Producer,
    watcher: StateWatcher,
    rate: float,
    duration: float,
) -> dict[str, Any]:
    codec = get_codec()
    topic_of = plan["topics"]
    jobs: queue.Queue = queue.Queue()
    api: list[float | None] = []
    probe = plan["api_url"] is not None and plan["probes_per_s"] > 0
    answers = [Counter[str]() for _ in range(plan["probe_threads"] if probe else 0)]
    threads = [
        threading.Thread(
            target=prober,
            args=(plan["api_url"], jobs, api, counts, plan["poll_ms"] / 1000, plan["grace_s"]),
            daemon=True,
        )
        for counts in answers
    ]
    for t in threads:
        t.start()
    every = max(1, round(rate / plan["probes_per_s"])) if probe else 0
    failed: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failed.append(err.str())

    total = int(rate * duration)
    with watcher.lock:
        watcher.seen = []
    start = time.time()
    for i in range(total):
        target = start + i / rate
        delay = target - time.time()
        if delay > 0.001:
            time.sleep(delay)
        now = time.time()
        stamp = int(now * 1000)
        kind, event, cid = history.live(stamp)
        value = codec.encode(SCHEMA_OF_KIND[kind], event)
        with watcher.lock:
            watcher.pending.setdefault((cid, event["source"]), []).append((stamp, now))
        producer.produce(
            topic_of[kind], value, event[KEY_OF_KIND[kind]].encode(), on_delivery=on_delivery
        )
        producer.poll(0)
        if every and i % every == 0:
            jobs.put((cid, event["source"], iso_ms(stamp), now))
    offered_s = time.time() - start
    producer.flush(30)
    deadline = time.time() + plan["grace_s"]
    while time.time() < deadline:
        with watcher.lock:
            if not watcher.pending:
                break
        time.sleep(0.05)
    for _ in threads:
        jobs.put(None)
    for t in threads:
        t.join(plan["grace_s"] + 5)
    with watcher.lock:
        seen, missing = list(watcher.seen), sum(map(len, watcher.pending.values()))
        watcher.pending.clear()
    topic = latency_summary(seen, total)
    api_seen = [x for x in api if x is not None]
    answered = sum(answers, Counter[str]())
    result = {
        "offered_per_s": rate,
        "achieved_offer_per_s": total / offered_s if offered_s > 0 else 0.0,
        "duration_s": duration,
        "events": total,
        "produce_failures": len(failed),
        "topic": topic,
        "api": latency_summary(api_seen, len(api)) if probe else None,
        # every probe request by status ("error": no answer); anything not 2xx is reported
        "api_answers": dict(sorted(answered.items())) if probe else None,
        "api_not_2xx": sum(n for k, n in answered.items() if not k.startswith("2")),
        "not_seen_within_grace": missing,
    }
    p99 = topic["p99_ms"]
    result["saturated"] = bool(
        missing > 0.01 * total or p99 is None or p99 > 1000 * plan["saturated_p99_s"]
    )
    return result


def main(plan_path: str) -> int:
    plan = json.loads(Path(plan_path).read_text())
    world = Path(plan["history"])
    history = pickle.loads(world.read_bytes())
    watcher = StateWatcher(plan["bootstrap"], plan["state_topic"])
    watcher.start()
    watcher.ready.wait(30)
    producer = Producer(producer_config(plan["bootstrap"]))
    steps = []
    try:
        for rate, duration in plan["steps"]:
            step = run_step(plan, history, producer, watcher, rate, duration)
            steps.append(step)
            if step["saturated"] and plan.get("stop_when_saturated", True):
                break
    finally:
        watcher.stop_flag.set()
        watcher.join(10)
        world.write_bytes(pickle.dumps(history))
    print(json.dumps({"steps": steps}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
