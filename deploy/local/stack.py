"""Start and stop a real local Kafka broker and Redis, for `make run`, `make up` and the tests.

No Docker here: Kafka is the Apache ``kafka_2.13`` jar run by ``java`` as one KRaft node
(broker and controller in one process), Redis is Debian's ``redis-server``.  Each runs as a
child process in its own process group, logging to a file, and counts as started only once it
answers a real request, so callers never sleep and hope::

    with Kafka(tmp / "kafka", port=free_port()) as kafka, Redis(tmp / "redis") as redis:
        run_worker(kafka.bootstrap, redis.url)

Standard library only: this runs before the project's virtualenv exists.  The CLI lives in
``deploy.local.cli`` and is reached with ``python -m deploy.local up|down|status|fetch``.
"""

from __future__ import annotations

import base64
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from deploy.local.errors import MissingTool, PortInUse, StackError, StartupError
from deploy.local.probes import kafka_broker_ids, redis_ping
from deploy.local.process import Child, is_running, stop_all, stop_pid
from deploy.local.provision import ensure_apt_packages, ensure_kafka_jars, java_binary

__all__ = [
    "Kafka", "KafkaCluster", "MissingTool", "PortInUse", "Redis", "SaslSsl", "StackError",
    "StartupError",
    "brokers_from_env", "local_kafka", "min_insync",
    "ensure_apt_packages", "ensure_kafka_jars", "ensure_port_free", "free_port", "is_running",
    "stop_pid",
]  # fmt: skip

HOST = "127.0.0.1"
LOG4J_CONFIG = Path(__file__).with_name("log4j.properties")
NODE_ID = 1

# JVM flags measured on a 2-core box (start to ready, restart of a formatted node):
#   G1 (Kafka's default)       1.6-2.2 s
#   SerialGC                   1.5-1.6 s
#   SerialGC + C1 only         1.2-1.3 s, and no more broker CPU per message over 1.6M messages
# so both stay.  Flags in $KEEL_KAFKA_JVM_FLAGS come after these and win, e.g.
# KEEL_KAFKA_JVM_FLAGS="-XX:TieredStopAtLevel=4 -Xmx2g" for a long benchmark.
JVM_FLAGS = (
    "-Xmx768m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
TOOL_JVM_FLAGS = ("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")


#: the lowest port :func:`free_port` picks
FREE_PORTS_FROM = 10_000


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now, below the kernel's ephemeral ports.

    The port ``bind(0)`` reports is an ephemeral one, which the kernel may hand to an outgoing
    connection (a Kafka client's, say) before the service binds it: "address already in use"
    (a worker of test_scale_out). Below the ephemeral range that cannot happen, so the port is
    drawn there at random and taken only if it binds; ``bind(0)`` is the fallback.
    """
    low = _ephemeral_ports_from()
    draw = random.SystemRandom()
    for _ in range(200) if low - FREE_PORTS_FROM > 1000 else ():
        port = draw.randrange(FREE_PORTS_FROM, low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _ephemeral_ports_from() -> int:
    """The first port of the kernel's ephemeral range (Linux's default 32768 if unknown)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class _Service:
    """One service process (a :class:`Child`) with a log file, a readiness check and an
    orderly stop."""

    name = "service"
    marker = b""  # appears in /proc/<pid>/cmdline of the real process, see stop_pid()
    stop_signal = signal.SIGTERM  # what asks it to shut down cleanly

    def __init__(self, data_dir: Path, log_file: Path | None) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.log_file = (
            Path(log_file).absolute() if log_file else self.data_dir / f"{self.name}.log"
        )
        self.child = Child(self.name, self.log_file)

    @property
    def pid(self) -> int | None:
        """Process id while the service runs, ``None`` before start and after it exited."""
        return self.child.pid if self.child.running else None

    def start(self, timeout: float = 30) -> None:
        """Launch the process and return once it serves requests; no-op if already running."""
        if self.pid is not None:
            return
        deadline = time.monotonic() + timeout
        self.launch(deadline)
        self.wait_ready(deadline)

    def launch(self, deadline: float) -> None:
        """Start the process without waiting for it (see :meth:`wait_ready`)."""
        for port in self._ports():
            ensure_port_free(port, self.name)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = self._prepare(deadline)
        self.child = Child(self.name, self.log_file)  # the name may have changed since
        self.child.start(command, cwd=self.data_dir, **self._popen_options())

    def wait_ready(self, deadline: float) -> None:
        """Return once the launched process serves requests; kill it if it never does."""
        self.child.wait_ready(self.is_ready, deadline)

    def stop(self, timeout: float = 20) -> None:
        """:attr:`stop_signal` so it shuts down cleanly, SIGKILL after ``timeout``; idempotent."""
        self.child.stop(timeout, self.stop_signal)

    def kill(self) -> None:
        """SIGKILL, no shutdown hooks: what a crash looks like to clients and to the data dir."""
        self.child.kill()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _popen_options(self) -> dict[str, Any]:
        """Extra :class:`subprocess.Popen` arguments (PostgreSQL's ``user=``)."""
        return {}

    @property
    def address(self) -> str:
        """Where clients connect (Kafka's bootstrap, Redis' URL), for messages."""
        raise NotImplementedError

    def is_ready(self) -> bool:
        """Whether the service answers a real request right now."""
        raise NotImplementedError

    def _ports(self) -> tuple[int, ...]:
        raise NotImplementedError

    def _prepare(self, deadline: float) -> list[str]:
        """Write config files and return the command line to launch."""
        raise NotImplementedError


@dataclass(frozen=True)
class SaslSsl:
    """A second listener on a node, ``SASL_SSL`` (TLS, then a SASL login), for clients.

    The node's own traffic (the controller quorum, the readiness probe, replication between
    nodes) stays on its loopback PLAINTEXT listener; clients given :attr:`Kafka.sasl_bootstrap`
    are told of this listener only. ``users`` (name -> password) are created as SCRAM-SHA-512
    and SCRAM-SHA-256 credentials when the storage is formatted (``kafka-storage format
    --add-scram``, Kafka's own tool) and as PLAIN users of the listener.
    """

    port: int
    keystore: Path  #: PKCS12 holding the node's key and certificate (deploy/local/tls.py)
    keystore_password: str
    users: Mapping[str, str] = field(default_factory=dict)

    def properties(self) -> dict[str, object]:
        prefix = "listener.name.sasl_ssl."
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        plain_users = " ".join(f'user_{name}="{pw}"' for name, pw in self.users.items())
        plain = f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"
        return {
            f"{prefix}sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN",
            f"{prefix}scram-sha-512.sasl.jaas.config": scram,
            f"{prefix}scram-sha-256.sasl.jaas.config": scram,
            f"{prefix}plain.sasl.jaas.config": plain,
            f"{prefix}ssl.keystore.type": "PKCS12",
            f"{prefix}ssl.keystore.location": self.keystore,
            f"{prefix}ssl.keystore.password": self.keystore_password,
            f"{prefix}ssl.key.password": self.keystore_password,
        }

    def format_arguments(self) -> list[str]:
        return [
            argument
            for name, password in self.users.items()
            for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256")
            for argument in ("--add-scram", f"{mechanism}=[name={name},password={password}]")
        ]


class Kafka(_Service):
    """A single-node KRaft Kafka broker; data in ``data_dir/logs`` survives stop/start.

    ``Kafka(tmp, port=free_port()).start()`` formats the storage on first use and reuses it
    afterwards, so restarting on the same ``data_dir`` keeps every topic and committed offset.
    """

    name = "kafka"
    marker = b"kafka.Kafka"

    def __init__(
        self,
        data_dir: Path,
        port: int = 9092,
        controller_port: int | None = None,
        log_file: Path | None = None,
        *,
        node_id: int = NODE_ID,
        voters: str | None = None,
        cluster_id: str | None = None,
        replication: int = 1,
        sasl_ssl: SaslSsl | None = None,
    ) -> None:
        super().__init__(data_dir, log_file)
        #: an extra SASL_SSL listener for clients (see SaslSsl), or None
        self.sasl_ssl = sasl_ssl
        self.port = port
        # Chosen once per object so a restart of the same object keeps its quorum address.
        self.controller_port = free_port() if controller_port is None else controller_port
        self.node_id = node_id
        #: ``controller.quorum.voters``: this node alone, or every node of a KafkaCluster
        self.voters = voters or f"{node_id}@{HOST}:{self.controller_port}"
        self.cluster_id = cluster_id
        #: replication of the broker's own topics (offsets, transactions) and the default
        self.replication = replication

    @property
    def bootstrap(self) -> str:
        """``bootstrap.servers`` for clients, e.g. ``"127.0.0.1:9092"``."""
        return f"{HOST}:{self.port}"

    @property
    def sasl_bootstrap(self) -> str:
        """``bootstrap.servers`` of the SASL_SSL listener (``sasl_ssl`` must be set)."""
        if self.sasl_ssl is None:
            raise StackError("this Kafka has no SASL_SSL listener")
        return f"{HOST}:{self.sasl_ssl.port}"

    @property
    def address(self) -> str:
        return self.bootstrap

    def start(self, timeout: float = 90) -> None:
        """Start the broker; ready once a Metadata request lists this node as a live broker.

        ``timeout`` covers starting, not the one-off download of the jars before it.
        """
        ensure_kafka_jars()
        super().start(timeout)

    def is_ready(self) -> bool:
        try:
            return self.node_id in kafka_broker_ids(HOST, self.port)
        except (OSError, struct.error):
            return False

    def _ports(self) -> tuple[int, ...]:
        extra = (self.sasl_ssl.port,) if self.sasl_ssl else ()
        return (self.port, self.controller_port, *extra)

    def _prepare(self, deadline: float) -> list[str]:
        java, lib = java_binary(), ensure_kafka_jars()
        classpath = f"{lib}/*"
        log4j = f"-Dlog4j.configuration=file:{LOG4J_CONFIG}"
        properties = self.data_dir / "server.properties"
        properties.write_text(self._server_properties())
        properties.chmod(0o600)  # it may hold the keystore's password and PLAIN users
        if not (self.data_dir / "logs" / "meta.properties").exists():
            format_command = [
                java, *TOOL_JVM_FLAGS, log4j, "-cp", classpath, "kafka.tools.StorageTool",
                "format", "--ignore-formatted", "-t", self.cluster_id or _new_cluster_id(),
                "-c", str(properties),
                *(self.sasl_ssl.format_arguments() if self.sasl_ssl else ()),
            ]  # fmt: skip
            try:
                result = subprocess.run(
                    format_command,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=max(1.0, deadline - time.monotonic()),
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise StartupError(
                    f"formatting Kafka storage in {self.data_dir} timed out"
                ) from exc
            if result.returncode != 0:
                output = (result.stdout + result.stderr).decode(errors="replace").strip()
                raise StartupError(f"formatting Kafka storage failed:\n{output}")
        extra = os.environ.get("KEEL_KAFKA_JVM_FLAGS", "").split()
        return [java, *JVM_FLAGS, *extra, log4j, "-cp", classpath, "kafka.Kafka", str(properties)]

    def _server_properties(self) -> str:
        listeners = f"PLAINTEXT://{HOST}:{self.port}"
        protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        if self.sasl_ssl is not None:
            listeners += f",SASL_SSL://{HOST}:{self.sasl_ssl.port}"
            protocols += ",SASL_SSL:SASL_SSL"
        settings: dict[str, object] = {
            "process.roles": "broker,controller",
            "node.id": self.node_id,
            "controller.quorum.voters": self.voters,
            "listeners": f"{listeners},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": listeners,
            "listener.security.protocol.map": protocols,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": self.data_dir / "logs",
            "num.partitions": 4,
            "auto.create.topics.enable": "true",
            "offsets.topic.num.partitions": 1,
            "offsets.topic.replication.factor": self.replication,
            "transaction.state.log.replication.factor": self.replication,
            "transaction.state.log.min.isr": min_insync(self.replication),
            "default.replication.factor": self.replication,
            "min.insync.replicas": min_insync(self.replication),
            "transaction.state.log.num.partitions": 1,
            "group.initial.rebalance.delay.ms": 0,
            # keel's workers ask for a 3 s session (KEEL_SESSION_TIMEOUT_MS); Kafka's least
            # is 6 s by default
            "group.min.session.timeout.ms": 1000,
            "log.cleaner.dedupe.buffer.size": 16 * 1024 * 1024,
            # After a kill the restarted node is refused (DUPLICATE_BROKER_REGISTRATION) until
            # its previous incarnation's session expires: 9 s by default, 3 s here.
            "broker.heartbeat.interval.ms": 500,
            "broker.session.timeout.ms": 3000,
        }
        if self.sasl_ssl is not None:
            settings.update(self.sasl_ssl.properties())
        body = "".join(f"{key}={value}\n" for key, value in settings.items())
        return "# written by deploy/local/stack.py on every start; edits are lost\n" + body


def local_kafka(
    run_dir: Path, port: int, controller_port: int | None = None
) -> Kafka | KafkaCluster:
    """The Kafka of ``make run``/``make up``: one node, or ``KEEL_KAFKA_BROKERS`` of them
    with node i on ``port + 2i`` and its controller on the port after (9092/9093, 9094/9095,
    9096/9097), so every command finds the same cluster."""
    brokers = brokers_from_env()
    if brokers == 1:
        return Kafka(
            run_dir / "kafka", port, controller_port or port + 1, log_file=run_dir / "kafka.log"
        )
    return KafkaCluster(
        run_dir / "kafka",
        brokers,
        ports=[port + 2 * i for i in range(brokers)],
        controller_ports=[port + 2 * i + 1 for i in range(brokers)],
        log_dir=run_dir,
    )


def brokers_from_env() -> int:
    """``KEEL_KAFKA_BROKERS``: how many local Kafka nodes to run (1, or 3 for a replicated
    cluster; any count from 1 to 9 works)."""
    raw = os.environ.get("KEEL_KAFKA_BROKERS") or "1"
    if not raw.isdigit() or not 1 <= int(raw) <= 9:
        raise StackError(f"KEEL_KAFKA_BROKERS={raw!r}: give a number of brokers from 1 to 9")
    return int(raw)


def min_insync(replication: int) -> int:
    """``min.insync.replicas`` for a replication factor: 2 of 3 (one broker may be down
    without refusing writes, and an acknowledged write is on two), else 1."""
    return 2 if replication >= 3 else 1


class KafkaCluster:
    """``brokers`` KRaft nodes (each broker and controller) forming one cluster on loopback.

    ``KafkaCluster(tmp, brokers=3).start()`` starts all nodes at once (a controller quorum
    needs a majority to elect a leader, so none is ready alone) and returns once each is a
    live broker. :meth:`kill` and :meth:`start_node` take one node down and back, as a
    crashed and restarted broker. Each node keeps its data in ``data_dir/node-<id>``.
    """

    def __init__(
        self, data_dir: Path, brokers: int = 3, ports: list[int] | None = None,
        controller_ports: list[int] | None = None, log_dir: Path | None = None,
    ) -> None:  # fmt: skip
        if brokers < 1:
            raise StackError(f"a cluster needs at least one broker, not {brokers}")
        self.data_dir = Path(data_dir).absolute()
        ports = ports or [free_port() for _ in range(brokers)]
        controllers = controller_ports or [free_port() for _ in range(brokers)]
        if len(ports) != brokers or len(controllers) != brokers:
            raise StackError(f"{brokers} brokers need {brokers} ports each, got {ports}")
        voters = ",".join(f"{i + 1}@{HOST}:{port}" for i, port in enumerate(controllers))
        self.replication = min(3, brokers)
        logs = Path(log_dir).absolute() if log_dir else self.data_dir
        self.nodes = [
            Kafka(
                self.data_dir / f"node-{i + 1}", port=ports[i], controller_port=controllers[i],
                log_file=logs / f"kafka-{i + 1}.log", node_id=i + 1, voters=voters,
                cluster_id=self._cluster_id(), replication=self.replication,
            )
            for i in range(brokers)
        ]  # fmt: skip
        for node in self.nodes:
            node.name = f"kafka-{node.node_id}"  # its pid file in `make up`, its messages

    def _cluster_id(self) -> str:
        """One id for every node, kept beside their data so a restart formats nothing anew."""
        path = self.data_dir / "cluster-id"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(_new_cluster_id())
        return path.read_text().strip()

    @property
    def bootstrap(self) -> str:
        """``bootstrap.servers`` naming every node, e.g. ``"127.0.0.1:9092,127.0.0.1:9093"``."""
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def address(self) -> str:
        return self.bootstrap

    @property
    def pid(self) -> int | None:
        """The first live node's pid (None when every node is down)."""
        return next((node.pid for node in self.nodes if node.pid is not None), None)

    def start(self, timeout: float = 120) -> None:
        ensure_kafka_jars()
        deadline = time.monotonic() + timeout
        down = [node for node in self.nodes if node.pid is None]
        try:
            for node in down:
                node.launch(deadline)
            for node in down:
                node.wait_ready(deadline)
        except BaseException:
            self.kill_all()
            raise

    def start_node(self, index: int, timeout: float = 90) -> None:
        """Start node ``index`` (0-based) again; ready once the cluster lists it live."""
        self.nodes[index].start(timeout)

    def kill(self, index: int) -> None:
        """SIGKILL node ``index``: a broker crash, its partitions' leadership moves."""
        self.nodes[index].kill()

    def kill_all(self) -> None:
        for node in self.nodes:
            node.kill()

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM every node at once (a controlled shutdown each), then wait for them."""
        stop_all([node.child for node in self.nodes], timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Redis(_Service):
    """A Redis server with append-only persistence in ``data_dir``, bound to 127.0.0.1."""

    name = "redis"
    marker = b"redis-server"

    def __init__(
        self,
        data_dir: Path,
        port: int = 6379,
        log_file: Path | None = None,
        *,
        users: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(data_dir, log_file)
        self.port = port
        #: ACL users (name -> password) with every command on keel's keys (``keel:*``); when
        #: given, the password-less ``default`` user is switched off, so only they get in
        self.users = dict(users or {})

    @property
    def url(self) -> str:
        """Client URL for database 0, e.g. ``"redis://127.0.0.1:6379/0"``; with ``users``,
        the first one's name and password are in it (``redis://name:pw@127.0.0.1:6379/0``)."""
        if self.users:
            name, password = next(iter(self.users.items()))
            return f"redis://{name}:{password}@{HOST}:{self.port}/0"
        return f"redis://{HOST}:{self.port}/0"

    @property
    def address(self) -> str:
        return self.url

    def start(self, timeout: float = 20) -> None:
        """Start Redis; ready once PING answers +PONG (not -LOADING while it replays the AOF)."""
        super().start(timeout)

    def is_ready(self) -> bool:
        login = next(iter(self.users.items()), None)
        try:
            return redis_ping(HOST, self.port, login=login)
        except OSError:
            return False

    def _ports(self) -> tuple[int, ...]:
        return (self.port,)

    def _prepare(self, deadline: float) -> list[str]:
        binary = _which_or_hint("redis-server")
        return [
            binary,
            "--bind", HOST,
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--daemonize", "no",
            "--protected-mode", "yes",
            *self._acl(),
        ]  # fmt: skip

    def _acl(self) -> list[str]:
        if not self.users:
            return []
        rules = ["--user", "default", "off"]  # ACL directives, as in redis.conf's `user` lines
        for name, password in self.users.items():
            rules += ["--user", name, "on", f">{password}", "~keel:*", "+@all"]
        return rules


def ensure_port_free(port: int, service: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise PortInUse(service, HOST, port) from exc


def _new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 (never leading '-', like Kafka's)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _which_or_hint(binary: str) -> str:
    found = shutil.which(binary)
    if found is None:
        raise MissingTool(
            f"{binary} not found; run `python -m deploy.local fetch` as root "
            f"or apt-get install {binary}"
        )
    return found
