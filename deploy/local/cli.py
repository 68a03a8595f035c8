"""``python -m deploy.local fetch|up|down|status``: the local Kafka and Redis for `make`.

``up`` starts both detached (they outlive this command), records their pids in ``--dir``
(default ``.run``) and returns once each answers a real request; ``down`` stops what the pid
files name. Ports: ``KEEL_KAFKA_PORT`` (9092), ``KEEL_KAFKA_CONTROLLER_PORT`` (Kafka's + 1),
``KEEL_REDIS_PORT`` (6379). ``KEEL_KAFKA_BROKERS=3`` runs a replicated 3-node cluster instead of
one node (node i on ``KEEL_KAFKA_PORT`` + 2i, its controller on the port after). Exit codes: 0
ok, 1 failed, 2 a program is missing (the message says what to install); ``status`` exits 1
unless every service is up and answering.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from deploy.local.errors import MissingTool, PortInUse, StackError
from deploy.local.provision import (
    DEFAULT_APT_PACKAGES,
    ensure_apt_packages,
    ensure_connect_jars,
    ensure_debezium_plugin,
    ensure_kafka_jars,
)
from deploy.local.stack import Kafka, KafkaCluster, Redis, is_running, local_kafka, stop_pid

Service = Kafka | Redis


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.local", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "fetch", help="download Kafka's, Connect's and Debezium's jars; apt-install what is missing"
    )
    for name, text in (("up", "start detached"), ("down", "stop"), ("status", "show state")):
        command = commands.add_parser(name, help=f"{text} the local Kafka and Redis")
        command.add_argument("--dir", type=Path, default=Path(".run"), help="pid files, data, logs")
    args = parser.parse_args(argv)

    # The library reports progress (e.g. "fetching Kafka 3.9.1 jars…") through logging.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    library_log = logging.getLogger("deploy.local")
    library_log.addHandler(handler)
    library_log.setLevel(logging.INFO)

    run: dict[str, Callable[[argparse.Namespace], int]] = {
        "fetch": _fetch,
        "up": _up,
        "down": _down,
        "status": _status,
    }
    try:
        return run[args.command](args)
    except MissingTool as exc:
        print(f"keel: {exc}", file=sys.stderr)
        return 2
    except PortInUse as exc:
        variable = next((v for v, port in _ports().items() if port == exc.port), None)
        hint = f" (set {variable} to pick another)" if variable else ""
        print(f"keel: {exc}{hint}", file=sys.stderr)
        return 1
    except StackError as exc:
        print(f"keel: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _fetch(args: argparse.Namespace) -> int:
    print(f"Kafka jars: {ensure_kafka_jars()}")
    print(f"Kafka Connect jars: {ensure_connect_jars()}")  # KEEL_CDC=debezium, tests/test_cdc
    print(f"Debezium plugin: {ensure_debezium_plugin()}")
    ensure_apt_packages(DEFAULT_APT_PACKAGES)
    print(f"apt packages present: {', '.join(DEFAULT_APT_PACKAGES)}")
    return 0


def _up(args: argparse.Namespace) -> int:
    run_dir = args.dir.absolute()
    run_dir.mkdir(parents=True, exist_ok=True)
    started: list[Service] = []
    try:
        # Launched together, then waited for: the nodes of a Kafka cluster elect a controller
        # among themselves, so none of them is ready before a majority runs.
        began, timeout = time.monotonic(), 120.0
        deadline = began + timeout
        for service in _services(run_dir):
            pid_file = _pid_file(run_dir, service)
            pid = _read_pid(pid_file)
            if pid is not None and is_running(pid, service.marker):
                print(f"{service.name} already running (pid {pid}) at {service.address}")
                continue
            print(f"starting {service.name} at {service.address} (log {service.log_file})")
            if isinstance(service, Kafka):
                ensure_kafka_jars()
            service.launch(deadline)
            started.append(service)
        for service in started:
            service.wait_ready(deadline)
            _pid_file(run_dir, service).write_text(f"{service.pid}\n")
            elapsed = time.monotonic() - began
            print(f"{service.name} ready in {elapsed:.1f}s (pid {service.pid})")
    except BaseException:
        # All or nothing: do not leave half a stack running after a failed `make up`.
        for service in reversed(started):
            service.stop()
            _pid_file(run_dir, service).unlink(missing_ok=True)
        raise
    return 0


def _down(args: argparse.Namespace) -> int:
    run_dir = args.dir.absolute()
    for service in reversed(_services(run_dir)):
        pid_file = _pid_file(run_dir, service)
        pid = _read_pid(pid_file)
        if pid is not None and stop_pid(pid, service.marker):
            print(f"stopped {service.name} (pid {pid})")
        else:
            print(f"{service.name} was not running")
        pid_file.unlink(missing_ok=True)
    return 0


def _status(args: argparse.Namespace) -> int:
    run_dir = args.dir.absolute()
    all_up = True
    for service in _services(run_dir):
        pid = _read_pid(_pid_file(run_dir, service))
        if pid is None or not is_running(pid, service.marker):
            print(f"{service.name}: stopped")
            all_up = False
        elif service.is_ready():
            print(f"{service.name}: running (pid {pid}), answering at {service.address}")
        else:
            print(f"{service.name}: running (pid {pid}), not answering at {service.address}")
            all_up = False
    return 0 if all_up else 1


def _services(run_dir: Path) -> list[Service]:
    """Redis first: it is ready in milliseconds, so a Kafka failure is the last line printed."""
    ports = _ports()
    redis = Redis(run_dir / "redis", ports["KEEL_REDIS_PORT"], log_file=run_dir / "redis.log")
    kafka = local_kafka(run_dir, ports["KEEL_KAFKA_PORT"], ports["KEEL_KAFKA_CONTROLLER_PORT"])
    return [redis, *(kafka.nodes if isinstance(kafka, KafkaCluster) else [kafka])]


def _ports() -> dict[str, int]:
    kafka_port = _port_from_env("KEEL_KAFKA_PORT", 9092)
    return {
        "KEEL_KAFKA_PORT": kafka_port,
        "KEEL_KAFKA_CONTROLLER_PORT": _port_from_env("KEEL_KAFKA_CONTROLLER_PORT", kafka_port + 1),
        "KEEL_REDIS_PORT": _port_from_env("KEEL_REDIS_PORT", 6379),
    }


def _port_from_env(variable: str, default: int) -> int:
    raw = os.environ.get(variable)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise StackError(f"{variable}={raw!r} is not a TCP port")
    return int(raw)


def _pid_file(run_dir: Path, service: Service) -> Path:
    return run_dir / f"{service.name}.pid"


def _read_pid(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None
