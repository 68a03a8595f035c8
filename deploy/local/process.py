"""Child processes: :class:`Child` starts, polls and stops one; the functions below stop
service processes by pid, including ones another process started (``down``).

``Child`` (and so ``up``) starts each process in its own session, so its pid is also its
process-group id and one signal reaches the process and anything it spawned.  Pid files can
outlive their process and the pid can be reused, so every signal sent by pid is preceded by a
check that the pid still runs the expected program.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from deploy.local.errors import StackError, StartupError

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


LOG_TAIL_LINES = 30
KILL_WAIT = 10.0  # how long a SIGKILLed group may take to be reaped


class Child:
    """A child process in its own session, so one signal reaches it and all it spawned.

    Started, polled until ready, stopped with SIGTERM and SIGKILL after a deadline::

        worker = Child("worker", log_file=run_dir / "worker.log")
        worker.start([sys.executable, "-m", "streams", "worker"], env=env)
        worker.wait_ready(lambda: http_ok(url), time.monotonic() + 60)
        worker.stop()  # SIGTERM; SIGKILL if it still runs after 20 s

    Output (stdout and stderr) is appended to ``log_file``, or inherited without one.  A
    stopped child can be started again; :attr:`pid` is then the new process's.
    """

    def __init__(self, name: str = "child", log_file: Path | None = None) -> None:
        self.name = name
        self.log_file = log_file
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_start = 0  # where this run's output begins in the (appended) log file

    @property
    def pid(self) -> int | None:
        """The last started process's id (``None`` before :meth:`start`)."""
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self) -> int | None:
        """Its exit code once it exited (negative: killed by that signal), else ``None``."""
        return None if self._proc is None else self._proc.poll()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        **popen: Any,
    ) -> Self:
        """Launch ``argv``; ``popen`` goes to :class:`subprocess.Popen` (``user=``, ``stdout=``)."""
        if self.running:
            raise StackError(f"{self.name} is already running (pid {self.pid})")
        if self.log_file is None:
            self._proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, start_new_session=True, **popen
            )
            return self
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self._log_start = log.tell()
            self._proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                **{"stdout": log, "stderr": log, **popen},
                start_new_session=True,
            )
        return self

    def wait_ready(
        self, ready: Callable[[], bool], deadline: float, interval: float = POLL_INTERVAL,
        *, keep: bool = False,
    ) -> None:  # fmt: skip
        """Poll ``ready()`` until true, by ``deadline`` (a :func:`time.monotonic` value).

        Raises :class:`StartupError`, its log's tail included, as soon as the child exits
        or once the deadline passed; the child is SIGKILLed then, unless ``keep`` (a slow
        child its caller may wait for longer).
        """
        began = time.monotonic()
        try:
            while True:
                code = self.returncode
                if code is not None:
                    raise StartupError(
                        f"{self.name} exited with code {code} while starting{self.tail()}"
                    )
                if ready():
                    return
                if time.monotonic() >= deadline:
                    waited = time.monotonic() - began
                    raise StartupError(f"{self.name} not ready after {waited:.0f}s{self.tail()}")
                time.sleep(interval)
        except BaseException:
            if not keep:
                self.kill()  # a half-started child would hold its ports and data dir
            raise

    def send(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the child's process group, if it still runs."""
        if self.running:
            assert self._proc is not None
            signal_group(self._proc.pid, sig)

    def wait(self, timeout: float | None = None) -> int | None:
        """Its exit code once it exited within ``timeout`` seconds, else ``None``."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 20, sig: signal.Signals = signal.SIGTERM) -> int | None:
        """``sig`` so it shuts down cleanly, SIGKILL after ``timeout``; its exit code.

        Idempotent: a child that already exited (or never started) is left as it is.
        """
        self.send(sig)
        code = self.wait(timeout)
        return self.kill() if code is None else code

    def kill(self) -> int | None:
        """SIGKILL the group, no shutdown hooks: what a crash looks like; its exit code."""
        self.send(signal.SIGKILL)
        if self._proc is None:
            return None
        try:
            return self._proc.wait(KILL_WAIT)
        except subprocess.TimeoutExpired:
            raise StackError(f"{self.name} (pid {self._proc.pid}) survived SIGKILL") from None

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """This run's last ``lines`` log lines, Java stack frames left out, for error messages."""
        if self.log_file is None:
            return ""
        try:
            with self.log_file.open("rb") as log:
                log.seek(max(self._log_start, log.seek(0, os.SEEK_END) - 256 * 1024))
                text = log.read().decode(errors="replace")
        except OSError as exc:
            return f"; its log {self.log_file} is unreadable: {exc}"
        kept = [line for line in text.splitlines() if not line.startswith("\tat ")]
        return f"; last lines of {self.log_file}:\n" + "\n".join(kept[-lines:])


def stop_all(children: Iterable[Child], timeout: float = 20) -> None:
    """SIGTERM every child at once so they shut down side by side; SIGKILL any left after
    ``timeout``."""
    children = list(children)
    for child in children:
        child.send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        if child.wait(max(0.0, deadline - time.monotonic())) is None:
            child.kill()
