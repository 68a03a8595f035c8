"""``python -m bench`` (``make bench``): keel's benchmarks on the real local stack, side by side.

One run per scale (``--scales``; by default 1,000,000 events / 100,000 customers, the
reference, then 200,000 / 20,000), each in this order, on its own Kafka broker (free ports)
and its own worker (its own ``KEEL_APP_ID``, topic names, data dir and API port):

1. a seeded history (bench/generator.py) is Avro-encoded and pre-loaded into the input topics;
2. **ceiling**: a bare confluent-kafka consumer reads and decodes it (bench/ceiling.py);
   **faust floor**: a faust app consumes and decodes it in keel's batches, no state or
   outputs (bench/faust_floor.py): what faust costs before keel does anything;
3. **peer**: the same aggregation in Quix Streams (bench/peer_quix.py);
4. **throughput**: one ``keel worker`` consumes the backlog until every
   customer state is final; a sample of customers is checked against a replay of
   streams.domain.state over the generator's events; **footprint** is read off the worker then;
5. **freshness**: live events at 2,000/s, then higher steps until keel saturates; the
   worker's CPU per thread over each step, per event;
6. **query latency**: ids and e-mails from another process while 2,000 events/s go in
   (both live phases start on a worker with no backlog: drained, or skipped, first);
7. **recovery**: SIGKILL and restart with the RocksDB dir kept, then wiped;
8. **failover** (bench/failover.py): a second worker joins; under 1,000 events/s, one of the
   two is SIGKILLed, then both restarted one after the other, then one restored from nothing,
   while a client asks for customers all along: time until all are answered again and until
   processing resumed, failed and stale answers, freshness through each fault.

Results: ``bench/results/<run>.json`` (every figure, the machine and its load average at the
start and the end, versions, settings), a PNG chart beside it, logs in ``bench/results/<run>/``,
and a table on stdout; with two scales or more, ``<last run>-scales.json`` and a table of how
each figure grew with the customers. A sampled figure left without samples (e.g. API probes
all refused) fails the run: exit 1, naming it.

``python -m bench --profile`` (``make bench-profile``) is a run of its own that measures
nothing: the same backlog, one worker with py-spy attached for ``profile_budget_s``, and the
profile (bench/profile.py) in ``bench/results/<run>-profile.json``. A sampling profiler
pauses the worker for every sample, so it is never attached during a measured phase.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import failover as bench_failover
from bench import phases, report
from bench import throughput as tp
from bench.generator import DAY, History
from bench.kafka import keys_of, preload
from bench.machine import machine, versions
from bench.peers import quix_python, quix_version
from bench.profile import Profiler
from bench.settings import BenchSettings, each_scale, parse
from bench.stats import latency_summary
from bench.worker import ROOT, BenchError, KeelNames, KeelWorker, worker_args

log = logging.getLogger("bench")


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _free_port() -> int:
    from deploy.local.stack import free_port

    return free_port()


def _worker_tuning(env: dict[str, str]) -> dict[str, Any]:
    """The worker's speed settings in effect for this run (streams/tuning.py + its env)."""
    from streams.config import Settings
    from streams.tuning import describe

    worker = Settings.from_env({k: v for k, v in env.items() if k.startswith("KEEL_")})
    return describe(worker.batch_max, worker.batch_wait_ms)


def _create_topics(env: dict[str, str]) -> None:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    out = subprocess.run(
        [sys.executable, "-m", "bench.topics"],
        cwd=ROOT,
        env={**inherited, **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if out.returncode != 0:
        raise BenchError(f"creating topics failed:\n{out.stderr[-3000:]}")


_NO_LATENCY = latency_summary([])
_FRESHNESS_UNMEASURED = {
    "base": {
        "topic": _NO_LATENCY,
        "api": _NO_LATENCY,
        "api_answers": None,
        "worker_cpu": {"ms_per_event": None, "ms_per_event_by_group": None},
    },
    "backlog_at_start": {"lag_records": None},
    "steps": [],
    "max_unsaturated_rate": None,
}
_QUERY_UNMEASURED = {
    "backlog_at_start": {"lag_records": None},
    "achieved_per_s": None,
    "errors": None,
    **{k: _NO_LATENCY for k in ("by_id", "by_email", "all")},
}
_RECOVERY_UNMEASURED = {
    "kept": {"ready_s": None},
    "wiped": {"ready_s": None},
    "wiped_ready_s_for_100k": None,
}
_FAILOVER_UNMEASURED = {
    "kill": {"answered_again_s": None, "processing_resumed_s": None, "failed": None,
             "stale": None},
    "rolling": {"failed": None},
    "lost_disk": {"ready_s": None, "failed": None},
}  # fmt: skip


def _attempt(what: str, phase: Callable[[], dict[str, Any]], unmeasured: dict) -> dict[str, Any]:
    """Run a phase; if it fails, log why and record its figures as unmeasured with the error."""
    try:
        return phase()
    except BenchError as exc:
        log.error("%s failed: %s", what, exc)
        return {**unmeasured, "error": str(exc)[-3000:]}


class Run:
    """One benchmark run: its settings, names, directories and the result being filled in."""

    def __init__(self, s: BenchSettings) -> None:
        self.s = s
        self.id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.names = KeelNames.for_run(f"{self.id.lower()}-{os.getpid()}")
        self.work = s.out_dir / self.id  # logs, plans, raw profile
        self.work.mkdir(parents=True, exist_ok=True)
        self.scratch = Path(tempfile.mkdtemp(prefix="keel-bench-"))  # broker + RocksDB data
        self.t0 = time.monotonic()
        self.result: dict[str, Any] = {"schema": report.SCHEMA, "started_at": _now_iso()}

    def phase(self, name: str) -> None:
        log.info("[%6.1fs] %s", time.monotonic() - self.t0, name)


def _broker(r: Run, stack: contextlib.ExitStack) -> tuple[str, int | None]:
    """The broker's bootstrap address and pid: ``--bootstrap``'s, or one started for the run."""
    if r.s.bootstrap is not None:
        return r.s.bootstrap, None
    from deploy.local.stack import Kafka

    r.phase("starting Kafka")
    kafka = Kafka(r.scratch / "kafka", port=_free_port(), log_file=r.work / "kafka.log")
    kafka.start(timeout=120)
    stack.callback(kafka.stop)
    return kafka.bootstrap, kafka.pid


def _worker_env(r: Run, bootstrap: str) -> dict[str, str]:
    s = r.s
    env = {
        **r.names.env(),
        "KAFKA_BOOTSTRAP": bootstrap,
        "KEEL_PARTITIONS": str(s.partitions),
        **s.worker_env,
    }
    r.result["settings"] = {
        **s.as_json(),
        "worker_env": env,
        "run_id": r.id,
        "worker_command": ["-m", "bench.threadnames", *worker_args()],
        "worker_tuning": _worker_tuning(env),
        "broker": "own" if s.bootstrap is None else s.bootstrap,
    }
    return env


class Dataset:
    """The seeded history, pre-loaded into the run's input topics; what the phases ask for."""

    def __init__(self, r: Run, bootstrap: str) -> None:
        s = r.s
        r.phase(f"generating {s.events:,} events for {s.customers:,} customers")
        start_ms = int(time.time() * 1000) - 30 * DAY - 60_000
        self.history = History(s.customers, s.seed, start_ms=start_ms)
        t = time.perf_counter()
        items = self.history.backlog(s.events, duplicates=s.duplicates, late=s.late)
        generated = time.perf_counter() - t
        self.kinds = Counter(i.kind for i in items)
        self.in_history = sorted({i.customer_id for i in items})
        # customers an order made known by e-mail: what the query phase asks for
        self.ordered = sorted({i.customer_id for i in items if i.kind == "order"})
        self.sample = set(
            random.Random(s.seed).sample(
                self.in_history, min(s.sample_customers, len(self.in_history))
            )
        )
        self.expected = phases.expected_states(items, self.sample)
        t = time.perf_counter()
        records = tp.encode(items, r.names)
        encoded = time.perf_counter() - t
        del items
        self.history_file = r.work / "history.pickle"
        phases.save_history(self.history, self.history_file)
        r.phase("pre-loading the backlog")
        self.count, seconds = preload(bootstrap, records)
        del records
        r.result["dataset"] = {
            "events": self.count,
            "customers": len(self.in_history),
            "mix": {k: round(v / self.count, 4) for k, v in sorted(self.kinds.items())},
            "duplicates": s.duplicates,
            "late": s.late,
            "generate_s": round(generated, 2),
            "encode_s": round(encoded, 2),
            "preload": {
                "events": self.count,
                "seconds": round(seconds, 2),
                "events_per_s": round(self.count / seconds),
            },
        }


def _finish(r: Run, suffix: str = "") -> Path:
    """Close the run's record: load average at the end, times; the results file's path."""
    shutil.rmtree(r.scratch, ignore_errors=True)
    res = r.result
    res["machine"]["load_avg_at_end"] = list(os.getloadavg())
    res["finished_at"] = _now_iso()
    res["duration_s"] = round(time.monotonic() - r.t0, 1)
    return r.s.out_dir / f"{r.id}{suffix}.json"


def profile_run(s: BenchSettings) -> dict[str, Any]:
    """``--profile``: a worker on the backlog with py-spy attached; no figure is measured."""
    r = Run(s)
    res = r.result
    res["kind"] = "profile (no figures: py-spy pauses the worker for every sample)"
    res["machine"] = {**machine(), "load_avg_at_start": list(os.getloadavg())}
    res["versions"] = versions(None)
    with contextlib.ExitStack() as stack:
        bootstrap, _ = _broker(r, stack)
        env = _worker_env(r, bootstrap)
        _create_topics(env)
        data = Dataset(r, bootstrap)
        r.phase(f"profile: a keel worker on the backlog with py-spy ({s.profile_budget_s:g} s)")
        worker = KeelWorker(env, r.scratch / "worker", _free_port(), r.work / "worker.log")
        stack.callback(worker.stop)
        profiler = Profiler(r.work / "worker.pyspy.txt")
        under = tp.keel(
            bootstrap, worker, r.names, data.count, s.ready_timeout_s, s.profile_budget_s, profiler
        )
        res["profile"] = {
            "raw": str(profiler.out),
            **profiler.top(25),
            # what the worker did while paused for every sample: not a throughput figure
            "events_per_s_under_profiler": under["events_per_s"],
            "seconds": under["wall_seconds"],
        }
        if s.profile_live_rate > 0:
            rate = s.profile_live_rate
            r.phase(f"profile: the caught-up worker under {rate:g} live events/s with py-spy")
            res["profile_live"] = _profile_live(r, bootstrap, worker, data.history_file, rate)
    path = _finish(r, "-profile")
    report.write(res, path)
    res["_path"] = str(path)
    return res


def _profile_live(
    r: Run, bootstrap: str, worker: KeelWorker, history_file: Path, rate: float
) -> dict[str, Any]:
    """py-spy on the worker while ``rate`` events/s are offered live, from no backlog: live
    traffic is not a backlog (events travel 1-3 per internal record), so it has a profile
    of its own. The offer's freshness is under the profiler: kept for context only."""
    s = r.s
    behind = phases.caught_up(bootstrap, worker, r.names, s.drain_s, s.ready_timeout_s)
    profiler = Profiler(r.work / "worker-live.pyspy.txt")
    plan = phases._offer_plan(s, bootstrap, r.names, history_file, worker.url,
                              [(rate, s.fresh_duration_s)])  # fmt: skip
    before = worker.threads_cpu()
    profiler.attach(worker.pid)
    try:
        spawned = phases._spawn("bench.offer", plan, r.work, "profile-live")
        out = phases._result(spawned, "profile-live", s.fresh_duration_s + s.grace_s + 60)
    finally:
        profiler.detach()
    step = out["steps"][0]
    return {
        "rate": rate,
        "raw": str(profiler.out),
        "before": behind,
        **profiler.top(25),
        "worker_cpu_under_profiler": phases.live_cpu(before, worker.threads_cpu(), step["events"]),
        "freshness_under_profiler": {k: step.get(k) for k in ("topic", "saturated")},
    }


def run(s: BenchSettings) -> dict[str, Any]:
    r = Run(s)
    res = r.result
    quix_py = quix_python(install=s.peer) if s.peer else None
    res["machine"] = {**machine(), "load_avg_at_start": list(os.getloadavg())}
    res["versions"] = versions(quix_version(quix_py))
    with contextlib.ExitStack() as stack:
        bootstrap, broker_pid = _broker(r, stack)
        env = _worker_env(r, bootstrap)
        _create_topics(env)
        data = Dataset(r, bootstrap)
        history, history_file, count, kinds = (
            data.history, data.history_file, data.count, data.kinds
        )  # fmt: skip
        in_history, ordered, sample = data.in_history, data.ordered, data.sample

        r.phase("ceiling: bare consumer + Avro decode")
        thr: dict[str, Any] = {"ceiling": tp.ceiling(bootstrap, r.names, timeout=900)}
        r.phase("faust floor: faust consumer + Avro decode, no state")
        thr["faust_floor"] = _attempt(
            "faust floor",
            lambda: tp.faust_floor(bootstrap, r.names, count, timeout=s.floor_budget_s),
            {"events_per_s": None},
        )
        if quix_py is not None:
            r.phase("peer: Quix Streams")
            peer_events = round(count * (kinds["order"] + kinds["contact"]) / sum(kinds.values()))
            peer = quix_py
            thr["quix"] = _attempt(
                "quix peer",
                lambda: tp.quix(
                    bootstrap, peer, r.names, peer_events, r.work,
                    timeout=s.ready_timeout_s, budget=s.peer_budget_s,
                ),
                {"events_per_s": None},
            )  # fmt: skip
        else:
            thr["quix"] = {"skipped": "Quix Streams not available (--no-peer or no venv)"}

        r.phase("throughput: one keel worker on the backlog")
        worker = KeelWorker(env, r.scratch / "worker", _free_port(), r.work / "worker.log")
        stack.callback(worker.stop)
        thr["keel"] = tp.keel(
            bootstrap,
            worker,
            r.names,
            count,
            s.ready_timeout_s,
            s.throughput_budget_s,
            broker_pid=broker_pid,
        )
        ceiling = thr["ceiling"]["events_per_s"]
        quix_rate = thr["quix"].get("events_per_s")
        keel_rate = thr["keel"]["events_per_s"]
        thr["keel_over_ceiling"] = round(keel_rate / ceiling, 4) if ceiling else None
        thr["keel_over_quix"] = round(keel_rate / quix_rate, 4) if quix_rate else None
        floor = thr["faust_floor"].get("events_per_s")
        thr["keel_over_faust_floor"] = round(keel_rate / floor, 4) if floor else None
        res["throughput"] = thr
        res["profile"] = {"skipped": "never in a measured run: python -m bench --profile"}

        if thr["keel"]["complete"]:
            held = len(in_history)
            res["footprint"] = phases.footprint(worker, held, thr["keel"]["rss_at_ready_bytes"])
            res["verification"] = _attempt(
                "verification", lambda: phases.verify(worker, data.expected), {"checked": 0}
            )
        else:
            r.phase("backlog not finished within budget: skipping the rest")
            known = keys_of(bootstrap, r.names.state)
            held = len(known)
            ordered = [cid for cid in ordered if cid.encode() in known]
            res["footprint"] = phases.footprint(worker, held, thr["keel"]["rss_at_ready_bytes"])
            thr["keel"]["skipped_records"] = phases.skip_backlog(
                bootstrap, worker, r.names, s.ready_timeout_s
            )
            # the live phases go on from what keel saw, not from orders it skipped
            history.continue_with({cid.decode() for cid in known})
            phases.save_history(history, history_file)
            res["verification"] = {
                "checked": 0,
                "matching": 0,
                "skipped": "backlog not finished within the budget",
            }

        def settle() -> dict[str, Any]:
            return phases.caught_up(bootstrap, worker, r.names, s.drain_s, s.ready_timeout_s)

        def fresh() -> dict[str, Any]:
            backlog = settle()  # freshness is measured on a worker with no backlog
            out = phases.freshness(s, bootstrap, worker, r.names, history_file, r.work)
            return {"backlog_at_start": backlog, **out}

        r.phase("freshness: live events at fixed rates")
        res["freshness"] = _attempt("freshness", fresh, _FRESHNESS_UNMEASURED)

        def query() -> dict[str, Any]:
            known = random.Random(s.seed + 1).sample(ordered, min(len(ordered), 5000))
            keys = [(cid, History.email(int(cid.removeprefix("c-")))) for cid in known]
            backlog = settle()  # and so is query latency
            out = phases.queries(s, bootstrap, worker, r.names, history_file, r.work, keys)
            out["backlog_at_start"] = backlog
            out["drain"] = phases.drain(bootstrap, worker, r.names, s.drain_s, s.ready_timeout_s)
            return out

        r.phase("query latency under ingest")
        res["query"] = _attempt("query latency", query, _QUERY_UNMEASURED)
        res["footprint"]["after_live_rss_bytes"] = worker.rss()

        def recovery() -> dict[str, Any]:
            snapshot = {cid: worker.get(f"/customers/{cid}")[1] for cid in sorted(sample)[:50]}
            kept = phases.restart(worker, wipe=False, timeout=s.ready_timeout_s)
            wiped = phases.restart(worker, wipe=True, timeout=s.restore_timeout_s)
            same = sum(
                1
                for cid, before in snapshot.items()
                if wiped["ready_s"] is not None
                and phases.comparable(worker.get(f"/customers/{cid}")[1] or {})
                == phases.comparable(before or {})
            )
            return {
                "kept": kept,
                "wiped": wiped,
                "same_state_after_restore": f"{same}/{len(snapshot)}",
                # restoring replays the changelogs, which grow with the customers held
                "wiped_ready_s_for_100k": None
                if wiped["ready_s"] is None or not held
                else round(wiped["ready_s"] * max(1.0, 100_000 / held), 1),
            }

        r.phase("recovery: SIGKILL, restart with RocksDB kept, then wiped")
        res["recovery"] = {
            "customers": held,
            **_attempt("recovery", recovery, _RECOVERY_UNMEASURED),
        }

        def failover() -> dict[str, Any]:
            settle()
            return bench_failover.run(
                s, bootstrap, worker, env, r.names, history_file, r.work, r.scratch,
                ordered, _free_port(),
            )  # fmt: skip

        r.phase("failover: a second worker, then SIGKILL, a rolling restart, a lost disk")
        res["failover"] = _attempt("failover", failover, _FAILOVER_UNMEASURED)
    path = _finish(r)
    res["targets"] = report.targets(res)
    res["empty_figures"] = report.empty_figures(res)
    res["chart"] = report.chart(res, path.with_suffix(".png"))
    report.write(res, path)
    res["_path"] = str(path)
    return res


def _one(s: BenchSettings) -> dict[str, Any] | None:
    """One measured run at ``s``'s scale, its table printed; None if it could not finish."""
    try:
        res = run(s)
    except BenchError as exc:
        log.error("benchmark at %s events / %s customers failed: %s", s.events, s.customers, exc)
        return None
    print(report.table(res))
    print(f"\nresults: {res.pop('_path')}\nchart:   {res['chart']}\n")
    for figure in res["empty_figures"]:
        log.error("figure with no samples: %s", figure)
    return res


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level="INFO", format="%(asctime)s %(name)s %(message)s")
    s = parse(argv)
    if s.profile:
        try:
            res = profile_run(s)
        except BenchError as exc:
            log.error("profiling failed: %s", exc)
            return 1
        print(report.profile_table(res))
        print(f"\nprofile: {res.pop('_path')}")
        return 1 if res["profile"].get("error") else 0
    results, failed = [], []
    for one in each_scale(s):
        res = _one(one)
        scale = f"{one.events:,} events / {one.customers:,} customers"
        if res is None:
            failed.append(f"{scale}: the run failed (see the log above)")
            continue
        results.append(res)
        failed += [f"{scale}: no samples: {figure}" for figure in res["empty_figures"]]
    if len(results) > 1:
        g = report.growth(results)
        path = s.out_dir / f"{g['runs'][-1]}-scales.json"
        report.write({"schema": report.SCHEMA, "machine": results[0]["machine"], **g}, path)
        print(report.growth_table(g))
        print(f"\ngrowth: {path}")
    if failed:
        print(f"\nFAILED ({len(failed)}):", file=sys.stderr)
        for why in failed:
            print(f"  {why}", file=sys.stderr)
        return 1
    return 0
