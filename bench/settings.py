"""The benchmark's knobs: one frozen object from the command line, defaults from ``BENCH_*``.

    python -m bench                       # the full run: 1,000,000 events, 100,000 customers
    python -m bench --quick               # seconds: tiny history, short steps (what the test runs)
    python -m bench --events 200000 --customers 20000
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


@dataclass(frozen=True)
class BenchSettings:
    events: int = 1_000_000
    customers: int = 100_000
    seed: int = 7
    duplicates: float = 0.03
    late: float = 0.08
    partitions: int = 8
    out_dir: Path = ROOT / "bench" / "results"
    bootstrap: str | None = None  # an existing broker; default: start one on free ports
    # a profiling run instead of the measured one (py-spy pauses the worker at every sample)
    profile: bool = False
    profile_budget_s: float = 60.0  # seconds the profiled worker works on the backlog
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
    probes_per_s: float = 40.0
    poll_ms: float = 5.0
    grace_s: float = 10.0
    saturated_p99_s: float = 10.0  # or when more than 1 % is still unseen after grace_s
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
        return d


# Seconds, not minutes: checks that every phase runs and reports, not how fast keel is
# (rates low enough that even a slow worker is not saturated).
QUICK = {
    "events": 1_500,
    "customers": 300,
    "throughput_budget_s": 40.0,
    "profile_budget_s": 10.0,
    "fresh_rate": 100.0,
    "fresh_steps": (),
    "fresh_down_steps": (),
    "fresh_duration_s": 1.5,
    "fresh_step_duration_s": 1.0,
    "probes_per_s": 20.0,
    "grace_s": 2.0,
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


def parse(argv: list[str] | None = None) -> BenchSettings:
    base = BenchSettings()
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick",
        action="store_true",
        default=_env("quick", False),
        help="tiny version that runs in seconds (BENCH_QUICK)",
    )
    p.add_argument("--events", type=int, help="backlog size (BENCH_EVENTS)")
    p.add_argument("--customers", type=int, help="customers in the history (BENCH_CUSTOMERS)")
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
    p.add_argument("--no-peer", action="store_true", help="skip the Quix Streams peer")
    args = p.parse_args(argv)
    s = replace(base, **QUICK) if args.quick else base
    s = replace(
        s,
        quick=args.quick,
        events=args.events or _env("events", s.events),
        customers=args.customers or _env("customers", s.customers),
        seed=args.seed,
        partitions=args.partitions,
        out_dir=args.out,
        bootstrap=args.bootstrap,
        throughput_budget_s=args.budget or _env("budget", s.throughput_budget_s),
        profile=args.profile,
        peer=s.peer and not args.no_peer,
    )
    if s.events < 100 or s.customers < 10:
        p.error("--events must be at least 100 and --customers at least 10")
    return s
