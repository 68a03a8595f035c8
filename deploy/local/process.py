"""Signal and stop service processes by pid, including ones another process started (``down``).

``up`` launches each service in its own session, so its pid is also its process-group id and
one signal reaches the service and anything it spawned.  Pid files can outlive their process
and the pid can be reused, so every signal is preceded by a check that the pid still runs the
expected program.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from deploy.local.errors import StackError

POLL_INTERVAL = 0.1


def is_running(pid: int, marker: bytes) -> bool:
    """Whether ``pid`` is a live (non-zombie) process whose command line contains ``marker``.

    The marker guards pid files against pid reuse: a stale ``.run/kafka.pid`` must never make
    ``down`` signal an unrelated process.
    """
    proc = Path("/proc", str(pid))
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / "cmdline").read_bytes()
    except (OSError, IndexError):
        return False
    return state != "Z" and marker in cmdline


def stop_pid(pid: int, marker: bytes, timeout: float = 20) -> bool:
    """Stop a service started by another process (from a pid file): TERM, then KILL.

    Returns False if no such service was running.
    """
    if not is_running(pid, marker):
        return False
    signal_group(pid, signal.SIGTERM)
    if _wait_gone(pid, marker, timeout):
        return True
    signal_group(pid, signal.SIGKILL)
    if _wait_gone(pid, marker, 10.0):
        return True
    raise StackError(f"pid {pid} survived SIGKILL")


def _wait_gone(pid: int, marker: bytes, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_running(pid, marker):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)
    return True


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group ``pid`` leads (or just ``pid`` if it leads none); no-op if gone."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass
