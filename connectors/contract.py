"""The small contract every connector follows: read this file alone to write one.

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

The loops around them are :mod:`connectors.loops` (``pump`` and ``drain``): a dependency that
is down (:class:`Unavailable`) means *wait and retry the same batch* — never skip it, never
reorder. The same shape as Quix Streams' ``BatchingSink`` (``add``/``flush``, commit after
flush). :mod:`connectors.runner` starts a connector process around them.

Errors, rooted at :class:`ConnectorError`::

    ConnectorError
    └── Unavailable      Kafka, PostgreSQL or Redis did not answer; retry after a backoff
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.errors import ConnectorError

__all__ = [
    "Batch",
    "ConnectorError",
    "OutRecord",
    "Sink",
    "SinkRecord",
    "Source",
    "Unavailable",
]


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
