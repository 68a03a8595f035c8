"""The benchmark's knobs: one frozen object from the command line, defaults from ``BENCH_*``.

    python -m bench                       # the full run: 1,000,000 events / 100,000 customers
                                          # (the reference), then 200,000 / 20,000
    python -m bench --quick               # seconds: tiny history, short steps (what the test runs)
    python -m bench --events 200000 --customers 20000            # one scale only
    python -m bench --scales 1000000/100000,500000/50000         # these scales, in this order
    python -m bench --profile             # a run of its own: py-spy on a worker, no figures

Every figure in a result file comes with the settings that produced it (``settings`` key).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


#: (events, customers) of each run of ``make bench``, in order: the reference first, then a
#: fifth of it, so how the figures grow with the customers held is a figure too.
SCALES: tuple[tuple[int, int], ...] = ((1_000_000, 100_000), (200_000, 20_000))


@dataclass(frozen=True)
class BenchSettings:
    events: int = SCALES[0][0]  # of this run
    customers: int = SCALES[0][1]
    scales: tuple[tuple[int, int], ...] = SCALES  # every run of this invocation
    seed: int = 7
    duplicates: float = 0.03
    late: float = 0.08
    partitions: int = 8
    out_dir: Path = ROOT / "bench" / "results"
    bootstrap: str | None = None  # an existing broker; default: start one on free ports
    # a profiling run instead of the measured one (py-spy pauses the worker at every sample)
    profile: bool = False
    profile_budget_s: float = 60.0  # seconds the profiled worker works on the backlog
    # then, caught up, this many events/s offered live for fresh_duration_s (0: no live part)
    profile_live_rate: float = 1000.0
    peer: bool = True
    quick: bool = False
    # seconds one worker may spend on the backlog before the rest is skipped (figure partial)
    throughput_budget_s: float = 150.0
    # seconds the faust floor and the Quix peer may read for: their rates are steady long
    # before the end of a big backlog (the figure is then the rate over what they read)
    floor_budget_s: float = 30.0
    peer_budget_s: float = 45.0
    fresh_rate: float = 2000.0
    fresh_steps: tuple[float, ...] = (4000.0, 8000.0, 16000.0)  # when the base keeps up
    fresh_down_steps: tuple[float, ...] = (1000.0, 500.0, 250.0)  # when it does not
    fresh_duration_s: float = 15.0
    fresh_step_duration_s: float = 8.0
    # seconds the caught-up worker is watched doing nothing before the live steps (its fixed
    # CPU per second)
    idle_s: float = 5.0
    probes_per_s: float = 40.0
    poll_ms: float = 5.0
    grace_s: float = 10.0
    saturated_p99_s: float = 10.0  # or when more than 1 % is still unseen after grace_s
    # two workers under this many events/s for failover_s per fault (bench/failover.py)
    failover_rate: float = 1000.0
    failover_s: float = 30.0
    query_rate: float = 250.0
    query_duration_s: float = 15.0
    query_threads: int = 8
    sample_customers: int = 200
    ready_timeout_s: float = 120.0
    restore_timeout_s: float = 120.0  # restart from the changelog alone (RocksDB dir wiped)
    drain_s: float = 20.0  # wait this long for a backlog left by a live phase, then skip it
    worker_env: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        d["fresh_steps"] = list(self.fresh_steps)
        d["fresh_down_steps"] = list(self.fresh_down_steps)
        d["scales"] = [list(scale) for scale in self.scales]
        return d


# Seconds, not minutes: checks that every phase runs and reports, not how fast keel is
# (rates low enough that even a slow worker is not saturated).
QUICK = {
    "events": 1_500,
    "customers": 300,
    "scales": ((1_500, 300),),
    "throughput_budget_s": 40.0,
    "profile_budget_s": 10.0,
    "fresh_rate": 100.0,
    "fresh_steps": (),
    "fresh_down_steps": (),
    "fresh_duration_s": 1.5,
    "fresh_step_duration_s": 1.0,
    "idle_s": 1.0,
    "probes_per_s": 20.0,
    "grace_s": 2.0,
    "failover_rate": 50.0,
    "failover_s": 12.0,
    "query_rate": 200.0,
    "query_duration_s": 1.0,
    "query_threads": 4,
    "sample_customers": 20,
    "ready_timeout_s": 60.0,
    "restore_timeout_s": 60.0,
    "drain_s": 10.0,
}


def _env(name: str, default: Any) -> Any:
    raw = os.environ.get(f"BENCH_{name.upper()}")
    if raw is None:
        return default
    if isinstance(default, bool):
        return raw.lower() in ("1", "true", "yes")
    return type(default)(raw)


def parse_scales(text: str) -> tuple[tuple[int, int], ...]:
    """``"1000000/100000,200000/20000"`` -> ((1000000, 100000), (200000, 20000))."""
    scales = []
    for part in text.replace(" ", "").split(","):
        events, sep, customers = part.replace("_", "").partition("/")
        if not sep or not events.isdigit() or not customers.isdigit():
            raise ValueError(f"not EVENTS/CUSTOMERS: {part!r}")
        scales.append((int(events), int(customers)))
    if not scales:
        raise ValueError("no scale given")
    return tuple(scales)


def parse(argv: list[str] | None = None) -> BenchSettings:
    base = BenchSettings()
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick",
        action="store_true",
        default=_env("quick", False),
        help="tiny version that runs in seconds (BENCH_QUICK)",
    )
    p.add_argument(
        "--scales",
        default=os.environ.get("BENCH_SCALES"),
        help="EVENTS/CUSTOMERS,... one run each, in order (BENCH_SCALES; default "
        + ",".join(f"{e}/{c}" for e, c in SCALES)
        + ")",
    )
    p.add_argument("--events", type=int, help="one run, this backlog size (BENCH_EVENTS)")
    p.add_argument("--customers", type=int, help="one run, these customers (BENCH_CUSTOMERS)")
    p.add_argument("--seed", type=int, default=_env("seed", base.seed))
    p.add_argument("--partitions", type=int, default=_env("partitions", base.partitions))
    p.add_argument("--out", type=Path, default=Path(_env("out", str(base.out_dir))))
    p.add_argument(
        "--bootstrap",
        default=os.environ.get("BENCH_BOOTSTRAP"),
        help="use this broker instead of starting one",
    )
    p.add_argument("--budget", type=float, help="seconds for the throughput run (BENCH_BUDGET)")
    p.add_argument(
        "--profile",
        action="store_true",
        default=_env("profile", False),
        help="instead of measuring: a worker on the backlog with py-spy attached, its profile "
        "(BENCH_PROFILE; make bench-profile)",
    )
    p.add_argument(
        "--profile-live",
        type=float,
        default=_env("profile_live_rate", base.profile_live_rate),
        metavar="RATE",
        help="with --profile: then profile the caught-up worker under RATE live events/s "
        "(BENCH_PROFILE_LIVE_RATE; 0: the backlog only)",
    )
    p.add_argument("--no-peer", action="store_true", help="skip the Quix Streams peer")
    p.add_argument(
        "--worker-env",
        action="append",
        default=os.environ.get("BENCH_WORKER_ENV", "").split(),
        metavar="KEEL_NAME=VALUE",
        help="a setting of the measured worker (repeatable; BENCH_WORKER_ENV, space-separated), "
        "e.g. --worker-env KEEL_BATCH_WAIT_MS=20 for an A/B of one knob",
    )
    args = p.parse_args(argv)
    worker_env = {}
    for item in args.worker_env:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("KEEL_"):
            p.error(f"--worker-env: not KEEL_NAME=VALUE: {item!r}")
        worker_env[name] = value
    s = replace(base, **QUICK) if args.quick else base
    scales = s.scales
    events, customers = args.events or _env("events", 0), args.customers or _env("customers", 0)
    if args.scales:
        try:
            scales = parse_scales(args.scales)
        except ValueError as exc:
            p.error(f"--scales: {exc}")
    elif events or customers:  # one run: --events and --customers, or the first scale's
        scales = ((events or scales[0][0], customers or scales[0][1]),)
    s = replace(
        s,
        quick=args.quick,
        scales=scales,
        events=scales[0][0],
        customers=scales[0][1],
        seed=args.seed,
        partitions=args.partitions,
        out_dir=args.out,
        bootstrap=args.bootstrap,
        throughput_budget_s=args.budget or _env("budget", s.throughput_budget_s),
        profile=args.profile,
        profile_live_rate=args.profile_live if not args.quick else 100.0,
        peer=s.peer and not args.no_peer,
        worker_env=worker_env,
    )
    if any(e < 100 or c < 10 for e, c in s.scales):
        p.error("events must be at least 100 and customers at least 10")
    return s


def each_scale(s: BenchSettings) -> list[BenchSettings]:
    """The settings of each run, one per scale."""
    return [replace(s, events=e, customers=c) for e, c in s.scales]
