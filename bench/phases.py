"""The benchmark's phases after the backlog: correctness check, live load, queries, restarts.

Every phase talks to keel through its public interfaces only (input topics, the query API,
customer-state.v1) and to the broker for progress; the worker is a ``KeelWorker`` subprocess.
"""

from __future__ import annotations

import json
import pickle
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.generator import History, Item
from bench.kafka import BenchKafkaError, end_offsets, group_lag, wait_caught_up
from bench.settings import BenchSettings
from bench.worker import (
    CPU_GROUPS,
    ROOT,
    BenchError,
    KeelNames,
    KeelWorker,
    cpu_split,
    dir_bytes,
    http_get,
)
from deploy.local.process import Child
from streams.domain.state import apply_event, empty_state, view
from streams.encoding.jsonconv import to_json
from streams.kafka.config import client_config

#: Fields that legitimately differ from a replay: arrival-dependent bookkeeping
#: (docs/contract.md §5) and signals, which also depend on the wall clock at merge time.
NOT_COMPARED = ("version", "updated_at", "signals")


def expected_states(items: Iterable[Item], sample: set[str]) -> dict[str, dict[str, Any]]:
    """Public JSON state of each sampled customer after all its events (streams.domain.state)."""
    states: dict[str, dict[str, Any]] = {}
    for kind, event, cid in items:
        if cid in sample:
            before = states.get(cid) or empty_state(cid)
            states[cid], _ = apply_event(before, kind, event, 0)
    return {cid: comparable(to_json("CustomerState", view(s))) for cid, s in states.items()}


def comparable(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k not in NOT_COMPARED}


def verify(worker: KeelWorker, expected: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Ask the API for every sampled customer and compare with the replayed state."""
    matching, mismatched = 0, []
    for cid, want in expected.items():
        status, body = worker.get(f"/customers/{cid}")
        if status == 200 and isinstance(body, dict) and comparable(body) == want:
            matching += 1
            continue
        got = comparable(body) if isinstance(body, dict) else {}
        fields = sorted(k for k in want if got.get(k) != want[k]) if status == 200 else []
        mismatched.append({"customer_id": cid, "status": status, "fields": fields})
    return {
        "checked": len(expected),
        "matching": matching,
        "mismatches": mismatched[:10],
        "ignored_fields": list(NOT_COMPARED),
    }


def footprint(worker: KeelWorker, customers: int, base_rss: int) -> dict[str, Any]:
    """RSS and RocksDB size, scaled to 100,000 customers.

    RSS is modelled as a fixed base (the worker when it became ready, before it held any
    state) plus a part growing with the customers; only that part is scaled, so a tiny run
    does not extrapolate the interpreter's own 100 MB. Disk is scaled whole.
    """
    rss, disk = worker.rss(), dir_bytes(worker.data_dir)
    scale = 100_000 / customers if customers else 0.0
    base = min(base_rss, rss)
    return {
        "customers": customers,
        "rss_bytes": rss,
        "rss_base_bytes": base,
        "disk_bytes": disk,
        "rss_mb_per_100k_customers": round((base + (rss - base) * scale) / 1e6, 1),
        "disk_mb_per_100k_customers": round(disk * scale / 1e6, 1),
    }


def skip_backlog(bootstrap: str, worker: KeelWorker, names: KeelNames, timeout: float) -> int:
    """Stop the worker, move its groups past every unread record, start it again.

    The worker is a static member of its groups (KEEL_INSTANCE_ID): they keep it until its
    session times out, and Kafka moves no offset of a group with a member, so this waits
    for that.

    Used when a phase left more than the worker can drain in time, so the next phase starts
    from a worker that keeps up; internal topics (forwards, lookups, binds) are skipped too,
    so some joins stay undone: the states are not checked after this. Returns the records
    skipped.
    """
    worker.stop()
    skipped = group_lag(bootstrap, names.groups)
    admin = AdminClient(client_config(bootstrap))
    for group, topics in names.groups.items():
        ends = end_offsets(bootstrap, topics)
        request = ConsumerGroupTopicPartitions(
            group, [TopicPartition(t, p, off) for (t, p), off in ends.items()]
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                done = admin.alter_consumer_group_offsets([request])[group].result(timeout=30)
                # refused partitions come back with an error, not as an exception: while the
                # stopped worker is still a (static) member of the group, until its session
                # ends, every partition is refused
                refused = [tp for tp in done.topic_partitions or () if tp.error is not None]
                if refused:
                    raise BenchError(f"{len(refused)} partition(s) refused: {refused[0].error}")
                break
            except Exception as exc:  # noqa: BLE001 - the group may still be winding down
                if time.monotonic() > deadline:
                    raise BenchError(f"cannot move {group} past the backlog: {exc}") from exc
                time.sleep(1)
    worker.start()
    worker.wait_ready(timeout)
    return skipped


def drain(
    bootstrap: str, worker: KeelWorker, names: KeelNames, timeout: float, restart_timeout: float
) -> dict:
    """Wait until the worker caught up; skip the rest of the inputs if it cannot in time."""
    start = time.monotonic()
    try:
        wait_caught_up(
            bootstrap,
            names.groups,
            timeout,
            interval=0.5,
            alive=worker.check_alive,
        )
        return {"drained_s": round(time.monotonic() - start, 2), "skipped_events": 0}
    except BenchKafkaError:
        skipped = skip_backlog(bootstrap, worker, names, restart_timeout)
        return {"drained_s": None, "skipped_events": skipped}


def caught_up(
    bootstrap: str, worker: KeelWorker, names: KeelNames, timeout: float, restart_timeout: float
) -> dict[str, Any]:
    """Before a live phase: the worker must have no backlog (both its groups committed every
    record: the inputs, and the internal topics the intake forwards to).

    A backlog left is drained for up to ``timeout`` s, else skipped (:func:`skip_backlog`);
    returns the records it was behind and what became of them. Raises if it is still behind.
    """
    lag = group_lag(bootstrap, names.groups)
    settled = drain(bootstrap, worker, names, timeout, restart_timeout) if lag else {}
    left = group_lag(bootstrap, names.groups)
    for _ in range(5):  # a caught-up worker's own timers (signal clock, voice) send records too
        if not left:
            break
        time.sleep(0.5)
        left = group_lag(bootstrap, names.groups)
    if left:
        raise BenchError(f"the worker is still {left:,} records behind before a live phase")
    return {"lag_records": lag, "lag_records_after": left, **settled}


def live_cpu(before: dict[str, Any], after: dict[str, Any], events: int) -> dict[str, Any]:
    """The worker's CPU over a live step, per thread group, and per event offered."""
    split = cpu_split(before, after)
    groups = split["by_group"]

    def ms(seconds: float | None) -> float | None:
        return None if seconds is None or not events else round(1000 * seconds / events, 4)

    return {
        "events": events,
        **split,
        "ms_per_event": ms(split["seconds"]),
        "ms_per_event_by_group": None if groups is None else {g: ms(groups[g]) for g in CPU_GROUPS},
    }


def idle_cpu(worker: KeelWorker, seconds: float) -> dict[str, Any]:
    """The worker's CPU while it has nothing to do (caught up, no input, no queries), per
    second and per thread group: the fixed cost its timers, gauges and consumers pay whatever
    the load, which a live step's CPU per event includes (spread over its events)."""
    before = worker.threads_cpu()
    time.sleep(seconds)
    split = cpu_split(before, worker.threads_cpu())
    groups = split["by_group"]
    return {
        "seconds": seconds,
        "cpu_s_per_s": round(split["seconds"] / seconds, 4),
        "by_group_s_per_s": None
        if groups is None
        else {g: round(groups[g] / seconds, 4) for g in CPU_GROUPS},
    }


def _offer_plan(
    s: BenchSettings,
    bootstrap: str,
    names: KeelNames,
    history_file: Path,
    api_url: str | None,
    steps: list[tuple[float, float]],
) -> dict:
    return {
        "bootstrap": bootstrap,
        "topics": {"order": names.orders, "shipment": names.shipments, "contact": names.contacts},
        "state_topic": names.state,
        "history": str(history_file),
        "api_url": api_url,
        "probes_per_s": s.probes_per_s,
        "probe_threads": 4,
        "poll_ms": s.poll_ms,
        "grace_s": s.grace_s,
        "saturated_p99_s": s.saturated_p99_s,
        "steps": steps,
    }


def _spawn(module: str, plan: dict, work: Path, name: str) -> tuple[Child, Path]:
    """Start ``python -m module plan.json``; the child and the file its stdout goes to."""
    plan_file = work / f"{name}.plan.json"
    plan_file.write_text(json.dumps(plan))
    out = work / f"{name}.out"
    with out.open("wb") as stdout:  # stderr (its log) goes to name.log
        child = Child(name, work / f"{name}.log")
        child.start([sys.executable, "-m", module, str(plan_file)], cwd=ROOT, stdout=stdout)
    return child, out


def _result(spawned: tuple[Child, Path], what: str, timeout: float) -> dict[str, Any]:
    """The JSON result a spawned process printed last, once it exited."""
    child, out = spawned
    try:
        code = child.wait(timeout)
    finally:
        child.kill()  # timed out, or the caller was interrupted: never leave it running
    if code is None:
        raise BenchError(f"{what} did not finish in {timeout:g}s")
    text = out.read_text()
    if code != 0 or not text.strip():
        raise BenchError(f"{what} failed with exit code {code}{child.tail()}")
    result: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
    return result


def freshness(
    s: BenchSettings,
    bootstrap: str,
    worker: KeelWorker,
    names: KeelNames,
    history_file: Path,
    work: Path,
) -> dict[str, Any]:
    """The base rate; then higher steps until keel saturates, or lower ones until it keeps up.

    Each step is its own offer run; a step that leaves a backlog is drained (or skipped)
    before the next, so every step starts from a worker that is caught up. The worker's CPU
    per thread over each step and its drain, per event offered, is the step's ``worker_cpu``
    (the API probes' requests included; when the step's backlog had to be skipped, until the
    end of its grace period: ``until``).
    """
    steps: list[dict[str, Any]] = []
    idle = idle_cpu(worker, s.idle_s)

    def step(rate: float, duration: float) -> dict[str, Any]:
        plan = _offer_plan(s, bootstrap, names, history_file, worker.url, [(rate, duration)])
        name = f"freshness-{rate:g}"
        before = worker.threads_cpu()
        out = _result(_spawn("bench.offer", plan, work, name), name, duration + s.grace_s + 60)
        result: dict[str, Any] = out["steps"][0]
        offered = worker.threads_cpu()
        result["drain"] = drain(bootstrap, worker, names, s.drain_s, s.ready_timeout_s)
        after = worker.threads_cpu()
        if after["pid"] == before["pid"]:
            result["worker_cpu"] = {"until": "drained", **live_cpu(before, after, result["events"])}
        else:  # the backlog it left was skipped (the worker restarted): until the grace ended
            result["worker_cpu"] = {"until": "grace", **live_cpu(before, offered, result["events"])}
        steps.append(result)
        return result

    base = step(s.fresh_rate, s.fresh_duration_s)
    if base["saturated"]:
        for rate in sorted((r for r in s.fresh_down_steps if r < s.fresh_rate), reverse=True):
            if not step(rate, s.fresh_step_duration_s)["saturated"]:
                break
    else:
        for rate in sorted(r for r in s.fresh_steps if r > s.fresh_rate):
            if step(rate, s.fresh_step_duration_s)["saturated"]:
                break
    unsaturated = [st["offered_per_s"] for st in steps if not st["saturated"]]
    return {
        "idle": idle,
        "base": base,
        "steps": sorted(steps, key=lambda st: st["offered_per_s"]),
        "max_unsaturated_rate": max(unsaturated) if unsaturated else None,
    }


def queries(
    s: BenchSettings,
    bootstrap: str,
    worker: KeelWorker,
    names: KeelNames,
    history_file: Path,
    work: Path,
    customers: list[tuple[str, str]],
) -> dict[str, Any]:
    """Query load from its own process while another offers fresh_rate events/s."""
    ingest = _offer_plan(
        s, bootstrap, names, history_file, None, [(s.fresh_rate, s.query_duration_s + 2)]
    )
    ingest["stop_when_saturated"] = False
    offer = _spawn("bench.offer", ingest, work, "query-ingest")
    plan = {
        "api_url": worker.url,
        "rate": s.query_rate,
        "duration_s": s.query_duration_s,
        "threads": s.query_threads,
        "customers": customers,
    }
    try:
        time.sleep(1.0)
        load = _result(
            _spawn("bench.query_load", plan, work, "query"), "query load", s.query_duration_s + 90
        )
    except BaseException:
        offer[0].kill()
        raise
    load["ingest"] = _result(offer, "ingest during queries", s.query_duration_s + s.grace_s + 60)
    return load


def restart(worker: KeelWorker, wipe: bool, timeout: float) -> dict[str, Any]:
    """SIGKILL the worker, keep or wipe its RocksDB dir, start it; time until /readyz is 200."""
    worker.kill()
    if wipe:
        worker.wipe()
    launched = worker.start()
    alive = None
    deadline = time.monotonic() + timeout
    while alive is None and time.monotonic() < deadline:
        worker.check_alive()
        if http_get(f"{worker.url}/healthz", timeout=1)[0] == 200:
            alive = time.time()
        else:
            time.sleep(0.05)
    try:
        ready: float | None = worker.wait_ready(max(1.0, deadline - time.monotonic()))
    except BenchError:
        if not worker.child.running:
            raise
        ready = None  # still recovering: the figure is "more than timeout"
    return {
        "ready_s": round(ready - launched, 2) if ready else None,
        "timed_out_after_s": None if ready else timeout,
        "api_up_s": round(alive - launched, 2) if alive else None,
        "state_dir": "wiped" if wipe else "kept",
        "disk_bytes_after": dir_bytes(worker.data_dir),
    }


def save_history(history: History, path: Path) -> None:
    path.write_bytes(pickle.dumps(history))


def load_history(path: Path) -> History:
    loaded: History = pickle.loads(path.read_bytes())
    return loaded
