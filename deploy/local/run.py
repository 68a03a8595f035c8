"""`make run`, `make up`, `make down`: the whole local stack, in the foreground or not.

- ``python -m deploy.local.run``: Kafka, Redis, a stream worker with its API and the demo
  feed in the foreground; Ctrl-C (or SIGTERM) stops every process it started.
- ``--background`` (`make up`): the same without the demo feed, detached; returns once the
  worker's ``/readyz`` answers 200. Pid files and logs live in ``.run/`` (``KEEL_RUN_DIR``).
- ``--down`` (`make down`): stops what ``--background`` started.

Ports come from the same variables the processes read (``KEEL_KAFKA_PORT``,
``KEEL_REDIS_PORT``, ``KEEL_API_PORT``), so the printed URLs are the ones that answer.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from deploy.local.errors import StackError
from deploy.local.stack import Kafka, Redis, ensure_port_free, stop_pid

ROOT = Path(__file__).resolve().parents[2]
WORKER_MARKER = b"streams"


def _say(message: str) -> None:
    print(f"keel: {message}", flush=True)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


class Stack:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.kafka_port = int(os.environ.get("KEEL_KAFKA_PORT", "9092"))
        self.redis_port = int(os.environ.get("KEEL_REDIS_PORT", "6379"))
        self.api_port = int(os.environ.get("KEEL_API_PORT", "6066"))
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.kafka = Kafka(run_dir / "kafka", port=self.kafka_port, log_file=run_dir / "kafka.log")
        self.redis = Redis(run_dir / "redis", port=self.redis_port, log_file=run_dir / "redis.log")
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP": self.kafka.bootstrap,
            "REDIS_URL": self.redis.url,
            "KEEL_API_PORT": str(self.api_port),
            "KEEL_DATA_DIR": os.environ.get("KEEL_DATA_DIR", str(run_dir / "worker")),
        }

    def start_worker(self, detached: bool) -> subprocess.Popen[bytes]:
        ensure_port_free(self.api_port, "the stream worker's API")  # else /readyz lies
        log = open(self.run_dir / "worker.log", "ab")  # noqa: SIM115 (handed to the child)
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=detached,
        )
        deadline = time.monotonic() + 180
        while not _ready(self.api):
            if proc.poll() is not None:
                tail = (self.run_dir / "worker.log").read_text(errors="replace")[-3000:]
                raise StackError(f"worker exited with {proc.returncode}; its log ends:\n{tail}")
            if time.monotonic() > deadline:
                raise StackError(f"worker not ready after 180 s; see {self.run_dir}/worker.log")
            time.sleep(0.5)
        return proc


def run_foreground(stack: Stack, customers: int, rate: float) -> int:
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        _say(f"starting Kafka on {stack.kafka.bootstrap} (log: {stack.run_dir}/kafka.log)")
        stack.kafka.start()
        _say(f"starting Redis on {stack.redis.url}")
        stack.redis.start()
        _say(f"starting the stream worker, API on {stack.api} (log: {stack.run_dir}/worker.log)")
        procs.append(stack.start_worker(detached=False))
        _say(f"ready: {stack.api}/readyz, {stack.api}/metrics; Ctrl-C stops everything")
        feed = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "connectors.sources.demo_feed",
                "--customers",
                str(customers),
                "--rate",
                str(rate),
                "--api",
                stack.api,
            ],
            cwd=ROOT,
            env=stack.env,
        )
        procs.append(feed)
        while all(p.poll() is None for p in procs[:1]):
            time.sleep(0.5)
        _say(f"the worker stopped with {procs[0].returncode}; see {stack.run_dir}/worker.log")
        return 1
    except KeyboardInterrupt:
        stopping = True
        return 0
    except StackError as exc:
        _say(str(exc))
        return 1
    finally:
        if stopping:
            _say("stopping")
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        stack.redis.stop()
        stack.kafka.stop()
        _say("stopped")


def run_background(stack: Stack) -> int:
    pid_file = stack.run_dir / "worker.pid"
    if pid_file.exists() and _ready(stack.api):
        _say(f"already up: {stack.api}")
        return 0
    try:
        subprocess.run(
            [sys.executable, "-m", "deploy.local.stack", "up", "--dir", str(stack.run_dir)],
            cwd=ROOT,
            check=True,
        )
        _say(f"starting the stream worker, API on {stack.api}")
        proc = stack.start_worker(detached=True)
    except (StackError, subprocess.CalledProcessError) as exc:
        _say(f"could not start the stack: {exc}")
        return 1
    pid_file.write_text(str(proc.pid))
    _say(f"up: {stack.api}/customers/<id>, {stack.api}/metrics; `make down` stops it")
    return 0


def run_down(stack: Stack) -> int:
    pid_file = stack.run_dir / "worker.pid"
    if pid_file.exists():
        stop_pid(int(pid_file.read_text()), WORKER_MARKER)
        pid_file.unlink()
        _say("stopped the stream worker")
    subprocess.run(
        [sys.executable, "-m", "deploy.local.stack", "down", "--dir", str(stack.run_dir)],
        cwd=ROOT,
        check=False,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--background", action="store_true", help="start detached (make up)")
    mode.add_argument("--down", action="store_true", help="stop the detached stack (make down)")
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get("KEEL_RUN_DIR", ".run")))
    parser.add_argument(
        "--customers", type=int, default=int(os.environ.get("KEEL_DEMO_CUSTOMERS", "300"))
    )
    parser.add_argument("--rate", type=float, default=float(os.environ.get("KEEL_DEMO_RATE", "50")))
    args = parser.parse_args(argv)
    run_dir = args.dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(run_dir)
    if args.down:
        return run_down(stack)
    if args.background:
        return run_background(stack)
    return run_foreground(stack, args.customers, args.rate)


if __name__ == "__main__":
    sys.exit(main())
