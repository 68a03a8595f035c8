"""What a run leaves behind: the results JSON, a PNG chart and a short table on stdout.

``REQUIRED`` lists every key a results file has (dotted paths), whatever the scale, so the
smoke test can hold the format still; ``targets`` compares the figures with the issue's goals.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCHEMA = "keel-bench/1"

REQUIRED = (
    "schema",
    "started_at",
    "finished_at",
    "duration_s",
    "machine.cores",
    "machine.memory_bytes",
    "machine.cpu_model",
    "machine.load_avg_at_start",
    "machine.load_avg_at_end",
    "versions.python",
    "versions.faust",
    "versions.aiokafka",
    "versions.confluent_kafka",
    "versions.quixstreams",
    "versions.kafka",
    "settings.events",
    "settings.customers",
    "settings.seed",
    "settings.partitions",
    "settings.worker_env",
    "settings.worker_tuning.batch_max",
    "settings.worker_tuning.emitter",
    "dataset.events",
    "dataset.customers",
    "dataset.mix",
    "dataset.duplicates",
    "dataset.late",
    "dataset.preload.events_per_s",
    "throughput.keel.events_per_s",
    "throughput.keel.complete",
    "throughput.keel.seconds",
    "throughput.keel.cpu_ms_per_event",
    "throughput.keel.cpu.by_group.join",
    "throughput.keel.cpu.by_group.intake",
    "throughput.keel.cpu.by_group.faust_consumer",
    "throughput.keel.cpu.by_group.librdkafka",
    "throughput.keel.cpu.by_group.other",
    "throughput.keel.cpu.join_ms_per_event",
    "throughput.keel.cpu.intake_ms_per_event",
    "throughput.ceiling.events_per_s",
    "throughput.quix",
    "throughput.keel_over_ceiling",
    "throughput.faust_floor.events_per_s",
    "throughput.keel_over_faust_floor",
    "throughput.keel_over_quix",
    "verification.checked",
    "verification.matching",
    "freshness.base.topic.p50_ms",
    "freshness.base.topic.p95_ms",
    "freshness.base.topic.p99_ms",
    "freshness.base.topic.max_ms",
    "freshness.base.api.p50_ms",
    "freshness.base.api.p99_ms",
    "freshness.base.api.count",
    "freshness.base.api_answers",
    "freshness.base.worker_cpu.ms_per_event",
    "freshness.base.worker_cpu.ms_per_event_by_group",
    "freshness.idle.cpu_s_per_s",
    "freshness.idle.by_group_s_per_s",
    "freshness.backlog_at_start.lag_records",
    "query.backlog_at_start.lag_records",
    "freshness.steps",
    "freshness.max_unsaturated_rate",
    "query.achieved_per_s",
    "query.by_id.p50_ms",
    "query.by_id.p99_ms",
    "query.by_email.p50_ms",
    "query.by_email.p99_ms",
    "query.all.p99_ms",
    "query.errors",
    "recovery.kept.ready_s",
    "recovery.wiped.ready_s",
    "recovery.customers",
    "recovery.wiped_ready_s_for_100k",
    "failover.kill.answered_again_s",
    "failover.kill.processing_resumed_s",
    "failover.kill.failed",
    "failover.kill.stale",
    "failover.rolling.failed",
    "failover.lost_disk.ready_s",
    "failover.lost_disk.failed",
    "throughput.keel.events_merged",
    "throughput.keel.inputs_read_per_s",
    "footprint.rss_bytes",
    "footprint.disk_bytes",
    "footprint.rss_mb_per_100k_customers",
    "footprint.disk_mb_per_100k_customers",
    "profile",
    "targets",
    "empty_figures",
    "chart",
)


def get(result: dict[str, Any], dotted: str) -> Any:
    """``get(r, "a.b")`` is r["a"]["b"]; raises KeyError naming the missing path."""
    value: Any = result
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(dotted)
        value = value[part]
    return value


def missing_keys(result: dict[str, Any]) -> list[str]:
    out = []
    for key in REQUIRED:
        try:
            get(result, key)
        except KeyError:
            out.append(key)
    return out


def _maybe(result: dict[str, Any], dotted: str) -> Any:
    try:
        return get(result, dotted)
    except KeyError:
        return None


#: Figures made of samples, by name: a run in which one of them has none fails (``python -m
#: bench`` exits 1 naming it) rather than printing "-" for it.
SAMPLED = (
    ("throughput, one worker", "throughput.keel.events_per_s"),
    ("ceiling", "throughput.ceiling.events_per_s"),
    ("faust floor", "throughput.faust_floor.events_per_s"),
    ("freshness @base, topic", "freshness.base.topic.count"),
    ("freshness @base, API probes", "freshness.base.api.count"),
    ("query latency by id", "query.by_id.count"),
    ("query latency by e-mail", "query.by_email.count"),
    ("join CPU per event (per thread, backlog)", "throughput.keel.cpu.join_ms_per_event"),
    ("worker CPU per event live @base", "freshness.base.worker_cpu.ms_per_event"),
)


def empty_figures(r: dict[str, Any]) -> list[str]:
    """Each sampled figure of ``r`` without samples, named, with what is known of why."""
    out = []
    for name, key in SAMPLED:
        value = _maybe(r, key)
        if value:
            continue
        why = [f"{key} = {value}"]
        phase = _maybe(r, key.split(".", 1)[0]) or {}
        if isinstance(phase, dict) and phase.get("error"):
            why.append(f"phase failed: {str(phase['error']).strip().splitlines()[-1][:200]}")
        if key.startswith("freshness.base.api"):
            why.append(f"probe answers by status: {_maybe(r, 'freshness.base.api_answers')}")
        if key.startswith("query.by_"):
            why.append(f"query errors: {_maybe(r, 'query.error_kinds')}")
        out.append(f"{name} ({'; '.join(why)})")
    return out


def not_2xx(r: dict[str, Any]) -> str | None:
    """API probe answers that were not 2xx (or no answer) over every freshness step, and how
    many of each status: ``"17 (404: 17)"``."""
    steps = _maybe(r, "freshness.steps")
    if not steps:
        return None
    by_status: dict[str, int] = {}
    for st in steps:
        for status, n in (st.get("api_answers") or {}).items():
            if not status.startswith("2"):
                by_status[status] = by_status.get(status, 0) + n
    total = sum(by_status.values())
    detail = ", ".join(f"{k}: {n}" for k, n in sorted(by_status.items()))
    return f"{total} ({detail})" if total else "0"


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal of the issue with the measured value and whether it was met (None: unmeasured)."""
    rows = [
        ("throughput, one worker (events/s)", "throughput.keel.events_per_s", ">=", 15000),
        ("keel / ceiling", "throughput.keel_over_ceiling", ">=", 0.25),
        ("keel / quix", "throughput.keel_over_quix", ">=", 1.0),
        ("freshness @base, topic p50 (ms)", "freshness.base.topic.p50_ms", "<=", 50),
        ("freshness @base, topic p99 (ms)", "freshness.base.topic.p99_ms", "<=", 250),
        ("freshness @base, API p50 (ms)", "freshness.base.api.p50_ms", "<=", 50),
        ("freshness @base, API p99 (ms)", "freshness.base.api.p99_ms", "<=", 250),
        ("query p99, id + e-mail (ms)", "query.all.p99_ms", "<=", 10),
        ("query rate achieved (req/s)", "query.achieved_per_s", ">=", 200),
        ("restart ready, dir kept (s)", "recovery.kept.ready_s", "<=", 15),
        ("restart ready, from changelog (s)", "recovery.wiped.ready_s", "<=", 60),
        ("  same, scaled to 100k customers (s)", "recovery.wiped_ready_s_for_100k", "<=", 60),
        ("RSS per 100k customers (MB)", "footprint.rss_mb_per_100k_customers", "<=", 400),
        ("SIGKILL 1 of 2: longest answer wait (s)", "failover.kill.answered_again_s", "<=", 5),
        ("  processing resumed (s)", "failover.kill.processing_resumed_s", "<=", 5),
        ("  failed queries", "failover.kill.failed", "<=", 0),
        ("rolling restart: failed queries", "failover.rolling.failed", "<=", 0),
    ]
    out = []
    for name, key, op, goal in rows:
        value = _maybe(r, key)
        met = None if value is None else (value >= goal if op == ">=" else value <= goal)
        out.append(
            {"name": name, "key": key, "target": f"{op} {goal:g}", "value": value, "met": met}
        )
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _probes(r: dict[str, Any]) -> str:
    api = _maybe(r, "freshness.base.api") or {}
    return f"{api.get('count')}/{(api.get('count') or 0) + (api.get('missing') or 0)}"


def machine_line(r: dict[str, Any]) -> str:
    """CPU model, cores, RAM and the load average at the start and the end of the run."""
    m = r.get("machine") or {}
    ram = (m.get("memory_bytes") or 0) / 2**30
    return (
        f"machine: {m.get('cpu_model')}, {m.get('cores')} cores, {ram:.1f} GiB RAM; "
        f"load average (1/5/15 min) {_load(m)}"
    )


def _pair(r: dict[str, Any], a: str, b: str) -> str:
    return f"{_fmt(_maybe(r, a))} / {_fmt(_maybe(r, b))}"


def _percent(share: float | None) -> float | None:
    return None if share is None else round(100 * share, 1)


def table(r: dict[str, Any]) -> str:
    """The short table printed at the end of a run: the machine first, then the figures."""
    s = r.get("settings") or {}
    lines = [
        f"{s.get('events', 0):,} events, {s.get('customers', 0):,} customers",
        machine_line(r),
        f"{'':2}{'figure':38}{'value':>14}  {'target':>10}",
    ]
    for t in r["targets"]:
        mark = {True: "ok", False: "MISS", None: "--"}[t["met"]]
        lines.append(f"{mark:>4} {t['name']:36}{_fmt(t['value']):>14}  {t['target']:>10}")
    tp = r["throughput"]
    cpu = "throughput.keel.cpu"
    live = "freshness.base.worker_cpu"
    rate = _maybe(r, "freshness.base.offered_per_s")
    extra = [
        ("ceiling (events/s)", _maybe(r, "throughput.ceiling.events_per_s")),
        ("quix peer (events/s)", _maybe(r, "throughput.quix.events_per_s")),
        ("faust floor (events/s)", _maybe(r, "throughput.faust_floor.events_per_s")),
        ("keel / faust floor", _maybe(r, "throughput.keel_over_faust_floor")),
        ("keel inputs read (events/s)", _maybe(r, "throughput.keel.inputs_read_per_s")),
        ("backlog finished", tp["keel"].get("complete")),
        ("join CPU per event finished (ms)", _maybe(r, f"{cpu}.join_ms_per_event")),
        ("  faust consumer thread, same (ms)", _maybe(r, f"{cpu}.faust_consumer_ms_per_event")),
        ("intake CPU per event read (ms)", _maybe(r, f"{cpu}.intake_ms_per_event")),
        (
            "librdkafka / other CPU per read (ms)",
            _pair(r, f"{cpu}.librdkafka_ms_per_event", f"{cpu}.other_ms_per_event"),
        ),
        (
            "worker CPU idle, caught up (% of a core)",
            _percent(_maybe(r, "freshness.idle.cpu_s_per_s")),
        ),
        ("  of which join (%)", _percent(_maybe(r, "freshness.idle.by_group_s_per_s.join"))),
        (f"worker CPU per event live @{_fmt(rate)}/s (ms)", _maybe(r, f"{live}.ms_per_event")),
        (
            "  of which join / intake (ms)",
            _pair(r, f"{live}.ms_per_event_by_group.join", f"{live}.ms_per_event_by_group.intake"),
        ),
        (
            "sample states matching",
            f"{_maybe(r, 'verification.matching')}/{_maybe(r, 'verification.checked')}",
        ),
        (
            "backlog before freshness / queries",
            _pair(
                r, "freshness.backlog_at_start.lag_records", "query.backlog_at_start.lag_records"
            ),
        ),
        ("highest unsaturated rate (events/s)", _maybe(r, "freshness.max_unsaturated_rate")),
        ("API probes @base (answered/sent)", _probes(r)),
        ("API probe answers not 2xx", not_2xx(r)),
        ("query answers not 200", _maybe(r, "query.errors")),
        ("disk per 100k customers (MB)", _maybe(r, "footprint.disk_mb_per_100k_customers")),
        (
            f"failover @{_fmt(_maybe(r, 'failover.rate'))}/s, stale / all answers",
            _pair(r, "failover.kill.stale", "failover.kill.answers"),
        ),
        ("  topic p50 / p99 while killed (ms)", _pair(
            r, "failover.kill.topic.p50_ms", "failover.kill.topic.p99_ms")),
        ("  same, rolling restart (ms)", _pair(
            r, "failover.rolling.topic.p50_ms", "failover.rolling.topic.p99_ms")),
        ("  lost disk: ready (s) / failed", _pair(
            r, "failover.lost_disk.ready_s", "failover.lost_disk.failed")),
    ]
    for name, value in extra:
        lines.append(f"{'':5}{name:36}{_fmt(value):>14}")
    return "\n".join(lines)


#: Figures compared across the scales of one invocation: how each grows with the customers.
GROWTH = (
    ("throughput, one worker (events/s)", "throughput.keel.events_per_s"),
    ("backlog finished", "throughput.keel.complete"),
    ("join CPU per event finished (ms)", "throughput.keel.cpu.join_ms_per_event"),
    ("intake CPU per event read (ms)", "throughput.keel.cpu.intake_ms_per_event"),
    ("worker CPU per event live @base (ms)", "freshness.base.worker_cpu.ms_per_event"),
    ("freshness @base, topic p50 (ms)", "freshness.base.topic.p50_ms"),
    ("freshness @base, topic p99 (ms)", "freshness.base.topic.p99_ms"),
    ("freshness @base, API p50 (ms)", "freshness.base.api.p50_ms"),
    ("query p99, id + e-mail (ms)", "query.all.p99_ms"),
    ("restart ready, dir kept (s)", "recovery.kept.ready_s"),
    ("restart ready, from changelog (s)", "recovery.wiped.ready_s"),
    ("customers held", "footprint.customers"),
    ("RSS (MB)", "footprint.rss_mb"),
    ("disk (MB)", "footprint.disk_mb"),
)


def growth(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each GROWTH figure at every scale (fewest customers first) and last / first."""
    runs = sorted(runs, key=lambda r: r["settings"]["customers"])

    def value(r: dict[str, Any], key: str) -> Any:
        if key.endswith("_mb"):  # footprint.rss_mb: footprint.rss_bytes in MB
            raw = _maybe(r, key.removesuffix("_mb") + "_bytes")
            return None if raw is None else round(raw / 1e6, 1)
        return _maybe(r, key)

    rows = []
    for name, key in GROWTH:
        values = [value(r, key) for r in runs]
        first, last = values[0], values[-1]
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (first, last))
        rows.append(
            {
                "name": name,
                "key": key,
                "values": values,
                "ratio": round(last / first, 3) if numbers and first else None,
            }
        )
    scales = [(r["settings"]["events"], r["settings"]["customers"]) for r in runs]
    return {
        "scales": [list(scale) for scale in scales],
        "customers_ratio": round(scales[-1][1] / scales[0][1], 3),
        "runs": [r["settings"]["run_id"] for r in runs],
        "machines": [r["machine"] for r in runs],  # with each run's load average
        "figures": rows,
    }


def growth_table(g: dict[str, Any]) -> str:
    """How the figures grew from the smallest to the biggest scale."""
    heads = [f"{e // 1000:,}k/{c // 1000:,}k" if c >= 1000 else f"{e}/{c}" for e, c in g["scales"]]
    lines = [f"growth with customers (events/customers; x{g['customers_ratio']:g} customers)"]
    for head, m in zip(heads, g["machines"], strict=True):
        lines.append(f"  {head}: " + machine_line({"machine": m}).removeprefix("machine: "))
    lines.append(f"     {'figure':36}" + "".join(f"{h:>14}" for h in heads) + f"{'ratio':>9}")
    for row in g["figures"]:
        ratio = "-" if row["ratio"] is None else f"x{row['ratio']:g}"
        values = "".join(f"{_fmt(v):>14}" for v in row["values"])
        lines.append(f"     {row['name']:36}{values}{ratio:>9}")
    return "\n".join(lines)


def profile_table(r: dict[str, Any], n: int = 15) -> str:
    """What ``--profile`` prints: per profile (the backlog's, then the live one's), idle and
    GIL shares, per thread, and the busy top list."""
    parts = [_profile_section(r, r["profile"], "on the backlog", n)]
    live = r.get("profile_live")
    if live is not None:
        parts.append(_profile_section(r, live, f"live at {live['rate']:g} events/s", n))
    return "\n\n".join(parts)


def _profile_section(r: dict[str, Any], p: dict[str, Any], what: str, n: int) -> str:
    if p.get("error"):
        return f"profile {what} failed: {p['error']}"
    m = r["machine"]

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:5.1f}%"

    busy = 1 - p["idle_share"] - p["gil_share"]
    lines = [
        f"profile {what} (py-spy --native, every thread; {p['samples']:,} samples; "
        f"{m['cores']} cores, load {_load(m)})",
        f"  idle (parked in epoll/poll/futex/sleep waits) {pct(p['idle_share'])}, "
        f"waiting for the GIL {pct(p['gil_share'])}, busy {pct(busy)}",
    ]
    for group, t in p["threads"].items():
        lines.append(
            f"  {group:24} {t['samples']:>7,} samples: busy {pct(t['busy_share'])}, "
            f"idle {pct(t['idle_share'])}, GIL {pct(t['gil_share'])}"
        )
    lines.append(f"busy samples ({p['busy_samples']:,}), self time:")
    for row in p["self"][:n]:
        lines.append(f"  {pct(row['share'])}  {row['function']}")
    lines.append("busy samples, total time (anywhere in the stack):")
    for row in p["total"][:n]:
        lines.append(f"  {pct(row['share'])}  {row['function']}")
    if "events_per_s_under_profiler" in p:
        lines.append(f"(rate under the profiler {p['events_per_s_under_profiler']:,.0f} "
                     "events/s: not a figure)")  # fmt: skip
    else:
        cpu = p["worker_cpu_under_profiler"]
        lines.append(f"(worker CPU under the profiler {cpu['ms_per_event']} ms per event offered, "
                     f"by thread group {cpu['ms_per_event_by_group']}: not a figure)")  # fmt: skip
    return "\n".join(lines)


def _load(m: dict[str, Any]) -> str:
    start, end = m.get("load_avg_at_start"), m.get("load_avg_at_end")
    fmt = "/".join
    return (
        f"{fmt(f'{x:.2f}' for x in start) if start else '-'} at start, "
        f"{fmt(f'{x:.2f}' for x in end) if end else '-'} at end"
    )


def chart(r: dict[str, Any], path: Path) -> str | None:
    """A PNG with one panel per figure family; None (and no file) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(2, 3, figsize=(15, 8.5))
    fig.suptitle(
        f"keel benchmark {r['started_at']} — {r['settings']['events']:,} events, "
        f"{r['settings']['customers']:,} customers\n{machine_line(r)}",
        fontsize=10,
    )

    names, rates = [], []
    for label, key in (
        ("keel", "keel"),
        ("ceiling", "ceiling"),
        ("faust floor", "faust_floor"),
        ("quix peer", "quix"),
    ):
        value = _maybe(r, f"throughput.{key}.events_per_s")
        if value:
            names.append(label)
            rates.append(value)
    a = ax[0][0]
    colors = {"keel": "tab:blue", "ceiling": "tab:gray", "faust floor": "tab:green"}
    a.bar(names, rates, color=[colors.get(n, "tab:orange") for n in names])
    a.axhline(15000, color="red", ls="--", lw=1, label="target 15k/s")
    a.set_yscale("log")
    a.set_title("throughput on the backlog (events/s)")
    a.legend()

    a = ax[0][1]
    steps = r["freshness"].get("steps") or []
    xs = [st["offered_per_s"] for st in steps]
    for where, style in (("topic", "-o"), ("api", "--s")):
        for q in ("p50_ms", "p99_ms"):
            ys = [(st.get(where) or {}).get(q) for st in steps]
            if any(y is not None for y in ys):
                a.plot(
                    xs,
                    [y if y is not None else float("nan") for y in ys],
                    style,
                    label=f"{where} {q[:3]}",
                )
    a.axhline(250, color="red", ls="--", lw=1)
    a.axhline(50, color="red", ls=":", lw=1)
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_xlabel("offered events/s")
    a.set_title("freshness: produce → visible (ms)")
    a.legend(fontsize=8)

    a = ax[0][2]
    q = r["query"]
    kinds = ["by_id", "by_email"]
    for i, pct in enumerate(("p50_ms", "p99_ms")):
        vals = [(q.get(k) or {}).get(pct) or 0 for k in kinds]
        a.bar([x + i * 0.4 for x in range(2)], vals, width=0.4, label=pct[:3])
    a.set_xticks([0.2, 1.2], ["GET /customers/{id}", "?email="])
    a.axhline(10, color="red", ls="--", lw=1)
    a.set_title(f"query latency (ms) at {q.get('achieved_per_s') or 0:.0f} req/s")
    a.legend()

    a = ax[1][0]
    rec = r["recovery"]
    vals = [(rec.get(k) or {}).get("ready_s") or 0 for k in ("kept", "wiped")]
    a.bar(["RocksDB kept", "from changelog"], vals, color=["tab:green", "tab:purple"])
    a.axhline(15, color="green", ls="--", lw=1)
    a.axhline(60, color="purple", ls="--", lw=1)
    a.set_title(f"restart after SIGKILL → /readyz (s), {rec.get('customers', 0):,} customers")

    a = ax[1][1]
    fp = r["footprint"]
    a.bar(
        ["RSS", "disk"],
        [fp.get("rss_mb_per_100k_customers") or 0, fp.get("disk_mb_per_100k_customers") or 0],
    )
    a.axhline(400, color="red", ls="--", lw=1)
    a.set_title("footprint per 100k customers (MB)")

    a = ax[1][2]
    a.axis("off")
    text = "\n".join(
        f"{ {True: 'ok  ', False: 'MISS', None: '--  '}[t['met']] } {t['name']}: "
        f"{_fmt(t['value'])} ({t['target']})"
        for t in r["targets"]
    )
    cpu, live = "throughput.keel.cpu", "freshness.base.worker_cpu"
    text += (
        "\n\nworker CPU per event (ms), per thread:\n"
        f"  backlog: join {_fmt(_maybe(r, f'{cpu}.join_ms_per_event'))}, "
        f"intake {_fmt(_maybe(r, f'{cpu}.intake_ms_per_event'))}, "
        f"librdkafka {_fmt(_maybe(r, f'{cpu}.librdkafka_ms_per_event'))}\n"
        f"  live @{_fmt(_maybe(r, 'freshness.base.offered_per_s'))}/s: "
        f"{_fmt(_maybe(r, f'{live}.ms_per_event'))} "
        f"(join {_fmt(_maybe(r, f'{live}.ms_per_event_by_group.join'))})"
    )
    a.text(0, 1, text, va="top", family="monospace", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


def write(r: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r, indent=2, default=str) + "\n")
