"""Starting a connector process, written once: every connector's ``main`` is one call here.

The runner reads the settings (a bad variable: one line and exit 2), installs the SIGTERM/SIGINT
:class:`~connectors.loops.Stopper`, builds the connector, serves its ``/healthz`` and
``/metrics`` (:class:`~connectors.status.StatusServer`), runs its loop until a stop is
requested, and closes everything afterwards, in reverse order: the Kafka client first, then
what the connector built (the last built closed first), the status server last::

    def main(argv: list[str] | None = None) -> int:
        return run_sink("redis-sink", log, plan)    # plan(settings, closing) -> SinkPlan

- :func:`run_source`: a :class:`~connectors.contract.Source` pumped into Kafka,
- :func:`run_sink`: a topic drained into a :class:`~connectors.contract.Sink`,
- :func:`run_web`: an aiohttp application publishing to Kafka (it serves its own
  ``/metrics``; aiohttp handles the signals),
- :func:`run`: anything else with a loop of its own (the demo shop).

A ``plan`` (or ``build``) registers what it opens on ``closing`` (a
:class:`contextlib.ExitStack`, e.g. ``closing.callback(dead_letters.close)``) and may raise
:class:`~connectors.settings.ConfigError` for a setting the connector cannot do without.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from confluent_kafka import Consumer

from connectors.contract import ConnectorError, Sink, Source
from connectors.loops import Stopper, drain, pump
from connectors.publisher import Publisher
from connectors.settings import ConfigError, ConnectorSettings
from connectors.status import StatusServer
from streams.kafka.config import KafkaAuthError, reach
from streams.ops import logs

log = logging.getLogger(__name__)

__all__ = [
    "Job",
    "Served",
    "SinkPlan",
    "SourcePlan",
    "load_settings",
    "redact",
    "run",
    "run_sink",
    "run_source",
    "run_web",
]

#: how long a connector with Kafka credentials waits at start to learn they are accepted
CREDENTIALS_CHECK_S = 30.0

Status = Callable[[], dict[str, Any]]


@dataclass
class Job:
    """What a connector's ``build`` hands :func:`run`."""

    loop: Callable[[], None]  # runs until the stopper is set
    describe: str  # the start-up line, e.g. "Redis sink: state -> redis://… (group g)"
    port: int | None = None  # the status server's; None: the connector serves its own HTTP
    status: Status | None = None  # what /healthz adds to {"status": "ok"}
    prepare: Callable[[], None] | None = None  # once the status server is up, before the loop


@dataclass
class SourcePlan:
    """A source connector: what :func:`run_source` pumps into Kafka, and how."""

    connector: str  # its metrics label
    source: Source
    status: Status
    port: int
    limit: int  # records a batch
    idle: float  # seconds to wait when there is nothing to publish
    describe: str


@dataclass
class SinkPlan:
    """A sink connector: what :func:`run_sink` consumes into which sink, and how."""

    connector: str  # its metrics label
    sink: Sink
    status: Status
    port: int
    consumer: dict[str, Any]  # the consumer's configuration
    topics: str | Sequence[str]
    limit: int  # records a batch
    describe: str
    prepare: Callable[[], None] | None = None  # once the status server is up


@dataclass
class Served:
    """A connector that is an aiohttp application (see :func:`run_web`)."""

    app: web.Application
    port: int
    describe: str


def run(
    name: str,
    log: logging.Logger,
    build: Callable[[ConnectorSettings, Stopper, ExitStack], Job],
) -> int:
    """Run the connector ``build`` makes; 0 after a requested stop, 1 if its status port is
    taken, 2 on a configuration error. ``log`` is the connector's own logger."""
    settings = load_settings(name)
    stopper = Stopper().install()
    with ExitStack() as closing:
        try:
            job = build(settings, stopper, closing)
        except ConfigError as exc:
            print(f"keel {name}: configuration error: {exc}", file=sys.stderr)
            return 2
        status = None
        if job.port is not None:
            try:
                status = StatusServer(
                    settings.bind, job.port, job.status or dict, settings.auth,
                    tls=settings.keel.server_ssl_context(), name=name,
                ).start()  # fmt: skip
            except ConnectorError as exc:
                log.error("%s", exc)
                return 1
        try:
            if job.prepare is not None:
                job.prepare()
            if status is None:
                log.info("%s", job.describe)
            else:
                log.info("%s; /metrics on %s:%d", job.describe, settings.bind, status.port)
            job.loop()
        finally:
            closing.close()  # what build opened, the last first
            if status is not None:
                status.stop()
    return 0


def run_source(
    name: str, log: logging.Logger, plan: Callable[[ConnectorSettings, ExitStack], SourcePlan]
) -> int:
    """Publish what the planned source fetches, acknowledging only what Kafka acknowledged."""

    def build(settings: ConnectorSettings, stopper: Stopper, closing: ExitStack) -> Job:
        planned = plan(settings, closing)

        def loop() -> None:
            publisher = Publisher(settings.keel.kafka_bootstrap)
            try:
                pump(planned.source, publisher, stopper, connector=planned.connector,
                     limit=planned.limit, idle=planned.idle)  # fmt: skip
            finally:
                publisher.close()

        return Job(loop, planned.describe, planned.port, planned.status)

    return run(name, log, build)


def run_sink(
    name: str, log: logging.Logger, plan: Callable[[ConnectorSettings, ExitStack], SinkPlan]
) -> int:
    """Consume the planned topics into the planned sink, committing only what it accepted."""

    def build(settings: ConnectorSettings, stopper: Stopper, closing: ExitStack) -> Job:
        planned = plan(settings, closing)

        def loop() -> None:
            consumer = Consumer(planned.consumer)
            try:
                drain(consumer, planned.topics, planned.sink, stopper,
                      connector=planned.connector, limit=planned.limit)  # fmt: skip
            finally:
                consumer.close()

        return Job(loop, planned.describe, planned.port, planned.status, planned.prepare)

    return run(name, log, build)


def run_web(
    name: str, log: logging.Logger, build: Callable[[ConnectorSettings, Publisher], Served]
) -> int:
    """Serve the aiohttp application ``build`` makes around a :class:`Publisher` (closed when
    the application stops); 1 if its port is taken."""
    settings = load_settings(name)
    publisher = Publisher(settings.keel.kafka_bootstrap)
    served = build(settings, publisher)

    async def close_publisher(app: web.Application) -> None:
        await asyncio.to_thread(publisher.close)

    served.app.on_cleanup.append(close_publisher)
    log.info("%s", served.describe)
    try:
        web.run_app(
            served.app, host=settings.bind, port=served.port, print=None, access_log=None,
            ssl_context=settings.keel.server_ssl_context(),
        )  # fmt: skip
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.bind, served.port, exc.strerror)
        return 1
    return 0


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
