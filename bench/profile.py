"""Sampling profile of the worker during the throughput run, with py-spy (``--native``).

py-spy samples from outside the process, so keel's code stays untouched; the raw collapsed
stacks are kept next to the results and summarised as the functions with the most samples
on-CPU themselves ("self") and beneath them ("total")::

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
            "--nonblocking" if not self.native else "--native",
        ]
        self._child = Child("py-spy", self.out.with_suffix(".log")).start(cmd)

    def detach(self) -> None:
        if self._child is None:
            return
        self._child.stop(60, signal.SIGINT)  # py-spy writes its output on SIGINT
        if not self.out.exists():
            self.error = f"py-spy wrote no profile; see {self._child.log_file}"

    def top(self, n: int = 15) -> dict[str, Any]:
        """The ``n`` functions with the most samples, self and total, as shares of all."""
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


def summarise(collapsed: str, n: int = 15) -> dict[str, Any]:
    """Self and total sample shares per function from py-spy's raw (collapsed) output."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        # py-spy's first frame is the thread ("process 123:\"python\"" / thread names).
        if frames[0].startswith(("process ", "thread ")):
            frames = frames[1:] or frames
        samples += count
        own[frames[-1]] += count
        for name in set(frames):
            total[name] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "samples": c, "share": c / samples}
            for name, c in counter.most_common(n)
        ]

    return {"samples": samples, "self": share(own), "total": share(total)}
