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

from deploy.local.compose_secrets import ensure_compose_secrets
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
        self.redis = Redis(run_dir / "redis", port=self.redis_port, log_file=run_dir / "redis.log")
        self.postgres = Postgres(
            run_dir / "postgres", port=self.postgres_port, log_file=run_dir / "postgres.log"
        )
        self.connectors = [
            Connector(
                "http-ingest", "connectors.sources.http_ingest", _port("KEEL_INGEST_PORT", 8088)
            ),
            Connector(
                "postgres-outbox",
                "connectors.sources.postgres_outbox",
                _port("KEEL_OUTBOX_PORT", 8089),
            ),
            Connector("redis-sink", "connectors.sinks.redis", _port("KEEL_REDIS_SINK_PORT", 8090)),
            Connector(
                "postgres-inbox", "connectors.sinks.postgres_inbox", _port("KEEL_INBOX_PORT", 8091)
            ),
        ]
        webhook_env: dict[str, str] = {}
        if demo:
            shop_port = _port("KEEL_SHOP_PORT", 8093)
            self.connectors.append(
                Connector("demo-shop", "connectors.sources.demo_shop", shop_port)
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

    def hints(self) -> list[str]:
        url = {c.name: c.url for c in self.connectors}
        ingest, outbox, sink = url["http-ingest"], url["postgres-outbox"], url["redis-sink"]
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
            f"desk console   {self.api}/desk/",
            f"voice board    {self.api}/desk/voice  (GET {self.api}/voice?window=7d)",
            f"HTTP ingest    POST {ingest}/events/orders|shipments|contacts"
            f"  ({ingest}/openapi.json)",
            f"outbox         INSERT INTO keel_outbox(topic, key, payload)"
            f" at {self.env['POSTGRES_URL']}  (metrics {outbox}/metrics)",
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
        for line in stack.hints():
            _say(line)
        _say(f"ready: {stack.api}/readyz; Ctrl-C stops everything")
        services = list(children)  # the worker and the connectors; the feed may finish
        feed = Child("demo feed")  # its output goes to the terminal
        feed_args = ["--customers", str(customers), "--rate", str(rate), "--api", stack.api]
        children.append(
            feed.start(
                [sys.executable, "-m", "connectors.sources.demo_feed", *feed_args],
                cwd=ROOT,
                env=stack.env,
            )
        )
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
        stack.postgres.stop()
        stack.redis.stop()
        stack.kafka.stop()
        _say("stopped")


def _pid_file(stack: Stack, name: str) -> Path:
    return stack.run_dir / f"{name}.pid"


def run_background(stack: Stack) -> int:
    pid_file = _pid_file(stack, "worker")
    if pid_file.exists() and _ready(stack.api):
        _say(f"already up: {stack.api}")
        return 0
    try:
        subprocess.run(
            [sys.executable, "-m", "deploy.local.stack", "up", "--dir", str(stack.run_dir)],
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
        for child in stack.start_connectors():
            _pid_file(stack, child.name).write_text(str(child.pid))
    except (StackError, subprocess.CalledProcessError) as exc:
        _say(f"could not start the stack: {exc}")
        return 1
    for line in stack.hints():
        _say(line)
    _say("up; `make down` stops it")
    return 0


def run_down(stack: Stack) -> int:
    if not any(c.name == "webhook" for c in stack.connectors):  # started if its URL was set
        _stop_from_pid_file(stack, "webhook", b"connectors.sinks.webhook")
    for connector in reversed(stack.connectors):
        _stop_from_pid_file(stack, connector.name, connector.marker)
    _stop_from_pid_file(stack, "worker", WORKER_MARKER, "the stream worker")
    _stop_from_pid_file(stack, "postgres", Postgres.marker, "PostgreSQL")
    subprocess.run(
        [sys.executable, "-m", "deploy.local.stack", "down", "--dir", str(stack.run_dir)],
        cwd=ROOT,
        check=False,
    )
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
    mode.add_argument("--down", action="store_true", help="stop the detached stack (make down)")
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
    stack = Stack(run_dir, demo=not (args.down or args.background), tokens=not args.down)
    if args.down:
        return run_down(stack)
    if args.background:
        return run_background(stack)
    return run_foreground(stack, args.customers, args.rate)


if __name__ == "__main__":
    sys.exit(main())
