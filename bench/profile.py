"""Sampling profile of the worker, with py-spy (``--native --threads --idle``), in a run of its own.

``python -m bench --profile`` (``make bench-profile``) profiles a worker on the backlog and
measures nothing else: py-spy pauses the process for every sample, and attached during the
measured throughput phase it turned ~2,300–4,700 events/s into 425–604. The measured run
(``make bench``) never attaches it.

Every thread is sampled, parked or not, and each sample is put in one of three kinds by its
innermost frames (:func:`kind`):

- **idle**: the thread is parked in a wait — epoll/poll/select, a sleep, a futex or
  semaphore (a Python ``Lock``/``Queue``/``Event`` wait), librdkafka's condition waits;
- **gil**: ready to run but waiting for the GIL (CPython 3.11's ``take_gil`` is inlined: a
  ``pthread_cond_(timed)wait`` straight under the interpreter);
- **busy**: on CPU.

The top lists ("self": the innermost frame, "total": anywhere in the stack) are shares of the
busy samples only; the idle and GIL shares are reported apart, also per thread (py-spy's
``--threads`` names each: ``MainThread`` is the asyncio loop that runs the join,
``keel-intake`` the intake; a thread running a ``mode`` service is faust's consumer)::

    profiler = Profiler(out_dir / "worker.pyspy.txt")
    profiler.attach(worker_pid)
    ...
    profiler.detach()
    print(profiler.top(10))
"""

from __future__ import annotations

import re
import shutil
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from deploy.local.process import Child

_LINE = re.compile(r" \(([^)]*?)(?::\d+)?\)$")
_THREAD = re.compile(r"^thread \((\d+)\): (.*)$")
_UNRESOLVED = re.compile(r"^0x[0-9a-fA-F]+ \(")

#: Calls that park a thread until something happens (the innermost resolved frame).
IDLE_CALLS = frozenset(
    {
        "epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll", "__poll", "select",
        "pselect", "pselect6", "__select", "clock_nanosleep", "__clock_nanosleep", "nanosleep",
        "__nanosleep", "usleep", "sem_wait", "sem_timedwait", "sem_clockwait",
        "__new_sem_wait_slow64", "do_futex_wait", "__futex_abstimed_wait_common",
        "__futex_abstimed_wait_common64", "futex_wait", "__lll_lock_wait", "accept", "accept4",
        "sigwait", "sigtimedwait", "pause", "cnd_wait", "cnd_timedwait", "wait4", "waitpid",
    }
)  # fmt: skip
#: Condition waits: idle under a lock or librdkafka, the GIL under the interpreter.
COND_WAITS = frozenset(
    {"pthread_cond_wait", "pthread_cond_timedwait", "pthread_cond_clockwait", "__pthread_cond_wait"}
)
#: Callers that make a condition wait (or anything below them) an idle wait.
IDLE_CALLERS = re.compile(
    r"^(PyThread_acquire_lock|acquire_timed|lock_PyThread_acquire_lock|rlock_acquire"
    r"|cnd_|rd_kafka_q_|rd_kafka_.*(wait|pop|serve|poll)|mtx_|thrd_)"
)
#: Python functions that wait, as innermost frame (a profile without ``--native``).
IDLE_PY = re.compile(
    r"^(\w+Selector\.select|select|Condition\.wait|Event\.wait|Thread\._wait_for_tstate_lock"
    r"|Queue\.get|sleep|Thread\.join) \((selectors|threading|queue|time)\.py\)$"
)


def py_spy_binary() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


class Profiler:
    """py-spy attached to one process until :meth:`detach`."""

    def __init__(self, out: Path, rate: int = 50, native: bool = True) -> None:
        self.out = out
        self.rate = rate
        self.native = native
        self._child: Child | None = None
        self.error: str | None = None

    def attach(self, pid: int) -> None:
        binary = py_spy_binary()
        if binary is None:
            self.error = "py-spy not installed (pip install -e '.[bench]')"
            return
        cmd = [
            binary,
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(self.rate),
            "--format",
            "raw",
            "--output",
            str(self.out),
            "--threads",
            "--idle",
            "--native" if self.native else "--nonblocking",
        ]
        self._child = Child("py-spy", self.out.with_suffix(".log")).start(cmd)

    def detach(self) -> None:
        if self._child is None:
            return
        self._child.stop(60, signal.SIGINT)  # py-spy writes its output on SIGINT
        if not self.out.exists():
            self.error = f"py-spy wrote no profile; see {self._child.log_file}"

    def top(self, n: int = 15) -> dict[str, Any]:
        """:func:`summarise` of what py-spy wrote (an ``error`` when it wrote nothing)."""
        if self.error or not self.out.exists():
            return {"error": self.error or "no profile", "samples": 0, "self": [], "total": []}
        return summarise(self.out.read_text(errors="replace"), n)


def _frame_name(frame: str) -> str:
    """``apply_event (streams/domain/state.py:12)`` -> ``apply_event (streams/domain/state.py)``."""
    frame = frame.strip()
    m = _LINE.search(frame)
    if m is None:
        return frame
    path = m.group(1)
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{frame[: m.start()]} ({path})"


def _function(frame: str) -> str:
    return frame.split(" (", 1)[0]


def kind(frames: list[str]) -> str:
    """``idle``, ``gil`` or ``busy`` for one stack (outermost frame first).

    Looks at the innermost resolved frames (libc's unnamed ones skipped): the first wait
    call among them decides; a condition wait is idle when a lock acquire or librdkafka
    called it, else the interpreter waiting for the GIL.
    """
    resolved = [f for f in frames if not _UNRESOLVED.match(f)]
    if not resolved:
        return "busy"
    if IDLE_PY.match(resolved[-1]):
        return "idle"
    names = [_function(f) for f in resolved]
    for i in range(max(0, len(names) - 4), len(names)):
        if names[i] in COND_WAITS:
            callers = names[max(0, i - 4) : i]
            return "idle" if any(IDLE_CALLERS.match(c) for c in callers) else "gil"
        if names[i] in IDLE_CALLS:
            return "idle"
    return "busy"


def _group(thread_name: str | None, frames: list[str]) -> str:
    if thread_name is None:
        return "unnamed"
    if thread_name == "MainThread":
        return "join (MainThread)"
    if thread_name == "keel-intake":
        return "intake (keel-intake)"
    if any(f.endswith("(mode/threads.py)") for f in frames[:8]):
        # a faust service in a thread of its own: its consumer, fetching for the join
        return f"faust thread ({thread_name})"
    return f"other ({thread_name})"


def summarise(collapsed: str, n: int = 15) -> dict[str, Any]:
    """Busy top lists, idle and GIL shares, overall and per thread, from py-spy's raw output."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    per_thread: dict[str, Counter[str]] = {}
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        raw = [f for f in stack.split(";") if f.strip()]
        thread = None
        if raw and (m := _THREAD.match(raw[0].strip())):  # --threads: "thread (tid): name"
            thread, raw = m.group(2), raw[1:]
        frames = [_frame_name(f) for f in raw]
        if frames and frames[0].startswith("process "):  # --subprocesses
            frames = frames[1:]
        if not frames:
            continue
        k = kind(frames)
        kinds[k] += count
        per_thread.setdefault(_group(thread, frames), Counter())[k] += count
        if k != "busy":
            continue
        own[frames[-1]] += count
        for name in set(frames):
            total[name] += count
    samples = sum(kinds.values())
    busy = kinds["busy"]

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "samples": c, "share": c / busy}
            for name, c in counter.most_common(n)
        ]

    return {
        "samples": samples,
        "busy_samples": busy,
        "idle_share": kinds["idle"] / samples if samples else None,
        "gil_share": kinds["gil"] / samples if samples else None,
        "threads": {
            group: {
                "samples": sum(c.values()),
                **{f"{k}_share": c[k] / sum(c.values()) for k in ("busy", "idle", "gil")},
            }
            for group, c in sorted(per_thread.items())
        },
        "self": share(own),  # shares of the busy samples
        "total": share(total),
    }
