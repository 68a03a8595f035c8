"""The root of every exception the connectors raise, and where each one lives.

A connector's loops tell a dependency that is down (:class:`~connectors.contract.Unavailable`:
wait and retry the same batch) from a record or request that can never be used (rejected,
with a reason a person can act on); everything else is a bug. Each class stays next to the
code that raises it.

    ConnectorError
    ├── Unavailable            connectors/contract.py: Kafka, PostgreSQL or Redis did not answer
    │   ├── PublishFailed      connectors/publisher.py: Kafka did not confirm a record
    │   └── QueueFull          connectors/publisher.py: the producer's local queue is full
    ├── Rejected               connectors/sources/postgres_outbox.py: an outbox row unusable
    └── BadRequest             connectors/sources/http_ingest.py: a POST refused (400 or 413)

A bad ``KEEL_*`` or connector setting raises ``streams.config.ConfigError`` (re-exported by
connectors/settings.py), a :class:`streams.errors.KeelError`.
"""

from __future__ import annotations

__all__ = ["ConnectorError"]


class ConnectorError(Exception):
    """Root of the errors connectors raise (the tree is in the module docstring)."""
