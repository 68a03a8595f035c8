"""Throughput on a pre-loaded backlog: keel's worker, the bare-consumer ceiling, the Quix peer.

Each contender's time is the span between the first and the last record it wrote (their
CreateTime), read back from the broker once its consumer group has committed everything;
events/s is the backlog it read divided by that span. The wall time from launching the
process until it was done (start-up and the completion check included) is recorded too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.generator import Item
from bench.kafka import (
    BenchKafkaError,
    Record,
    consumed,
    create_log_append_topic,
    partitions_of,
    record_span,
    topics_with_prefix,
    wait_caught_up,
)
from bench.profile import Profiler
from bench.worker import (
    ROOT,
    BenchError,
    KeelNames,
    KeelWorker,
    cpu_seconds,
    cpu_split,
    tree_rss,
)
from deploy.local.process import Child
from streams.encoding.codec import get_codec

SCHEMA_OF_KIND = {"order": "OrderEvent", "shipment": "ShipmentEvent", "contact": "ContactEvent"}
KEY_OF_KIND = {"order": "customer_id", "shipment": "order_id", "contact": "contact_id"}


def encode(items: Iterable[Item], names: KeelNames) -> list[Record]:
    """Avro-encode items into (topic, key, value) records, keyed as each department keys them."""
    codec = get_codec()
    topic_of = {"order": names.orders, "shipment": names.shipments, "contact": names.contacts}
    return [
        (
            topic_of[item.kind],
            item.event[KEY_OF_KIND[item.kind]].encode(),
            codec.encode(SCHEMA_OF_KIND[item.kind], item.event),
        )
        for item in items
    ]


def _figures(module: str, args: list[str], timeout: float, marker: str = "") -> dict[str, Any]:
    """Run ``python -m bench.<module> ARGS`` in its own process (a core of its own, like the
    worker) and return the JSON object on its last output line that holds ``marker``."""
    result = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    found = [
        ln[ln.index(marker) + len(marker) :] for ln in result.stdout.splitlines() if marker in ln
    ]
    if result.returncode != 0 or not found:
        raise BenchError(f"{module} failed: {(result.stdout + result.stderr)[-2000:]}")
    figures: dict[str, Any] = json.loads(found[-1])
    return figures


def ceiling(bootstrap: str, names: KeelNames, timeout: float) -> dict[str, Any]:
    """bench/ceiling.py's figures: a bare consumer reading and decoding the backlog."""
    return _figures("ceiling", [bootstrap, *names.inputs], timeout)


def faust_floor(bootstrap: str, names: KeelNames, events: int, timeout: float) -> dict[str, Any]:
    """bench/faust_floor.py's figures: faust consuming + decoding, nothing else."""
    from bench.faust_floor import RESULT  # faust's worker writes to stdout too

    args = [bootstrap, str(events), *names.inputs, str(timeout)]
    return _figures("faust_floor", args, timeout + 60, RESULT)


FINISHED = ("applied", "duplicate", "dead_letter")


def finished_events(worker: KeelWorker) -> int:
    """Input events the worker has finished with, from its ``keel_events_total`` counters."""
    status, body = worker.get("/metrics")
    if status != 200 or not isinstance(body, str):
        raise BenchError(f"worker /metrics answered {status}")
    total = 0.0
    for line in body.splitlines():
        if line.startswith("keel_events_total{") and any(
            f'outcome="{outcome}"' in line for outcome in FINISHED
        ):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def per_event(split: dict[str, Any], merged: int, read: int) -> dict[str, float | None]:
    """ms of CPU per event of each thread group of a :func:`bench.worker.cpu_split`: the join
    and faust's consumer (fetching for it) over the events the join finished (``merged``),
    the intake and the others over those read."""
    groups = split.get("by_group") or {}

    def ms(seconds: float | None, events: int) -> float | None:
        return None if seconds is None or not events else round(1000 * seconds / events, 4)

    return {
        "join_ms_per_event": ms(groups.get("join"), merged),
        "faust_consumer_ms_per_event": ms(groups.get("faust_consumer"), merged),
        "intake_ms_per_event": ms(groups.get("intake"), read),
        "librdkafka_ms_per_event": ms(groups.get("librdkafka"), read),
        "other_ms_per_event": ms(groups.get("other"), read),
    }


def _output_topics(bootstrap: str, names: KeelNames) -> list[str]:
    own = [t for t in topics_with_prefix(bootstrap, names.app_id) if "__assignor" not in t]
    return [names.state, *own]


def keel(
    bootstrap: str,
    worker: KeelWorker,
    names: KeelNames,
    events: int,
    timeout: float,
    budget: float,
    profiler: Profiler | None = None,
    broker_pid: int | None = None,
) -> dict[str, Any]:
    """Start ``worker`` on the backlog and wait until every customer state is final.

    When that takes longer than ``budget`` seconds the figure is the rate until then
    (input records the group committed / seconds since its first output) and ``complete``
    is False; the caller skips the rest of the backlog.
    """
    launched = worker.start()
    broker_cpu = cpu_seconds(broker_pid)
    ready = worker.wait_ready(timeout)
    threads_at_ready = worker.threads_cpu()
    if profiler is not None:  # only in a profiling run: it pauses the worker for every sample
        profiler.attach(worker.pid)
    rss_at_ready = worker.rss()
    try:
        done = wait_caught_up(
            bootstrap,
            names.groups,
            max(1.0, budget - (time.time() - launched)),
            interval=0.5,
            alive=worker.check_alive,
        )
        read, complete = events, True
    except BenchKafkaError:  # out of budget: the rate so far, from what the group committed
        done, complete = time.time(), False
        read = consumed(bootstrap, names.intake_group, list(names.inputs))
    cpu = worker.cpu()
    split = cpu_split(threads_at_ready, worker.threads_cpu())
    broker_cpu = cpu_seconds(broker_pid) - broker_cpu
    if profiler is not None:
        profiler.detach()
    span = record_span(bootstrap, _output_topics(bootstrap, names))
    seconds = (span.last if complete else done) - span.first
    # Unfinished, the inputs read say little (a shipment read may still wait in an internal
    # topic): count the events the worker finished (applied, found duplicate or dead-lettered;
    # customer-state records would undercount: a state is published once per chunk).
    merged = events if complete else finished_events(worker)
    return {
        "events": events,
        "events_read": read,
        "events_merged": merged,
        "complete": complete,
        "budget_s": budget,
        "seconds": seconds,
        "events_per_s": merged / seconds if seconds > 0 else 0.0,
        "inputs_read_per_s": read / seconds if seconds > 0 else 0.0,
        "wall_seconds": done - launched,
        "ready_after_s": ready - launched,
        "records_written": span.records,
        "rss_bytes": worker.rss(),
        "rss_at_ready_bytes": rss_at_ready,
        # the whole process from launch (start-up included) over the events finished
        "cpu_seconds": cpu,
        "cpu_ms_per_event": 1000 * cpu / merged if merged else None,
        # from /readyz 200 until done, per thread: the join over the events it finished,
        # the intake (and the rest) over the events read
        "cpu": {
            "since": "ready",
            **split,
            **per_event(split, merged=merged, read=read),
        },
        "broker_cpu_seconds": broker_cpu,
        "profiled": profiler is not None,
    }


def quix(
    bootstrap: str,
    python: str,
    names: KeelNames,
    events: int,
    run_dir: Path,
    timeout: float,
    budget: float,
) -> dict[str, Any]:
    """Run the Quix Streams peer (bench/peer_quix.py) on orders and contacts until done.

    Its output topic is created with LogAppendTime: Quix stamps output records with the
    input record's timestamp, which would say nothing about when it wrote them.
    """
    group = f"{names.app_id.removesuffix('-keel')}-quix"
    out = f"{group}.customer-state"
    create_log_append_topic(bootstrap, out, partitions_of(bootstrap, names.orders))
    log_file = run_dir / "quix.log"
    peer = Child("quix peer", log_file)
    launched = time.time()
    peer.start(
        [
            python,
            str(ROOT / "bench" / "peer_quix.py"),
            bootstrap,
            group,
            names.orders,
            names.contacts,
            out,
            str(run_dir / "quix-state"),
        ],
        cwd=ROOT,
    )

    def alive() -> None:
        if not peer.running:
            raise BenchError(f"quix peer exited ({peer.returncode}); see {log_file}")

    try:
        deadline = time.monotonic() + timeout
        while not (repartition := topics_with_prefix(bootstrap, f"repartition__{group}")):
            alive()
            if time.monotonic() > deadline:
                raise BenchError(f"quix peer made no repartition topic; see {log_file}")
            time.sleep(0.2)
        read, complete = events, True
        try:
            done = wait_caught_up(
                bootstrap,
                {group: [names.orders, names.contacts, *repartition]},
                max(1.0, budget - (time.time() - launched)),
                interval=0.5,
                alive=alive,
            )
        except BenchKafkaError:
            done, complete = time.time(), False
            read = consumed(bootstrap, group, [names.orders, names.contacts])
        rss = tree_rss(peer.pid) if peer.pid is not None else 0
        cpu = cpu_seconds(peer.pid)
    finally:
        peer.stop(30)
    span = record_span(bootstrap, [out])
    seconds = (span.last if complete else done) - span.first
    return {
        "events": events,
        "events_read": read,
        "complete": complete,
        "budget_s": budget,
        "seconds": seconds,
        "events_per_s": read / seconds if seconds > 0 else 0.0,
        "wall_seconds": done - launched,
        "records_written": span.records,
        "rss_bytes": rss,
        "cpu_seconds": cpu,
        "cpu_ms_per_event": 1000 * cpu / read if read else None,
        "topics_read": [names.orders, names.contacts],
    }
