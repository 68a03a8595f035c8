"""`python -m bench --quick` end to end, so the benchmark cannot rot between real runs.

The tiny run goes through every phase against the test session's broker with a worker of
its own; what is checked is the results file a person would read: every key present and
every figure plausible (no timing thresholds: those belong to the benchmark itself).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.generator import History
from bench.profile import summarise
from bench.report import REQUIRED, empty_figures, get, missing_keys, targets
from bench.stats import latency_summary
from deploy.local.stack import Kafka

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_history_is_seeded_and_mixed_like_the_departments() -> None:
    one = History(customers=200, seed=3).backlog(2000)
    two = History(customers=200, seed=3).backlog(2000)
    assert [i.event for i in one] == [i.event for i in two]
    share = {k: sum(i.kind == k for i in one) / len(one) for k in ("order", "shipment", "contact")}
    assert abs(share["order"] - 0.5) < 0.06
    assert abs(share["shipment"] - 0.3) < 0.06
    assert abs(share["contact"] - 0.2) < 0.06
    ids = [i.event["event_id"] for i in one]
    assert 0 < len(ids) - len(set(ids)) < 0.06 * len(ids)  # a few re-sent events
    contacts = [i.event for i in one if i.kind == "contact"]
    assert any(c["customer_id"] is None for c in contacts)  # joins have work to do


def test_percentiles_and_profile_summary() -> None:
    s = latency_summary([0.001 * n for n in range(1, 101)], expected=110)
    assert (s["p50_ms"], s["p99_ms"], s["max_ms"], s["missing"]) == (50.0, 99.0, 100.0, 10)
    top = summarise("process 1;main (a.py:1);f (b.py:2) 3\nprocess 1;main (a.py:1) 1\n")
    assert top["samples"] == 4 and top["idle_share"] == 0
    assert top["self"][0] == {"function": "f (b.py)", "samples": 3, "share": 0.75}


def test_the_profile_puts_parked_threads_and_gil_waits_apart() -> None:
    start = "0x7f1 (libc.so.6);0x7f2 (libc.so.6);thread_run (libpython3.11.so.1.0)"
    main = "thread (10): MainThread;0x7f0 (libc.so.6);<module> (streams/__main__.py:5)"
    intake = f"thread (12): keel-intake;{start};Intake._loop (streams/worker/intake.py:230)"
    collapsed = "\n".join(
        [
            # the asyncio loop parked in epoll; woken, waiting for the GIL; merging (busy)
            f"{main};EpollSelector.select (selectors.py:468);select_epoll_poll_impl "
            "(selectmodule.c:1598);epoll_wait (libc.so.6) 40",
            f"{main};EpollSelector.select (selectors.py:468);select_epoll_poll_impl "
            "(selectmodule.c:1600);pthread_cond_timedwait (libc.so.6);0x7f3 (libc.so.6) 5",
            f"{main};apply_event (streams/domain/state.py:120) 30",
            f"{main};apply_event (streams/domain/state.py:120);0x7f4 (libc.so.6) 5",
            # the intake waiting in librdkafka's queue, on a Python lock; decoding
            f"{intake};Consumer_consume (confluent_kafka/cimpl.so);rd_kafka_consume_batch_queue "
            "(librdkafka.so.1);cnd_timedwait_abs (librdkafka.so.1);pthread_cond_timedwait "
            "(libc.so.6);0x7f3 (libc.so.6) 10",
            f"{intake};Queue.get (queue.py:171);lock_PyThread_acquire_lock (libpython3.11.so.1.0)"
            ";PyThread_acquire_lock_timed (libpython3.11.so.1.0);sem_clockwait (libc.so.6) 4",
            f"{intake};Codec.decode (streams/encoding/codec.py:80) 6",
            # faust's consumer thread (a mode service with its own loop) decoding a fetch
            f"thread (13): Thread-1;{start};Thread._bootstrap (threading.py:1002);WorkerThread"
            ".run (mode/threads.py:62);Fetcher._proc_fetch_request (aiokafka/consumer/fetcher"
            ".py:900) 2",
        ]
    )
    p = summarise(collapsed)
    assert p["samples"] == 102 and p["busy_samples"] == 43
    assert p["idle_share"] == pytest.approx(54 / 102) and p["gil_share"] == pytest.approx(5 / 102)
    assert [r["function"] for r in p["self"]] == [
        "apply_event (streams/domain/state.py)", "Codec.decode (streams/encoding/codec.py)",
        "0x7f4 (libc.so.6)", "Fetcher._proc_fetch_request (aiokafka/consumer/fetcher.py)",
    ]  # fmt: skip
    assert p["self"][0]["share"] == pytest.approx(30 / 43)  # of the busy samples
    assert p["threads"]["faust thread (Thread-1)"]["busy_share"] == 1
    join, intake = p["threads"]["join (MainThread)"], p["threads"]["intake (keel-intake)"]
    assert join["samples"] == 80 and join["idle_share"] == 0.5 and join["gil_share"] == 0.0625
    assert intake["samples"] == 20 and intake["busy_share"] == 0.3 and intake["gil_share"] == 0


def test_a_cut_short_history_goes_on_with_known_customers_and_new_orders_only() -> None:
    from bench.generator import History

    h = History(200, seed=3, start_ms=1_790_000_000_000)
    before = h.backlog(3000)
    old_orders = {i.event["order_id"] for i in before if i.kind == "order"}
    known = {i.customer_id for i in before[:400]}
    h.continue_with(known)
    live = [h.live(1_800_000_000_000 + n) for n in range(2000)]
    assert {i.customer_id for i in live} <= known
    placed = [i.event["order_id"] for i in live if i.kind == "order"]
    shipped = {i.event["order_id"] for i in live if i.kind == "shipment"}
    assert placed and shipped and shipped <= set(placed)
    assert not shipped & old_orders
    assert {i.kind for i in live} == {"order", "shipment", "contact"}
    with pytest.raises(ValueError):
        h.continue_with(set())


def test_finished_events_are_read_from_the_worker_counters() -> None:
    from bench.throughput import finished_events

    class Worker:
        def get(self, path: str) -> tuple[int, str]:
            assert path == "/metrics"
            return 200, (
                '# TYPE keel_events_total counter\n'
                'keel_events_total{outcome="applied",topic="orders.v1"} 7.0\n'
                'keel_events_total{outcome="held",topic="shipments.v1"} 5.0\n'
                'keel_events_total{outcome="duplicate",topic="orders.v1"} 2.0\n'
                'keel_events_total{outcome="dead_letter",topic="contacts.v1"} 1.0\n'
                'keel_events_created{outcome="applied",topic="orders.v1"} 1.7e9\n'
            )

    assert finished_events(Worker()) == 10  # type: ignore[arg-type]


def test_a_figure_without_samples_is_named() -> None:
    full = {
        "throughput": {
            "keel": {"events_per_s": 900.0, "cpu": {"join_ms_per_event": 0.3}},
            "ceiling": {"events_per_s": 9e4},
            "faust_floor": {"events_per_s": 5e3},
        },
        "freshness": {
            "base": {
                "topic": {"count": 150},
                "api": {"count": 30},
                "worker_cpu": {"ms_per_event": 0.5},
            }
        },
        "query": {"by_id": {"count": 100}, "by_email": {"count": 100}},
    }
    assert empty_figures(full) == []
    refused = json.loads(json.dumps(full))
    refused["freshness"]["base"]["api"]["count"] = 0
    refused["freshness"]["base"]["api_answers"] = {"401": 30}
    [why] = empty_figures(refused)
    assert why.startswith("freshness @base, API probes") and "'401': 30" in why
    failed = json.loads(json.dumps(full))
    failed["query"] = {"error": "query load failed with exit code 1", "by_id": {"count": 0}}
    assert [w.split(" (")[0] for w in empty_figures(failed)] == [
        "query latency by id", "query latency by e-mail"
    ]
    assert "query load failed" in empty_figures(failed)[0]


def test_scales_and_how_figures_grow_with_customers() -> None:
    from bench.report import growth, growth_table
    from bench.settings import each_scale, parse

    s = parse([])  # make bench: the reference, then a fifth of it
    assert s.scales == ((1_000_000, 100_000), (200_000, 20_000))
    assert [(x.events, x.customers) for x in each_scale(s)] == list(s.scales)
    assert parse(["--events", "200000", "--customers", "20000"]).scales == ((200_000, 20_000),)
    assert parse(["--quick", "--scales", "1000/300,500/100"]).scales == ((1000, 300), (500, 100))
    with pytest.raises(SystemExit):
        parse(["--scales", "1000"])

    def result(run_id: str, customers: int, rate: float, join_ms: float) -> dict:
        return {
            "settings": {"run_id": run_id, "events": 10 * customers, "customers": customers},
            "machine": {"cores": 2, "cpu_model": "x", "memory_bytes": 2**30,
                        "load_avg_at_start": [1.0, 1.0, 1.0], "load_avg_at_end": [2.0, 1, 1]},
            "throughput": {"keel": {"events_per_s": rate, "complete": True,
                                    "cpu": {"join_ms_per_event": join_ms}}},
            "footprint": {"customers": customers, "rss_bytes": 200e6 + 4000 * customers},
        }  # fmt: skip

    g = growth([result("big", 100_000, 2000.0, 0.5), result("small", 20_000, 3000.0, 0.4)])
    assert g["scales"] == [[200_000, 20_000], [1_000_000, 100_000]] and g["customers_ratio"] == 5
    rows = {row["key"]: row for row in g["figures"]}
    assert rows["throughput.keel.events_per_s"]["values"] == [3000.0, 2000.0]
    assert rows["throughput.keel.events_per_s"]["ratio"] == 0.667
    assert rows["throughput.keel.cpu.join_ms_per_event"]["ratio"] == 1.25
    assert rows["footprint.rss_mb"]["values"] == [280.0, 600.0]
    assert rows["throughput.keel.complete"]["ratio"] is None
    assert rows["query.all.p99_ms"]["values"] == [None, None]  # unmeasured: no ratio
    text = growth_table(g)
    assert "200k/20k" in text and "1,000k/100k" in text and "x1.25" in text
    assert text.count("load average") == 2


def test_worker_cpu_is_split_by_thread() -> None:
    from bench.throughput import per_event
    from bench.worker import cpu_split

    before = {"pid": 7, "process": 10.0, "threads": {7: ("python", 6.0), 9: ("keel-intake", 1.0)}}
    after = {
        "pid": 7,
        "process": 17.5,
        "threads": {
            7: ("python", 10.0),  # the main thread: the asyncio loop, the join
            8: ("faust-consumer", 0.5),
            9: ("keel-intake", 2.0),
            11: ("rdk:broker1", 1.0),  # started in between: all of it counts
            12: ("keel-emitter", 0.25),
        },
    }
    split = cpu_split(before, after)
    assert split["seconds"] == 7.5
    assert split["by_group"] == {
        "join": 4.0, "faust_consumer": 0.5, "intake": 1.0, "librdkafka": 1.0, "other": 1.0
    }  # fmt: skip
    assert split["by_name"]["(threads that ended)"] == 0.75  # in the process total only
    assert split["by_name"]["main (asyncio loop)"] == 4.0
    figures = per_event(split, merged=2000, read=4000)
    assert figures["join_ms_per_event"] == 2.0 and figures["intake_ms_per_event"] == 0.25
    restarted = cpu_split(before, {**after, "pid": 8})
    assert restarted["by_group"] is None and per_event(restarted, 1, 1)["join_ms_per_event"] is None


def test_threads_are_named_for_the_os(tmp_path: Path) -> None:
    script = tmp_path / "threads.py"
    script.write_text(
        "import os, sys, threading\n"
        "names = []\n"
        "def look():\n"
        "    names.append(open(f'/proc/self/task/{threading.get_native_id()}/comm').read())\n"
        "t = threading.Thread(target=look, name='keel-intake'); t.start(); t.join()\n"
        "print(names[0].strip(), sys.argv[1:])\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "bench.threadnames", str(script), "x"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "keel-intake ['x']"


def test_quick_benchmark_reports_every_figure(kafka: Kafka, tmp_path: Path) -> None:
    out = tmp_path / "results"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-peer", "--events", "1000",
         "--bootstrap", kafka.bootstrap, "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=420, check=False,
    )  # fmt: skip
    assert run.returncode == 0, f"{run.stdout[-2000:]}\n{run.stderr[-4000:]}"
    assert "throughput, one worker" in run.stdout

    [path] = out.glob("*.json")
    r = json.loads(path.read_text())
    assert missing_keys(r) == [], f"missing: {missing_keys(r)} of {len(REQUIRED)}"

    m = r["machine"]
    assert m["cores"] >= 1 and m["memory_bytes"] > 0 and m["cpu_model"]
    assert len(m["load_avg_at_start"]) == 3 and len(m["load_avg_at_end"]) == 3
    assert "cores" in run.stdout and "load average" in run.stdout  # the table says it too
    assert r["versions"]["kafka"] == "3.9.1" and r["versions"]["faust"]
    assert r["dataset"]["events"] == 1000
    assert sum(r["dataset"]["mix"].values()) == pytest.approx(1.0, abs=0.01)

    keel, ceiling = r["throughput"]["keel"], r["throughput"]["ceiling"]
    assert keel["complete"] and keel["events_read"] == 1000
    assert 0 < keel["events_per_s"] < ceiling["events_per_s"]
    assert 0 < r["throughput"]["keel_over_ceiling"] < 1
    assert "skipped" in r["throughput"]["quix"]
    floor = r["throughput"]["faust_floor"]
    assert floor["complete"] and floor["events"] == 1000 and floor["decode_errors"] == 0, floor
    assert 0 < floor["events_per_s"] < ceiling["events_per_s"]
    assert r["throughput"]["keel_over_faust_floor"] == round(
        keel["events_per_s"] / floor["events_per_s"], 4
    )
    assert r["settings"]["worker_tuning"]["batch_max"] == 1000

    # the worker's CPU per thread (from /readyz to done): the join apart from the intake
    cpu = keel["cpu"]
    assert cpu["by_group"]["join"] > 0 and cpu["by_group"]["intake"] > 0, cpu
    assert cpu["by_group"]["librdkafka"] > 0 and cpu["by_group"]["faust_consumer"] > 0, cpu
    assert sum(cpu["by_group"].values()) == pytest.approx(cpu["seconds"], abs=0.05)
    assert 0 < cpu["join_ms_per_event"] and 0 < cpu["intake_ms_per_event"]

    v = r["verification"]
    assert v["checked"] > 0 and v["matching"] == v["checked"], v["mismatches"]

    assert r["empty_figures"] == []
    base = r["freshness"]["base"]
    assert base["events"] > 0 and base["topic"]["count"] > 0
    # the probes send the read token: every one saw its event; nothing refused (a 404 is a
    # customer whose first event is not merged yet), and every non-2xx answer is counted
    assert base["api"]["count"] > 0 and base["api"]["missing"] == 0, base["api_answers"]
    answers = base["api_answers"]
    assert answers["200"] > 0 and set(answers) <= {"200", "404"}, answers
    assert base["api_not_2xx"] == answers.get("404", 0)
    assert 0 < base["api"]["p50_ms"] <= base["api"]["p99_ms"]
    # measured on a worker with no backlog; its CPU per event at the live rate, per thread
    assert r["freshness"]["backlog_at_start"]["lag_records_after"] == 0
    assert r["query"]["backlog_at_start"]["lag_records_after"] == 0
    live = base["worker_cpu"]
    assert live["events"] == base["events"] and live["ms_per_event"] > 0
    assert live["ms_per_event_by_group"]["join"] > 0
    assert 0 < base["topic"]["p50_ms"] <= base["topic"]["p99_ms"] <= base["topic"]["max_ms"]

    q = r["query"]
    assert q["requests"] > 0 and q["errors"] == 0
    assert 0 < q["by_id"]["p50_ms"] <= q["by_id"]["p99_ms"]
    assert 0 < q["by_email"]["p50_ms"] <= q["by_email"]["p99_ms"]

    for mode in ("kept", "wiped"):
        assert r["recovery"][mode]["ready_s"] > 0
    assert r["recovery"]["same_state_after_restore"].split("/")[0] != "0"
    assert r["footprint"]["rss_bytes"] > 0 and r["footprint"]["disk_bytes"] > 0

    # two workers: the SIGKILLed one's customers answered from the survivor's copy (stale),
    # processing resumed on every partition; no query failed through any of the faults
    fo = r["failover"]
    assert "error" not in fo, fo["error"]
    kill = fo["kill"]
    assert kill["answered_again_s"] is not None and kill["processing_resumed_s"] is not None
    assert kill["stale"] > 0 and kill["events"] > 0 and kill["topic"]["count"] > 0, kill
    for fault in ("kill", "rolling", "lost_disk"):
        assert fo[fault]["answers"] > 0 and fo[fault]["failed"] == 0, (fault, fo[fault])
    assert fo["lost_disk"]["ready_s"] > 0

    assert [t["key"] for t in r["targets"]] == [t["key"] for t in targets(r)]
    assert all(t["met"] in (True, False, None) for t in r["targets"])
    assert get(r, "throughput.keel.events_per_s") == keel["events_per_s"]
    if r["chart"] is not None:
        assert Path(r["chart"]).stat().st_size > 10_000


def test_quick_profile_is_a_run_of_its_own(kafka: Kafka, tmp_path: Path) -> None:
    from bench.profile import py_spy_binary

    if py_spy_binary() is None:
        pytest.skip("py-spy not installed (pip install -e '.[bench]')")
    out = tmp_path / "results"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--profile", "--events", "1000",
         "--bootstrap", kafka.bootstrap, "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert run.returncode == 0, f"{run.stdout[-2000:]}\n{run.stderr[-4000:]}"
    [path] = out.glob("*-profile.json")
    r = json.loads(path.read_text())
    assert "throughput" not in r and "freshness" not in r  # nothing measured beside it
    p = r["profile"]
    assert p["samples"] > 0 and 0 <= p["idle_share"] <= 1 and 0 <= p["gil_share"] <= 1
    assert "join (MainThread)" in p["threads"] and "intake (keel-intake)" in p["threads"]
    assert p["self"] and 0 < sum(row["share"] for row in p["self"]) <= 1 + 1e-9  # of busy ones
    parked = ("epoll_wait", "poll ", "clock_nanosleep", "sem_clockwait", "pthread_cond_timedwait")
    assert not [row for row in p["self"] if row["function"].startswith(parked)], p["self"]
    assert "idle" in run.stdout and "not a figure" in run.stdout
    assert len(r["machine"]["load_avg_at_end"]) == 3
    live = r["profile_live"]  # then live traffic, from no backlog, profiled apart
    assert live["rate"] == 100 and live["before"]["lag_records_after"] == 0
    assert live["samples"] > 0 and "join (MainThread)" in live["threads"]
    assert live["worker_cpu_under_profiler"]["events"] > 0
    assert "profile live at 100 events/s" in run.stdout
