"""`make status` and `make down` see the stack whichever target started it (#24): under a running
`make run` (the foreground stack with its demo feed) and under `make up` (detached). A second
start says keel is already running and how to stop it; a healthy start's worker log has no
ERROR line and fits a screen.

Each stack runs the real `python -m deploy.local.run` (what the make targets call) in a run
directory of its own, every port its own (free ports from the OS)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local.envfile import read_env
from deploy.local.process import Child
from deploy.local.stack import free_port
from tests.integration.harness import ROOT

pytestmark = pytest.mark.integration

PORTS = ("KEEL_KAFKA_PORT", "KEEL_REDIS_PORT", "KEEL_POSTGRES_PORT", "KEEL_API_PORT",
         "KEEL_INGEST_PORT", "KEEL_OUTBOX_PORT", "KEEL_REDIS_SINK_PORT", "KEEL_INBOX_PORT",
         "KEEL_DIRECTORY_SINK_PORT", "KEEL_SHOP_PORT", "KEEL_WEBHOOK_PORT")  # fmt: skip


def p99(exposition: str, name: str) -> float:
    """The upper bound of the bucket holding the 99th percentile of histogram ``name``
    (summed over its labels), from a /metrics text."""
    buckets: dict[float, float] = {}
    for line in exposition.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            bound = float("inf") if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    total = buckets.get(float("inf"), 0.0)
    assert total > 0, f"no {name} samples"
    return next(b for b in sorted(buckets) if buckets[b] >= 0.99 * total)


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """Not under pytest's tmp dir: PostgreSQL runs as `postgres`, which cannot enter root's."""
    path = Path(tempfile.mkdtemp(prefix="keel-stack-"))
    path.chmod(0o755)
    try:
        yield path / "run"
    finally:
        shutil.rmtree(path, ignore_errors=True)


def stack_env(run_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KEEL_", "KAFKA_", "REDIS_", "POSTGRES_"))}  # fmt: skip
    ports = {name: str(free_port()) for name in PORTS}
    ports["KEEL_KAFKA_CONTROLLER_PORT"] = str(free_port())
    return {**env, **ports, "KEEL_RUN_DIR": str(run_dir), "KEEL_DEMO_CUSTOMERS": "20",
            "KEEL_DATA_DIR": str(run_dir / "worker")}  # fmt: skip


def target(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploy.local.run", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def wait_well(env: dict[str, str], timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = target(env, "--status", timeout=60)
        if status.returncode == 0:
            return status.stdout
        if time.monotonic() > deadline:
            raise AssertionError(f"the stack never got well:\n{status.stdout}{status.stderr}")
        time.sleep(2)


@pytest.fixture
def make_run(run_dir: Path, tmp_path: Path) -> Iterator[tuple[dict[str, str], Child]]:
    env = stack_env(run_dir)
    launcher = Child("make run", tmp_path / "make-run.log")
    launcher.start([sys.executable, "-m", "deploy.local.run"], cwd=ROOT, env=env)
    try:
        yield env, launcher
    finally:
        target(env, "--down")
        launcher.stop(60)


def test_status_and_down_see_make_run_and_a_second_start_is_refused(
    make_run: tuple[dict[str, str], Child], tmp_path: Path
) -> None:
    env, launcher = make_run
    status = wait_well(env)
    for name in ("kafka", "redis", "postgres", "worker", "http-ingest", "redis-sink",
                 "directory-sink", "demo-shop"):  # fmt: skip
        line = next((ln for ln in status.splitlines() if f"keel: {name} " in ln), "")
        assert " up: " in line, (name, status)
    assert "started by `make run`" in status and "/readyz 200" in status
    assert "demo feed" not in status  # a one-shot producer: its end is no failure

    # "ready" means the demo's story is there: the README's first curl answers at once
    log_file = tmp_path / "make-run.log"
    deadline = time.monotonic() + 240
    while "keel: ready:" not in log_file.read_text() and time.monotonic() < deadline:
        time.sleep(1)
    assert "ready: the demo's customers are in" in log_file.read_text(), log_file.read_text()
    tokens = read_env(Path(env["KEEL_RUN_DIR"]) / "tokens.env")
    request = urllib.request.Request(
        f"http://127.0.0.1:{env['KEEL_API_PORT']}/customers/c-dup",
        headers={"Authorization": f"Bearer {tokens['KEEL_READ_TOKEN']}"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200 and json.loads(resp.read())["customer_id"] == "c-dup"

    # the demo's back-dated events are hours old, but keel applies them within seconds of
    # Kafka taking them: the stale alert (p99 of keel_event_apply_seconds > 60 s) stays quiet
    metrics = urllib.request.Request(
        f"http://127.0.0.1:{env['KEEL_API_PORT']}/metrics",
        headers={"Authorization": f"Bearer {tokens['KEEL_METRICS_TOKEN']}"},
    )
    with urllib.request.urlopen(metrics, timeout=10) as resp:
        exposition = resp.read().decode()
    applied_p99 = p99(exposition, "keel_event_apply_seconds")
    age_p99 = p99(exposition, "keel_event_freshness_seconds")
    assert applied_p99 < 60 < age_p99, (applied_p99, age_p99)
    print(f"\ndemo: p99 Kafka -> applied {applied_p99} s, p99 event-time age {age_p99} s")

    feed_done = time.monotonic() + 120
    while "demo feed: done" not in log_file.read_text() and time.monotonic() < feed_done:
        time.sleep(1)
    assert target(env, "--status").returncode == 0  # still well once the feed is done

    again = target(env, "--background")  # make up while make run runs
    assert again.returncode == 1 and "already running" in again.stdout
    assert "`make down` stops it" in again.stdout

    log = (Path(env["KEEL_RUN_DIR"]) / "worker.log").read_text()
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert errors == [], errors  # a healthy start logs no ERROR
    assert len(log.splitlines()) < 120, f"{len(log.splitlines())} lines: not a screen"

    down = target(env, "--down")
    assert down.returncode == 0 and "stopped" in down.stdout
    launcher.wait(60)
    assert not launcher.running  # make run's launcher stopped, everything with it
    after = target(env, "--status")
    assert after.returncode == 1 and "not running" in after.stdout


def test_status_and_down_see_make_up(run_dir: Path) -> None:
    env = stack_env(run_dir)
    try:
        up = target(env, "--background")
        assert up.returncode == 0, up.stdout + up.stderr
        status = wait_well(env)
        assert "started by `make up`" in status and "keel: worker " in status
        twice = target(env, "--background")
        assert twice.returncode == 0 and "already up" in twice.stdout
        foreground = target(env, timeout=60)  # make run while make up runs
        assert foreground.returncode == 1 and "already running" in foreground.stdout
    finally:
        down = target(env, "--down")
    assert down.returncode == 0
    after = target(env, "--status")
    assert after.returncode == 1 and "not running" in after.stdout
