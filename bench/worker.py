"""The processes a benchmark drives: a ``keel worker`` and helpers to watch any child process.

Each worker gets its own ``KEEL_APP_ID`` (consumer group), topic names, data dir and API port,
so a benchmark never touches a running ``make run`` stack or another benchmark.

Tokens as a user has them after ``. .run/tokens.env``: ``KEEL_READ_TOKEN`` …
``KEEL_METRICS_TOKEN`` in the environment (:func:`ensure_tokens` makes them for the run if
they are not set); the worker and connectors accept them, the clients here send them.
They never go into the results file.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from deploy.local.errors import StartupError
from deploy.local.process import Child

ROOT = Path(__file__).resolve().parents[1]
__all__ = ["BenchError", "KeelNames", "KeelWorker", "ROOT"]


TOKEN_VARIABLES = tuple(
    f"KEEL_{role}_TOKEN" for role in ("READ", "WRITE", "AGENT", "ADMIN", "METRICS")
)


def ensure_tokens() -> None:
    """One random token per role in the environment, unless it has them already."""
    for variable in TOKEN_VARIABLES:
        os.environ.setdefault(variable, secrets.token_urlsafe(32))


def auth_header(role: str) -> dict[str, str]:
    """``Authorization: Bearer`` with the token of ``role`` (read, write, metrics, ...)."""
    ensure_tokens()
    return {"Authorization": f"Bearer {os.environ[f'KEEL_{role.upper()}_TOKEN']}"}


def http_get(
    url: str, timeout: float = 5.0, role: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """GET a JSON resource with ``role``'s token (None: none) and ``headers``; (status, body);
    status 0 when nothing answered."""
    sent = {**(auth_header(role) if role else {}), **(headers or {})}
    request = urllib.request.Request(url, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0, None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time a process has used so far (Linux /proc), 0.0 if gone."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: Thread groups of the worker's CPU, by the thread's OS name (bench/threadnames.py names the
#: Python ones): the main thread runs the asyncio loop, the join; faust's consumer thread
#: fetches the internal topics the join reads; the intake reads the inputs.
CPU_GROUPS = ("join", "faust_consumer", "intake", "librdkafka", "other")


def thread_cpu(pid: int | None) -> dict[str, Any]:
    """CPU seconds of ``pid`` so far, whole and per live thread (tid -> [name, seconds])."""
    if pid is None:
        return {"pid": None, "process": 0.0, "threads": {}}
    tick = os.sysconf("SC_CLK_TCK")
    threads: dict[int, tuple[str, float]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tids = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                text = f.read()
        except OSError:
            continue  # the thread ended meanwhile: its time is in the process's
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        threads[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return {"pid": pid, "process": cpu_seconds(pid), "threads": threads}


def _cpu_group(pid: int, tid: int, name: str) -> str:
    if tid == pid:
        return "join"
    if name == "keel-intake":
        return "intake"
    if name == "faust-consumer":
        return "faust_consumer"
    if name.startswith("rdk:"):
        return "librdkafka"
    return "other"


def cpu_split(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """CPU seconds between two :func:`thread_cpu` readings of one process, per thread group.

    Threads that ended in between count under ``other`` (the process total minus the live
    threads'), so the groups add up to the process's CPU. ``None`` when the readings are of
    two processes (the worker was restarted in between).
    """
    if before["pid"] != after["pid"] or after["pid"] is None:
        return {"seconds": None, "by_group": None, "by_name": None}
    pid = after["pid"]
    groups = dict.fromkeys(CPU_GROUPS, 0.0)
    names: dict[str, float] = {}
    for tid, (name, seconds) in after["threads"].items():
        used = seconds - before["threads"].get(tid, (name, 0.0))[1]
        group = _cpu_group(pid, tid, name)
        groups[group] += used
        label = "main (asyncio loop)" if group == "join" else name
        names[label] = names.get(label, 0.0) + used
    total = after["process"] - before["process"]
    ended = max(0.0, total - sum(groups.values()))
    groups["other"] += ended
    if ended:
        names["(threads that ended)"] = ended
    return {
        "seconds": round(total, 2),
        "by_group": {k: round(v, 2) for k, v in groups.items()},
        "by_name": {k: round(v, 2) for k, v in sorted(names.items(), key=lambda kv: -kv[1])},
    }


def tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants, in bytes (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += _rss(p)
        todo.extend(children.get(p, ()))
    return total


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def worker_args() -> list[str]:
    """How the worker is started: ``-m streams worker``, or ``$BENCH_WORKER_ARGS`` (a wrapper
    that tunes something before calling streams.cli, to measure a change before making it);
    either behind ``-m bench.threadnames``."""
    return os.environ.get("BENCH_WORKER_ARGS", "-m streams worker").split()


@dataclass(frozen=True)
class KeelNames:
    """The consumer group and topic names of one benchmark run's keel worker."""

    app_id: str
    orders: str
    shipments: str
    contacts: str
    state: str
    signals: str
    deadletter: str

    @classmethod
    def for_run(cls, run_id: str) -> KeelNames:
        p = f"bench-{run_id}"
        return cls(
            app_id=f"{p}-keel",
            orders=f"{p}.orders.v1",
            shipments=f"{p}.shipments.v1",
            contacts=f"{p}.contacts.v1",
            state=f"{p}.customer-state.v1",
            signals=f"{p}.customer-signals.v1",
            deadletter=f"{p}.deadletter.v1",
        )

    @property
    def inputs(self) -> tuple[str, str, str]:
        return (self.orders, self.shipments, self.contacts)

    @property
    def internal(self) -> list[str]:
        """Topics the worker writes and reads itself (the joins' extra hops)."""
        return [f"{self.app_id}-customer-events"] + [
            f"{self.app_id}-{ns}-refs" for ns in ("order", "contact", "email", "phone")
        ]

    @property
    def intake_group(self) -> str:
        """The consumer group of the worker's intake (it reads the input topics)."""
        return f"{self.app_id}-intake"

    @property
    def groups(self) -> dict[str, list[str]]:
        """Each consumer group of the worker and the topics it reads."""
        return {self.intake_group: list(self.inputs), self.app_id: self.internal}

    def env(self) -> dict[str, str]:
        return {
            "KEEL_APP_ID": self.app_id,
            "KEEL_TOPIC_ORDERS": self.orders,
            "KEEL_TOPIC_SHIPMENTS": self.shipments,
            "KEEL_TOPIC_CONTACTS": self.contacts,
            "KEEL_TOPIC_STATE": self.state,
            "KEEL_TOPIC_SIGNALS": self.signals,
            "KEEL_TOPIC_DEADLETTER": self.deadletter,
        }


class KeelWorker:
    """``python -m streams worker`` as a subprocess with its own env, data dir and port."""

    def __init__(self, env: Mapping[str, str], data_dir: Path, port: int, log_file: Path) -> None:
        self.data_dir = data_dir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_file = log_file
        ensure_tokens()
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
        self.env = {
            **inherited,
            **{k: os.environ[k] for k in TOKEN_VARIABLES},
            **env,
            "KEEL_DATA_DIR": str(data_dir),
            "KEEL_API_PORT": str(port),
        }
        self.child = Child("keel worker", log_file)
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        if self.child.pid is None:
            raise BenchError("worker not started")
        return self.child.pid

    def start(self) -> float:
        """Launch the worker (its threads named for the OS, bench/threadnames.py); return the
        wall-clock time it was launched (epoch s)."""
        self.started_at = time.time()
        argv = [sys.executable, "-m", "bench.threadnames", *worker_args()]
        self.child.start(argv, cwd=ROOT, env=self.env)
        return self.started_at

    def check_alive(self) -> None:
        if not self.child.running:
            raise BenchError(f"keel worker exited ({self.child.returncode}){self.child.tail()}")

    def wait_ready(self, timeout: float, interval: float = 0.05) -> float:
        """Wait for /readyz 200; return when it first answered 200 (epoch s).

        A worker still not ready is left running (a restart may need longer).
        """
        try:
            self.child.wait_ready(
                lambda: http_get(f"{self.url}/readyz", timeout=2)[0] == 200,
                time.monotonic() + timeout,
                interval,
                keep=True,
            )
        except StartupError as exc:
            raise BenchError(str(exc)) from None
        return time.time()

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, Any]:
        role = "metrics" if path.startswith("/metrics") else "read"
        return http_get(f"{self.url}{path}", timeout, role)

    def rss(self) -> int:
        return tree_rss(self.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.child.pid)

    def threads_cpu(self) -> dict[str, Any]:
        """:func:`thread_cpu` of the worker process now."""
        return thread_cpu(self.child.pid if self.child.running else None)

    def kill(self) -> None:
        """SIGKILL the worker's process group: a crash, no shutdown hooks."""
        self.child.kill()

    def stop(self, timeout: float = 30.0) -> None:
        self.child.stop(timeout)

    def wipe(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)
