"""`make run`, `make up`, `make down`: the whole local stack, in the foreground or not.

- ``python -m deploy.local.run``: Kafka, Redis, PostgreSQL, a stream worker with its API, the
  connectors (HTTP ingest, PostgreSQL outbox, Redis sink, PostgreSQL inbox, webhook), the demo
  feed and the demo shop (which honours the desk's cancel commands) in the foreground;
  Ctrl-C (or SIGTERM) stops every process it started.
- ``--background`` (`make up`): the same without the demo feed and shop (and without the
  webhook connector unless ``KEEL_WEBHOOK_URL`` is set), detached; returns once the
  worker's ``/readyz`` and every connector's ``/healthz`` answer 200. Pid files and logs live
  in ``.run/`` (``KEEL_RUN_DIR``).
- ``--down`` (`make down`): stops what ``--background`` started, connectors first.

Tokens (docs/security.md): on first start one token per role is made and written to
``.run/tokens.env`` (mode 600, shell lines ``KEEL_READ_TOKEN=…``; ``. .run/tokens.env`` and
``curl -H "Authorization: Bearer $KEEL_READ_TOKEN" …``), their SHA-256 hashes to
``.run/tokens.sha256``, which every process reads as ``KEEL_AUTH_TOKENS_FILE``. Later starts
reuse them; delete both files to get new ones. Nothing is made with ``KEEL_AUTH=off`` or a
``KEEL_AUTH_TOKENS_FILE`` of your own.

Ports come from the same variables the processes read (``KEEL_KAFKA_PORT``,
``KEEL_REDIS_PORT``, ``KEEL_POSTGRES_PORT``, ``KEEL_API_PORT``, ``KEEL_INGEST_PORT``,
``KEEL_OUTBOX_PORT``, ``KEEL_REDIS_SINK_PORT``), so the printed URLs are the ones that answer.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from deploy.local import record
from deploy.local.compose_secrets import ensure_compose_secrets
from deploy.local.connect import DEPARTMENTS, Connect, cdc_from_env, outbox_connector
from deploy.local.envfile import read_env, write_private
from deploy.local.errors import StackError
from deploy.local.postgres import Postgres
from deploy.local.process import Child, stop_all
from deploy.local.stack import (
    KafkaCluster,
    Redis,
    ensure_port_free,
    is_running,
    local_kafka,
    stop_pid,
)

ROOT = Path(__file__).resolve().parents[2]
WORKER_MARKER = b"streams"


@dataclass(frozen=True)
class Connector:
    """One connector process: its module, the port its /healthz answers on, its log name."""

    name: str
    module: str
    port: int

    @property
    def marker(self) -> bytes:
        return self.module.encode()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _say(message: str) -> None:
    print(f"keel: {message}", flush=True)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _ready(url: str) -> bool:
    return _answers(f"{url}/readyz")


DEMO_CUSTOMER = "c-dup"  # planted by the demo feed (connectors/demo/feed.py), the README's curl


def _demo_in(stack: Stack, services: list[Child], timeout: float = 240.0) -> bool:
    """Wait until the demo feed's planted customer answers the query API (what the README's
    first curl asks), so "ready" means the story is there; False after ``timeout``."""
    headers = {}
    if stack.tokens_env is not None:
        headers["Authorization"] = f"Bearer {read_env(stack.tokens_env)['KEEL_READ_TOKEN']}"
    url = f"{stack.api}/customers/{DEMO_CUSTOMER}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and all(child.running for child in services):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                        timeout=2) as resp:  # fmt: skip
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(1)
    return False


def _port(variable: str, default: int) -> int:
    return int(os.environ.get(variable) or default)


DEMO_WEBHOOK_SECRET = "keel-demo-webhook-secret"
ROLES = ("read", "write", "agent", "admin", "metrics")  # streams/auth.py's, one token each


def ensure_tokens(run_dir: Path) -> tuple[Path, Path]:
    """(tokens.env, tokens.sha256) in ``run_dir``: made once, one random token per role.

    tokens.env holds the tokens for people and clients (mode 600); tokens.sha256 only their
    hashes, in the ``KEEL_AUTH_TOKENS_FILE`` format, for the processes. Standard library
    only (``make down`` may run before the .venv exists).
    """
    env_file, hash_file = run_dir / "tokens.env", run_dir / "tokens.sha256"
    tokens = read_env(env_file)
    if set(tokens) != {f"KEEL_{role.upper()}_TOKEN" for role in ROLES}:
        tokens = {f"KEEL_{role.upper()}_TOKEN": secrets.token_urlsafe(32) for role in ROLES}
        lines = [
            "# keel's local tokens, one per role; made by `make run`/`make up` on first start.",
            '# . .run/tokens.env; curl -H "Authorization: Bearer $KEEL_READ_TOKEN" '
            "http://127.0.0.1:6066/customers/c-dup",
            *(f"{name}={token}" for name, token in tokens.items()),
        ]
        write_private(env_file, "\n".join(lines) + "\n")
    else:
        env_file.chmod(0o600)  # kept, but never left readable by others
    # Each entry is named after its variable, which marks it a shared role token: a command
    # sent with it is recorded under the agent name the desk types (X-Keel-Agent), not under
    # the token's name (streams/auth.py personal_name; docs: "Who is recorded").
    hashes = [
        "# sha256:<hex> role name -- the hashes of tokens.env (KEEL_AUTH_TOKENS_FILE)",
        *(
            f"sha256:{hashlib.sha256(token.encode()).hexdigest()} "
            f"{name.removeprefix('KEEL_').removesuffix('_TOKEN').lower()} {name}"
            for name, token in tokens.items()
        ),
    ]
    write_private(hash_file, "\n".join(hashes) + "\n")
    return env_file, hash_file


class Stack:
    def __init__(self, run_dir: Path, demo: bool = False, tokens: bool = True) -> None:
        """``demo``: the foreground stack, with the simulated shop the webhook calls;
        ``tokens``: make (or reuse) the local tokens (not for stopping it)."""
        self.run_dir = run_dir
        self.kafka_port = _port("KEEL_KAFKA_PORT", 9092)
        self.redis_port = _port("KEEL_REDIS_PORT", 6379)
        self.postgres_port = _port("KEEL_POSTGRES_PORT", 5432)
        self.api_port = _port("KEEL_API_PORT", 6066)
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.kafka = local_kafka(run_dir, self.kafka_port)
        #: KEEL_CDC=debezium: Kafka Connect with Debezium reads the departments' outboxes
        #: (deploy/local/connect.py) instead of keel's outbox poller
        self.cdc = cdc_from_env()
        self.connect = (
            Connect(run_dir / "connect", self.kafka.bootstrap, _port("KEEL_CONNECT_PORT", 8083),
                    log_file=run_dir / "connect.log", replication=self.kafka.replication)
            if self.cdc == "debezium" else None
        )  # fmt: skip
        self.redis = Redis(run_dir / "redis", port=self.redis_port, log_file=run_dir / "redis.log")
        self.postgres = Postgres(
            run_dir / "postgres", port=self.postgres_port, log_file=run_dir / "postgres.log"
        )
        self.connectors = [
            Connector(
                "http-ingest", "connectors.sources.http_ingest", _port("KEEL_INGEST_PORT", 8088)
            ),
            Connector("redis-sink", "connectors.sinks.redis", _port("KEEL_REDIS_SINK_PORT", 8090)),
            Connector(
                "postgres-inbox", "connectors.sinks.postgres_inbox", _port("KEEL_INBOX_PORT", 8091)
            ),
            Connector(
                "directory-sink",
                "connectors.sinks.directory",
                _port("KEEL_DIRECTORY_SINK_PORT", 8094),
            ),
        ]
        if self.connect is None:  # keel's own poller of keel_outbox
            self.connectors.insert(1, Connector(
                "postgres-outbox", "connectors.sources.postgres_outbox",
                _port("KEEL_OUTBOX_PORT", 8089),
            ))  # fmt: skip
        webhook_env: dict[str, str] = {}
        if demo:
            shop_port = _port("KEEL_SHOP_PORT", 8093)
            self.connectors.append(
                Connector("demo-shop", "connectors.demo.shop", shop_port)
            )
            webhook_env = {
                "KEEL_WEBHOOK_URL": os.environ.get("KEEL_WEBHOOK_URL")
                or f"http://127.0.0.1:{shop_port}/keel/commands",
                "KEEL_WEBHOOK_SECRET": os.environ.get("KEEL_WEBHOOK_SECRET") or DEMO_WEBHOOK_SECRET,
            }
        if webhook_env or os.environ.get("KEEL_WEBHOOK_URL"):
            self.connectors.append(
                Connector("webhook", "connectors.sinks.webhook", _port("KEEL_WEBHOOK_PORT", 8092))
            )
        self.tokens_env: Path | None = None
        auth_env: dict[str, str] = {}
        auth_off = (os.environ.get("KEEL_AUTH") or "on").strip().lower() == "off"
        if tokens and not auth_off and not os.environ.get("KEEL_AUTH_TOKENS_FILE"):
            self.tokens_env, hash_file = ensure_tokens(run_dir)
            auth_env = {"KEEL_AUTH_TOKENS_FILE": str(hash_file)}
        self.env = {
            **webhook_env,
            **auth_env,
            **os.environ,
            "KAFKA_BOOTSTRAP": self.kafka.bootstrap,
            "REDIS_URL": self.redis.url,
            "POSTGRES_URL": os.environ.get("POSTGRES_URL") or self.postgres.url,
            # the desk's search by name, e-mail, phone, order (connectors/sinks/directory.py)
            "KEEL_DIRECTORY_URL": os.environ.get("KEEL_DIRECTORY_URL")
            or os.environ.get("POSTGRES_URL")
            or self.postgres.url,
            "KEEL_API_PORT": str(self.api_port),
            "KEEL_DATA_DIR": os.environ.get("KEEL_DATA_DIR", str(run_dir / "worker")),
        }
        if isinstance(self.kafka, KafkaCluster):  # its topics replicated like the cluster's own
            self.env.setdefault("KEEL_REPLICATION", str(self.kafka.replication))

    def start_worker(self) -> Child:
        ensure_port_free(self.api_port, "the stream worker's API")  # else /readyz lies
        # own session even in the foreground: Ctrl-C reaches only this script, which then
        # stops every process in order (the feed, connectors, worker, services)
        worker = Child("worker", self.run_dir / "worker.log")
        worker.start([sys.executable, "-m", "streams", "worker"], cwd=ROOT, env=self.env)
        worker.wait_ready(lambda: _ready(self.api), time.monotonic() + 180, interval=0.5)
        return worker

    def start_connectors(self) -> list[Child]:
        """Start the connectors (and the demo shop); return once each answers /healthz."""
        for connector in self.connectors:
            ensure_port_free(connector.port, f"the {connector.name} connector")
        children: list[Child] = []
        try:
            for connector in self.connectors:
                child = Child(connector.name, self.run_dir / f"{connector.name}.log")
                child.start([sys.executable, "-m", connector.module], cwd=ROOT, env=self.env)
                children.append(child)
            deadline = time.monotonic() + 60
            for connector, child in zip(self.connectors, children, strict=True):
                healthz = partial(_answers, f"{connector.url}/healthz")
                child.wait_ready(healthz, deadline, interval=0.2)
        except BaseException:
            stop_all(reversed(children))
            raise
        return children

    def start_connect(self) -> None:
        """Kafka Connect, each department's outbox table and its Debezium connector; returns
        once every connector runs (KEEL_CDC=debezium only)."""
        if self.connect is None:
            return
        import psycopg  # the venv's; `make down` runs this module without it

        from connectors.sources.debezium_outbox import schema_sql

        url = self.env["POSTGRES_URL"]
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            for department in DEPARTMENTS:
                conn.execute(schema_sql(department))
        self.connect.start()
        for department in DEPARTMENTS:
            self.connect.put_connector(*outbox_connector(department, url))
        for department in DEPARTMENTS:
            self.connect.wait_running(outbox_connector(department, url)[0])

    def hints(self) -> list[str]:
        url = {c.name: c.url for c in self.connectors}
        ingest, sink = url["http-ingest"], url["redis-sink"]
        if self.tokens_env is not None:
            auth = [
                f"tokens         {self.tokens_env} (one per role; mode 600): "
                f'. {self.tokens_env}; curl -H "Authorization: Bearer $KEEL_READ_TOKEN" '
                f"{self.api}/customers/c-dup",
                f"               desk sign-in: the agent token, or {self.api}/desk/"
                "#token=$KEEL_AGENT_TOKEN",
            ]
        elif (self.env.get("KEEL_AUTH") or "on").strip().lower() == "off":
            auth = ["tokens         none: KEEL_AUTH=off, every port answers everyone"]
        else:
            auth = [
                f"tokens         from KEEL_AUTH_TOKENS_FILE={self.env['KEEL_AUTH_TOKENS_FILE']}"
            ]
        lines = [
            *auth,
            f"query API      {self.api}/customers/<id>  (metrics {self.api}/metrics)",
            f"desk console   {self.api}/desk/  (search by name, e-mail, phone, order: "
            f"{self.api}/directory?q=…, metrics {url['directory-sink']}/metrics)",
            f"dead letters   {self.api}/desk/deadletters  (admin token; keel deadletters list)",
            f"voice board    {self.api}/desk/voice  (GET {self.api}/voice?window=7d)",
            f"HTTP ingest    POST {ingest}/events/orders|shipments|contacts"
            f"  ({ingest}/openapi.json)",
            *self._outbox_hints(url),
            f"Redis sink     redis-cli -p {self.redis_port} GET keel:customer:<id>"
            f"  (metrics {sink}/metrics)",
            f"commands       POST {self.api}/customers/<id>/commands -> keel_inbox"
            f" at {self.env['POSTGRES_URL']}  (metrics {url['postgres-inbox']}/metrics)",
        ]
        if "webhook" in url:
            lines.append(
                f"webhook        commands POSTed to {self.env['KEEL_WEBHOOK_URL']}"
                f"  (metrics {url['webhook']}/metrics)"
            )
        if "demo-shop" in url:
            lines.append(
                "demo shop      cancels orders from keel_inbox: open "
                f"{self.api}/desk/?customer=c-dup and cancel o-dup-2"
            )
            lines.append(
                "               and refuses what has shipped: cancel o-late-1 in "
                f"{self.api}/desk/?customer=c-late (COMMAND_FAILED with its reason)"
            )
        return lines


    def _outbox_hints(self, url: dict[str, str]) -> list[str]:
        at = self.env["POSTGRES_URL"]
        if self.connect is None:
            return [f"outbox         INSERT INTO keel_outbox(topic, key, payload) at {at}"
                    f"  (metrics {url['postgres-outbox']}/metrics)"]  # fmt: skip
        tables = " / ".join(f"{d}.keel_outbox" for d in DEPARTMENTS)
        return [
            f"outboxes       INSERT INTO {tables}(event_id, topic, key, payload) at {at},"
            " payload Avro-encoded (docs/connectors/debezium.md)",
            f"               read by Debezium in Kafka Connect: {self.connect.url}/connectors"
            f"?expand=status (log: {self.run_dir}/connect.log)",
        ]


def run_foreground(stack: Stack, customers: int, rate: float) -> int:
    children: list[Child] = []
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        _say(f"starting Kafka on {stack.kafka.bootstrap} (log: {stack.run_dir}/kafka*.log)")
        stack.kafka.start()
        _say(f"starting Redis on {stack.redis.url}")
        stack.redis.start()
        _say(f"starting PostgreSQL on {stack.postgres.url} (log: {stack.run_dir}/postgres.log)")
        stack.postgres.start()
        _say(f"starting the stream worker, API on {stack.api} (log: {stack.run_dir}/worker.log)")
        children.append(stack.start_worker())
        _say(f"starting the connectors (logs: {stack.run_dir}/<connector>.log)")
        children += stack.start_connectors()
        if stack.connect is not None:
            _say(f"starting Kafka Connect with Debezium on {stack.connect.url} "
                 f"(log: {stack.run_dir}/connect.log)")  # fmt: skip
            stack.start_connect()
        for line in stack.hints():
            _say(line)
        services = list(children)  # the worker and the connectors; the feed may finish
        feed = Child("demo feed")  # its output goes to the terminal
        feed_args = ["--customers", str(customers), "--rate", str(rate), "--api", stack.api]
        children.append(
            feed.start(
                [sys.executable, "-m", "connectors.demo.feed", *feed_args],
                cwd=ROOT,
                env=stack.env,
            )
        )
        # the demo feed is a one-shot producer, not a service: its end is not a failure
        record.write(stack.run_dir, "make run", os.getpid(),
                     _services(stack) + _children(stack, services))  # fmt: skip
        _say("waiting for the demo's story (customer c-dup and the others) to be in the state")
        if _demo_in(stack, services):
            _say(f"ready: the demo's customers are in (try {stack.api}/desk/?customer=c-dup); "
                 "Ctrl-C stops everything")  # fmt: skip
        else:
            _say(f"up, but the demo's customers are not in yet: see the demo feed's lines "
                 f"above and {stack.run_dir}/worker.log; Ctrl-C stops everything")  # fmt: skip
        while all(child.running for child in services):
            time.sleep(0.5)
        gone = next(child.name for child in services if not child.running)
        _say(f"the {gone} process stopped; see {stack.run_dir}/{gone}.log")
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
        stop_all(reversed(children))  # newest first
        if stack.connect is not None:
            stack.connect.stop()
        stack.postgres.stop()
        stack.redis.stop()
        stack.kafka.stop()
        record.clear(stack.run_dir)
        _say("stopped")


def _services(stack: Stack, pids: dict[str, int | None] | None = None) -> list[record.Process]:
    """Kafka's nodes, Redis and PostgreSQL as the record lists them (``pids``: name -> pid
    where this process did not start them itself)."""
    pids = pids or {}
    nodes = stack.kafka.nodes if isinstance(stack.kafka, KafkaCluster) else [stack.kafka]
    found = []
    for service in (*nodes, stack.redis, stack.postgres):
        pid = pids.get(service.name, service.pid)
        if pid is not None:
            found.append(record.Process(service.name, pid, service.marker.decode(),
                                        f"tcp://127.0.0.1:{service.port}"))  # fmt: skip
    connect = stack.connect
    pid = None if connect is None else pids.get(connect.name, connect.pid)
    if connect is not None and pid is not None:
        found.append(record.Process(connect.name, pid, connect.marker.decode(),
                                    f"{connect.url}/health"))  # fmt: skip
    return found


def _children(stack: Stack, children: list[Child]) -> list[record.Process]:
    """The worker, the connectors and the demo feed as the record lists them."""
    checks = {"worker": f"{stack.api}/readyz"}
    checks |= {c.name: f"{c.url}/healthz" for c in stack.connectors}
    markers = {"worker": WORKER_MARKER.decode(), "demo feed": "connectors.demo.feed"}
    markers |= {c.name: c.module for c in stack.connectors}
    return [
        record.Process(c.name, c.pid, markers.get(c.name, ""), checks.get(c.name, ""))
        for c in children
        if c.pid is not None
    ]


def already_running(found: dict[str, Any]) -> str:
    """What the record ``found`` says runs, and how to stop it."""
    names = ", ".join(p.name for p in found["processes"] if p.alive())
    return (f"keel is already running (started by `{found['started_by']}` at {found['at']}: "
            f"{names or 'its launcher'}); `make status` shows it, `make down` stops it")


def run_status(run_dir: Path) -> int:
    """Every process of the stack with its health answer; 0 only if all are well."""
    found = record.running(run_dir)
    if found is None:
        _say(f"keel is not running (nothing recorded in {run_dir / record.NAME})")
        return 1
    _say(f"started by `{found['started_by']}` at {found['at']}")
    well = True
    for process in found["processes"]:
        if not process.alive():
            _say(f"{process.name:<16} stopped (was pid {process.pid})")
            well = False
            continue
        ok, answer = process.health()
        well &= ok
        _say(f"{process.name:<16} pid {process.pid:<7} {'up' if ok else 'NOT WELL'}: {answer}")
    return 0 if well else 1


def _pid_file(stack: Stack, name: str) -> Path:
    return stack.run_dir / f"{name}.pid"


def run_background(stack: Stack) -> int:
    pid_file = _pid_file(stack, "worker")
    if pid_file.exists() and _ready(stack.api):
        _say(f"already up: {stack.api}")
        return 0
    try:
        subprocess.run(
            [sys.executable, "-m", "deploy.local", "up", "--dir", str(stack.run_dir)],
            cwd=ROOT,
            check=True,
        )
        postgres_pid = _pid_file(stack, "postgres")
        old = int(postgres_pid.read_text()) if postgres_pid.exists() else None
        if old is None or not is_running(old, Postgres.marker):
            _say(f"starting PostgreSQL at {stack.postgres.url}")
            stack.postgres.start()
            postgres_pid.write_text(f"{stack.postgres.pid}\n")
        _say(f"starting the stream worker, API on {stack.api}")
        worker = stack.start_worker()
        pid_file.write_text(str(worker.pid))
        _say("starting the connectors")
        connectors = stack.start_connectors()
        for child in connectors:
            _pid_file(stack, child.name).write_text(str(child.pid))
        if stack.connect is not None:
            _say(f"starting Kafka Connect with Debezium on {stack.connect.url}")
            stack.start_connect()
            _pid_file(stack, "connect").write_text(f"{stack.connect.pid}\n")
        pids = {name: _read_pid(_pid_file(stack, name))
                for name in ("kafka", "redis", "postgres", "connect")}  # fmt: skip
        pids |= {node.name: _read_pid(_pid_file(stack, node.name))
                 for node in getattr(stack.kafka, "nodes", [])}  # fmt: skip
        record.write(stack.run_dir, "make up", None,
                     _services(stack, pids) + _children(stack, [worker, *connectors]))  # fmt: skip
    except (StackError, subprocess.CalledProcessError) as exc:
        _say(f"could not start the stack: {exc}")
        return 1
    for line in stack.hints():
        _say(line)
    _say("up; `make down` stops it")
    return 0


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def stop_launcher(run_dir: Path, timeout: float = 90.0) -> bool:
    """`make run` in the foreground: SIGTERM its launcher, which stops the whole stack in
    order, and wait for it; True if there was one."""
    found = record.read(run_dir)
    launcher = found and found.get("launcher")
    if not launcher or not is_running(launcher, b"deploy.local.run"):
        return False
    _say(f"stopping `make run` (pid {launcher}) and everything it started")
    os.kill(launcher, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and is_running(launcher, b"deploy.local.run"):
        time.sleep(0.2)
    if is_running(launcher, b"deploy.local.run"):
        raise StackError(f"`make run` (pid {launcher}) did not stop within {timeout:.0f} s")
    return True


def run_down(stack: Stack) -> int:
    if stop_launcher(stack.run_dir):
        for process in (record.read(stack.run_dir) or {"processes": []})["processes"]:
            if process.alive():
                stop_pid(process.pid, process.marker.encode())
        record.clear(stack.run_dir)
        _say("stopped")
        return 0
    if not any(c.name == "webhook" for c in stack.connectors):  # started if its URL was set
        _stop_from_pid_file(stack, "webhook", b"connectors.sinks.webhook")
    for connector in reversed(stack.connectors):
        _stop_from_pid_file(stack, connector.name, connector.marker)
    _stop_from_pid_file(stack, "connect", Connect.marker, "Kafka Connect")
    _stop_from_pid_file(stack, "worker", WORKER_MARKER, "the stream worker")
    _stop_from_pid_file(stack, "postgres", Postgres.marker, "PostgreSQL")
    subprocess.run(
        [sys.executable, "-m", "deploy.local", "down", "--dir", str(stack.run_dir)],
        cwd=ROOT,
        check=False,
    )
    record.clear(stack.run_dir)
    return 0


def _stop_from_pid_file(stack: Stack, name: str, marker: bytes, label: str = "") -> None:
    pid_file = _pid_file(stack, name)
    if not pid_file.exists():
        return
    text = pid_file.read_text().strip()
    if text.isdigit() and stop_pid(int(text), marker):
        _say(f"stopped {label or name}")
    pid_file.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--background", action="store_true", help="start detached (make up)")
    mode.add_argument("--down", action="store_true",
                      help="stop whatever runs, started by make run or make up (make down)")
    mode.add_argument("--status", action="store_true",
                      help="every process of the stack with its health answer (make status)")
    mode.add_argument(
        "--tokens",
        action="store_true",
        help="only make (or keep) DIR/tokens.env and DIR/tokens.sha256, e.g. for deploy/compose",
    )
    mode.add_argument(
        "--compose-secrets",
        action="store_true",
        help="make (or keep) the tokens, service passwords and certificates of deploy/compose "
        "in DIR (deploy/compose/*.env and tls/)",
    )
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get("KEEL_RUN_DIR", ".run")))
    parser.add_argument(
        "--customers", type=int, default=int(os.environ.get("KEEL_DEMO_CUSTOMERS", "300"))
    )
    parser.add_argument("--rate", type=float, default=float(os.environ.get("KEEL_DEMO_RATE", "50")))
    args = parser.parse_args(argv)
    run_dir = args.dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    if args.tokens:
        env_file, hash_file = ensure_tokens(run_dir)
        _say(f"tokens in {env_file} (mode 600), their hashes in {hash_file}")
        return 0
    if args.compose_secrets:
        env_file, _ = ensure_tokens(run_dir)
        made = ensure_compose_secrets(run_dir)
        _say(f"tokens in {env_file}; passwords and certificates in "
             f"{', '.join(p.name for p in made)} (mode 600, not in git)")  # fmt: skip
        return 0
    if args.status:
        return run_status(run_dir)
    if not args.down:
        found = record.running(run_dir)
        # make up again under make up: run_background answers "already up"
        if found is not None and not (args.background and found["started_by"] == "make up"):
            _say(already_running(found))
            return 1
    stack = Stack(run_dir, demo=not (args.down or args.background), tokens=not args.down)
    if args.down:
        return run_down(stack)
    if args.background:
        return run_background(stack)
    return run_foreground(stack, args.customers, args.rate)


if __name__ == "__main__":
    sys.exit(main())
