"""The small contract every connector follows, and the loops that enforce it.

A **source** hands out batches of records for Kafka and is told when Kafka acknowledged them;
only then may it forget them (delete the outbox rows, answer 202)::

    class Source:
        def fetch(self, limit) -> Batch      # records to publish + what to acknowledge
        def ack(self, batch) -> None         # called only after Kafka acknowledged every record
        def check(self) -> None              # still able to ack? (raise Unavailable if not)

A **sink** writes one batch, all or nothing; Kafka offsets are committed only after ``write``
returned, so a crash replays the batch instead of losing it::

    class Sink:
        def write(self, batch: Sequence[SinkRecord]) -> None

:func:`pump` and :func:`drain` are the loops around them: a dependency that is down
(:class:`Unavailable`) means *wait and retry the same batch* — never skip it, never reorder.
The same shape as Quix Streams' ``BatchingSink`` (``add``/``flush``, commit after flush).

Errors, rooted at :class:`ConnectorError`::

    ConnectorError
    └── Unavailable      Kafka, PostgreSQL or Redis did not answer; retry after a backoff
"""

from __future__ import annotations

import json
import logging
import random
import re
import signal
import ssl
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connectors import metrics
from connectors.errors import ConnectorError
from connectors.settings import ConfigError, ConnectorSettings
from streams.auth import AuthConfig, status_role
from streams.kafka.config import KafkaAuthError, reach
from streams.ops import logs

if TYPE_CHECKING:
    from connectors.publisher import Publisher

log = logging.getLogger(__name__)

__all__ = [
    "Backoff",
    "Batch",
    "ConnectorError",
    "OutRecord",
    "Sink",
    "SinkRecord",
    "Source",
    "StatusServer",
    "Stopper",
    "Unavailable",
    "drain",
    "load_settings",
    "pump",
    "redact",
]

#: how long a connector with Kafka credentials waits at start to learn they are accepted
CREDENTIALS_CHECK_S = 30.0


class Unavailable(ConnectorError):
    """A dependency (Kafka, PostgreSQL, Redis) is unreachable: retry the same batch later."""


@dataclass(frozen=True, slots=True)
class OutRecord:
    """One record for Kafka: topic, key and the Avro single-object encoded value."""

    topic: str
    key: bytes | None
    value: bytes | None


@dataclass(slots=True)
class Batch:
    """What a source fetched: ``records`` to publish, ``token`` for the source's ``ack``."""

    records: list[OutRecord] = field(default_factory=list)
    token: Any = None

    def __bool__(self) -> bool:
        return bool(self.records) or self.token is not None


@dataclass(frozen=True, slots=True)
class SinkRecord:
    """One consumed record handed to a sink (``value`` None is a tombstone)."""

    key: bytes | None
    value: bytes | None
    partition: int
    offset: int
    topic: str = ""  # the topic it was read from (a sink may read several)


class Source(ABC):
    """Pull side of a source connector (see the module docstring)."""

    @abstractmethod
    def fetch(self, limit: int) -> Batch:
        """Up to ``limit`` records in publish order; an empty Batch when there is nothing."""

    @abstractmethod
    def ack(self, batch: Batch) -> None:
        """Kafka acknowledged every record of ``batch``: forget them."""

    def check(self) -> None:
        """Raise :class:`Unavailable` if a fetched batch can no longer be acknowledged."""
        return None


class Sink(ABC):
    """Write side of a sink connector (see the module docstring)."""

    @abstractmethod
    def write(self, batch: Sequence[SinkRecord]) -> None:
        """Apply ``batch`` all or nothing; raise :class:`Unavailable` to have it retried."""


class Backoff:
    """Exponential backoff with jitter: 0.1 s, 0.2 s, ... capped at ``maximum``.

    Jitter keeps several connector instances from hammering a restarted database in step.
    """

    def __init__(self, initial: float = 0.1, maximum: float = 5.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self._next = initial

    def delay(self) -> float:
        """The next wait; each call doubles the following one up to the cap."""
        current = self._next
        self._next = min(self.maximum, self._next * 2)
        return current * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self._next = self.initial


class Stopper:
    """Set by SIGTERM/SIGINT; ``wait`` sleeps but wakes at once when a stop is requested."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def install(self) -> Stopper:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: self.stop())
        return self

    def stop(self) -> None:
        self._event.set()

    @property
    def stopping(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if a stop was requested."""
        return self._event.wait(seconds)


def pump(
    source: Source,
    publisher: Publisher,
    stopper: Stopper,
    *,
    connector: str,
    limit: int,
    idle: float,
) -> None:
    """Publish what ``source`` fetches, acknowledging each batch only after Kafka did.

    Kafka down: the same batch is published again after a backoff (the source is asked
    whether it can still acknowledge it; if not, the batch is dropped and fetched anew, since
    nothing was acknowledged). Duplicates are possible, loss and reordering are not.
    """
    backoff = Backoff()
    while not stopper.stopping:
        try:
            batch = source.fetch(limit)
        except Unavailable as exc:
            metrics.RETRIES.labels(connector, "source").inc()
            log.warning("source unavailable, retrying: %s", exc)
            stopper.wait(backoff.delay())
            continue
        if not batch:
            backoff.reset()
            stopper.wait(idle)
            continue
        if _publish_until_acked(source, publisher, stopper, batch, connector, backoff):
            try:
                source.ack(batch)
                backoff.reset()
            except Unavailable as exc:  # published but not forgotten: it will be re-sent
                metrics.RETRIES.labels(connector, "source").inc()
                log.warning("could not acknowledge a published batch (it will be re-sent): %s", exc)
                stopper.wait(backoff.delay())


def _publish_until_acked(
    source: Source,
    publisher: Publisher,
    stopper: Stopper,
    batch: Batch,
    connector: str,
    backoff: Backoff,
) -> bool:
    while not stopper.stopping:
        if not batch.records:
            return True
        began = time.perf_counter()
        try:
            publisher.publish(batch.records)
        except Unavailable as exc:
            metrics.RETRIES.labels(connector, "kafka").inc()
            log.warning("Kafka did not acknowledge a batch, retrying: %s", exc)
            if stopper.wait(backoff.delay()):
                return False
            try:
                source.check()
            except Unavailable as lost:
                log.warning("dropping the unacknowledged batch, fetching again: %s", lost)
                return False
            continue
        metrics.PUBLISH_SECONDS.labels(connector).observe(time.perf_counter() - began)
        for record in batch.records:
            metrics.PUBLISHED.labels(connector, record.topic).inc()
        return True
    return False


def drain(
    consumer: Consumer,
    topic: str | Sequence[str],
    sink: Sink,
    stopper: Stopper,
    *,
    connector: str,
    limit: int,
) -> None:
    """Consume ``topic`` (or several) into ``sink``; commit offsets only after the sink
    accepted a batch.

    The sink down: the consumer is paused (so it stays in its group without fetching more)
    and the *same* batch is written again after a backoff until it is accepted. A rebalance
    meanwhile drops the batch: with the eager assignors every partition is revoked and its
    next owner (maybe this process again) starts from the last committed offset.
    """
    rebalances = 0

    def on_revoke(consumer: Any, partitions: list[TopicPartition]) -> None:
        nonlocal rebalances
        rebalances += 1

    consumer.subscribe([topic] if isinstance(topic, str) else list(topic), on_revoke=on_revoke)
    backoff = Backoff()
    while not stopper.stopping:
        messages = [m for m in consumer.consume(num_messages=limit, timeout=0.5) if _ok(m)]
        if not messages:
            continue
        batch = [_record(m) for m in messages]

        def still_owned(generation: int = rebalances) -> bool:
            return rebalances == generation

        if not _write_until_accepted(consumer, sink, stopper, batch, connector, still_owned):
            continue  # stopping, or revoked: the next owner replays from the last commit
        if still_owned():
            _commit(consumer, messages, stopper, connector, backoff)


def _record(message: Message) -> SinkRecord:
    topic, partition, offset = _position(message)
    return SinkRecord(_key(message), message.value(), partition, offset, topic)


def _position(message: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed record (never None for a record without error)."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


def _key(message: Message) -> bytes | None:
    key = message.key()
    return key.encode() if isinstance(key, str) else key


def _ok(message: Message) -> bool:
    error = message.error()
    if error is None:
        return True
    if error.code() != KafkaError._PARTITION_EOF:
        log.warning("consumer error: %s", error.str())
    return False


def _write_until_accepted(
    consumer: Consumer,
    sink: Sink,
    stopper: Stopper,
    batch: list[SinkRecord],
    connector: str,
    still_owned: Callable[[], bool],
) -> bool:
    """Write ``batch`` until the sink accepts it; False if stopping or the partitions moved.

    A batch whose partitions were revoked while the sink was down is not written late: the
    next owner may already have written newer states that it would overwrite.
    """
    backoff = Backoff()
    paused: list[TopicPartition] = []
    try:
        while not stopper.stopping and still_owned():
            try:
                sink.write(batch)
                backoff.reset()
                return True
            except Unavailable as exc:
                metrics.RETRIES.labels(connector, "sink").inc()
                log.warning("sink did not accept %d record(s), retrying: %s", len(batch), exc)
            if not paused:
                paused = list(consumer.assignment())
                consumer.pause(paused)
            deadline = time.monotonic() + backoff.delay()
            while not stopper.stopping and time.monotonic() < deadline:
                # Polling keeps the group membership alive; paused partitions return nothing.
                message = consumer.poll(min(0.5, max(0.0, deadline - time.monotonic())))
                if message is not None and message.error() is None:
                    # Not expected while paused; rewind so the record is not lost.
                    consumer.seek(TopicPartition(*_position(message)))
        return False
    finally:
        if paused:
            try:
                consumer.resume(paused)
            except KafkaException as exc:  # revoked meanwhile; a new assignment is unpaused
                log.info("not resuming revoked partitions: %s", exc)


def _commit(
    consumer: Consumer, messages: list[Message], stopper: Stopper, connector: str, backoff: Backoff
) -> None:
    last: dict[tuple[str, int], int] = {}
    for message in messages:
        if message.error() is None:
            topic, partition, offset = _position(message)
            last[(topic, partition)] = offset
    offsets = [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
    while not stopper.stopping:
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
            return
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() in _GIVE_UP_COMMIT:
                log.info("offsets not committed (%s); the batch will be replayed", error.str())
                return
            metrics.RETRIES.labels(connector, "kafka").inc()
            log.warning("commit failed, retrying: %s", error.str())
            stopper.wait(backoff.delay())


# Commit errors after which retrying is pointless: the group moved on, the batch is replayed.
_GIVE_UP_COMMIT = frozenset(
    {
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError._NO_OFFSET,
        KafkaError._STATE,
    }
)


class StatusServer:
    """``/healthz`` and ``/metrics`` on a port of their own, for connectors without a web app.

    A thread of the connector process; ``/healthz`` is 200 while the process lives and says
    what ``status()`` reports (e.g. whether this outbox instance is the leader), to anyone;
    ``/metrics`` needs a token with the metrics role unless ``auth`` says it is public.
    """

    def __init__(
        self,
        bind: str,
        port: int,
        status: Callable[[], dict[str, Any]],
        auth: AuthConfig,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        handler = _status_handler(status, auth)
        try:
            if tls is None:
                self._server = ThreadingHTTPServer((bind, port), handler)
            else:
                self._server = _HTTPSServer((bind, port), handler, tls)
        except OSError as exc:
            raise ConnectorError(f"cannot listen on {bind}:{port}: {exc.strerror}") from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="status-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> StatusServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _HTTPSServer(ThreadingHTTPServer):
    """HTTPS: the handshake happens in the request's thread, so a slow client blocks no one."""

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext
    ) -> None:
        super().__init__(address, handler)
        self.tls = tls

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that fails the handshake (plain HTTP, an unknown CA) is its problem, not ours
        log.debug("status https: request from %s failed", client_address, exc_info=True)


def _status_handler(
    status: Callable[[], dict[str, Any]], auth: AuthConfig
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            refusal = auth.authorize(self.headers.get("Authorization"), status_role(path))
            if refusal is not None:
                answer = json.dumps(refusal.body()).encode()
                self._send(refusal.status, answer, "application/json", refusal.headers())
            elif path == "/metrics":
                self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                body = {"status": "ok", **status()}
                self._send(200, json.dumps(body).encode(), "application/json")
            else:
                body = {"error": f"no such resource {path}; try /healthz or /metrics"}
                self._send(404, json.dumps(body).encode(), "application/json")

        def _send(
            self, code: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(code)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("status http: " + format, *args)

    return Handler


def redact(url: str) -> str:
    """``url`` with any password masked, for logs.

    >>> redact("postgresql://keel:s3cret@db:5432/keel")
    'postgresql://keel:***@db:5432/keel'
    """
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def load_settings(name: str) -> ConnectorSettings:
    """Settings from the environment, logging configured; exit 2 on a bad variable.

    Like ``keel worker``: a configuration error is one line naming the variable, not a
    traceback, because logging cannot be set up before the settings are known. Logs go to
    stderr as text or JSON lines (``KEEL_LOG_FORMAT``), the same as the worker's.
    """
    try:
        settings = ConnectorSettings.from_env()
    except ConfigError as exc:
        print(f"keel {name}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logs.configure(settings.keel.log_level, settings.keel.log_format)
    log.info("keel %s: %s", name, settings.auth.describe())
    security = settings.keel.kafka_security
    log.info("keel %s: %s", name, security.describe())
    if security.protocol != "PLAINTEXT":
        # librdkafka retries refused credentials for ever: find out now, and stop
        try:
            if reach(settings.keel.kafka_bootstrap, CREDENTIALS_CHECK_S, security) is None:
                log.warning(
                    "keel %s: Kafka at %s not reachable yet; carrying on",
                    name, settings.keel.kafka_bootstrap,
                )  # fmt: skip
        except KafkaAuthError as exc:
            print(f"keel {name}: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    for warning in settings.auth.warnings(settings.bind):
        log.warning("keel %s: %s", name, warning)
    return settings
