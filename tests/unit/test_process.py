"""deploy.local.process.Child: start, wait until ready, stop (TERM, then KILL) as a group.

Real processes (``sh``, ``python``), no mocks; each takes well under a second but the KILL
deadline test.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from deploy.local.errors import StartupError
from deploy.local.process import Child, is_running, stop_all

PY = sys.executable


def _python(code: str) -> list[str]:
    return [PY, "-c", code]


def _wait_for_file(path: Path, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text().strip():
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.02)
    return path.read_text().strip()


IGNORES_TERM = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ignoring TERM', flush=True)\n"
    "time.sleep(60)\n"
)


def test_a_child_that_ignores_term_is_killed_after_the_deadline(tmp_path: Path) -> None:
    child = Child("stubborn", log_file=tmp_path / "stubborn.log")
    child.start(_python(IGNORES_TERM))
    child.wait_ready(lambda: "ignoring" in (tmp_path / "stubborn.log").read_text(), _in(10))

    began = time.monotonic()
    code = child.stop(timeout=0.5)

    assert code == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - began < 5
    assert not child.running and child.returncode == -signal.SIGKILL


def test_a_child_that_honours_term_exits_with_its_own_code(tmp_path: Path) -> None:
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = Child("polite", log_file=tmp_path / "polite.log")
    child.start(_python(code))
    child.wait_ready(lambda: "up" in (tmp_path / "polite.log").read_text(), _in(10))

    assert child.stop(timeout=10) == 3
    assert child.stop() == 3  # idempotent once it exited


def test_a_child_that_exits_before_ready_raises_at_once_with_its_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "broken.log"
    log.write_text("an earlier run's line\n")
    child = Child("broken", log_file=log)
    child.start(_python("import sys; print('bad config: no KAFKA_BOOTSTRAP'); sys.exit(2)"))

    began = time.monotonic()
    with pytest.raises(StartupError) as err:
        child.wait_ready(lambda: False, _in(30))

    assert time.monotonic() - began < 10  # not the 30 s deadline
    message = str(err.value)
    assert "broken exited with code 2" in message
    assert "bad config: no KAFKA_BOOTSTRAP" in message
    assert str(log) in message
    assert "an earlier run's line" not in message  # only this run's output


def test_a_child_never_ready_is_killed_at_the_deadline_unless_kept(tmp_path: Path) -> None:
    slow = Child("slow", log_file=tmp_path / "slow.log").start(["sleep", "60"])
    with pytest.raises(StartupError, match="slow not ready after"):
        slow.wait_ready(lambda: False, _in(0.3), interval=0.05)
    assert not slow.running and slow.returncode == -signal.SIGKILL

    kept = Child("kept", log_file=tmp_path / "kept.log").start(["sleep", "60"])
    with pytest.raises(StartupError):
        kept.wait_ready(lambda: False, _in(0.3), interval=0.05, keep=True)
    assert kept.running
    kept.kill()


def test_stop_reaches_a_grandchild_through_the_process_group(tmp_path: Path) -> None:
    grandchild_pid = tmp_path / "grandchild.pid"
    # sh starts a sleep in the background and waits: TERM to sh alone would orphan the sleep
    child = Child("parent", log_file=tmp_path / "parent.log")
    child.start(["sh", "-c", f"sleep 60 & echo $! > {grandchild_pid}; wait"])
    pid = int(_wait_for_file(grandchild_pid))
    assert is_running(pid, b"sleep")
    assert os.getpgid(pid) == child.pid  # its own session: the child leads the group

    child.stop(timeout=10)

    deadline = time.monotonic() + 5
    while is_running(pid, b"sleep") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not is_running(pid, b"sleep")


def test_kill_is_a_sigkill_and_the_child_can_start_again(tmp_path: Path) -> None:
    log = tmp_path / "again.log"
    child = Child("again", log_file=log)
    child.start(_python(IGNORES_TERM))
    first = child.pid
    assert child.kill() == -signal.SIGKILL

    child.start(_python("print('second run')"))
    assert child.pid != first
    assert child.wait(10) == 0
    assert "second run" in child.tail()
    assert "ignoring TERM" not in child.tail()  # the tail is this run's


def test_stop_all_terms_every_child_at_once(tmp_path: Path) -> None:
    children = [
        Child(f"c{i}", log_file=tmp_path / f"c{i}.log").start(["sleep", "60"]) for i in range(3)
    ]
    began = time.monotonic()
    stop_all(children, timeout=10)
    assert time.monotonic() - began < 5
    assert [c.returncode for c in children] == [-signal.SIGTERM] * 3


def test_env_and_cwd_reach_the_child(tmp_path: Path) -> None:
    child = Child("env", log_file=tmp_path / "env.log")
    child.start(
        _python("import os; print(os.environ['KEEL_X'], os.getcwd())"),
        env={**os.environ, "KEEL_X": "from-parent"},
        cwd=tmp_path,
    )
    assert child.wait(10) == 0
    assert f"from-parent {tmp_path}" in (tmp_path / "env.log").read_text()


def _in(seconds: float) -> float:
    return time.monotonic() + seconds
