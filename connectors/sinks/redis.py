"""Redis sink: customer-state.v1 into Redis, for apps that want a key lookup instead of HTTP.

- ``keel:customer:{customer_id}`` = the CustomerState as JSON (the query API's form), from
  every record of the compacted ``customer-state.v1`` topic;
- ``keel:email:{email}``, ``keel:phone:{phone}``, ``keel:order:{order_id}`` = the customer_id
  the *worker* says owns it: they come from the changelogs of the worker's owners tables
  (``{app_id}-email-owners-changelog``, ...), the very tables the query API resolves
  ``?email=``/``?phone=``/``?order_id=`` by. Two customers' states can both list one e-mail
  (both ordered with it); the first to claim it owns it and keeps it (docs/contract.md §4), so the
  sink never moves an index key the worker did not move, whatever order it reads states in.
  An index key stays when its customer's state no longer lists it (retention dropped the
  order), as the API still answers for it. Index keys and customer keys come from different
  topics, so either may reach Redis a moment before the other;
- a tombstone (null value) deletes the customer key and the index keys its last state listed
  that still point at it.

A batch of records is one ``MULTI``/``EXEC`` transaction and the consumer's offsets are committed
only after Redis accepted it. Redis down: the same batch is retried with backoff until Redis is
back (never skipped), then the sink catches up. A record that cannot be decoded is logged,
counted (``keel_connector_rejected_total{reason="undecodable"}``) and leaves Redis as it was.

    $ python -m connectors.sinks.redis      # REDIS_URL, KEEL_REDIS_SINK_* ; /metrics on 8090
    $ redis-cli GET keel:customer:c-1
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from typing import Any

import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from connectors import metrics
from connectors.contract import Sink, SinkRecord, Unavailable
from connectors.runner import SinkPlan, redact, run_sink
from connectors.settings import ConnectorSettings
from streams.encoding.codec import CodecError, get_codec
from streams.encoding.jsonconv import to_json
from streams.kafka.admin import changelog_topic
from streams.kafka.config import client_config

log = logging.getLogger("connectors.sinks.redis")  # not __main__ under python -m

__all__ = ["CUSTOMER_KEY", "RedisSink", "index_keys", "main"]

CONNECTOR = "redis_sink"
CUSTOMER_KEY = "keel:customer:{}"
#: the worker's owners tables (streams/worker/tables.py) whose changelogs give the index keys
OWNER_KEYS = {
    "email-owners": "keel:email:{}",
    "phone-owners": "keel:phone:{}",
    "order-owners": "keel:order:{}",
}

# Delete an index key only if it still names this customer: an id belongs to one customer.
_DELETE_IF_OURS = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)
_UNAVAILABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
)


def index_keys(state: dict[str, Any] | None) -> set[str]:
    """The ``keel:email|phone|order:*`` keys that should point at the customer of ``state``.

    >>> state = {"emails": ["a@x.io"], "phones": ["+4930"], "orders": [{"order_id": "o-1"}]}
    >>> sorted(index_keys(state))
    ['keel:email:a@x.io', 'keel:order:o-1', 'keel:phone:+4930']
    """
    if not state:
        return set()
    keys = {f"keel:email:{email}" for email in state.get("emails") or ()}
    keys |= {f"keel:phone:{phone}" for phone in state.get("phones") or ()}
    keys |= {f"keel:order:{order['order_id']}" for order in state.get("orders") or ()}
    return keys


class RedisSink(Sink):
    """Writes batches of customer-state records to Redis, one MULTI/EXEC per batch."""

    def __init__(
        self, client: redis.Redis, topic: str = "customer-state.v1", app_id: str = "keel"
    ) -> None:
        self.client = client
        self.topic = topic  # for the metrics' topic label
        #: owners changelog topic -> the index key format of its references
        self.owner_topics = {
            changelog_topic(app_id, table): key for table, key in OWNER_KEYS.items()
        }
        self.codec = get_codec()
        self.last_write_ok: bool | None = None

    @classmethod
    def from_url(
        cls, url: str, topic: str = "customer-state.v1", app_id: str = "keel"
    ) -> RedisSink:
        """A sink whose client fails fast; retrying is the sink loop's job, with backoff."""
        client = redis.Redis.from_url(
            url,
            socket_timeout=5,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0),
        )
        return cls(client, topic, app_id)

    def topics(self) -> list[str]:
        """What the sink consumes: the state topic and the owners changelogs."""
        return [self.topic, *self.owner_topics]

    def status(self) -> dict[str, Any]:
        return {"redis": {None: "unknown", True: "up", False: "down"}[self.last_write_ok]}

    def write(self, batch: Sequence[SinkRecord]) -> None:
        owned = self._owners(r for r in batch if r.topic in self.owner_topics)
        latest = self._latest(r for r in batch if r.topic not in self.owner_topics)
        if not latest and not owned:
            return
        began = time.perf_counter()
        try:
            self._apply(latest, owned)
        except _UNAVAILABLE as exc:
            self.last_write_ok = False
            metrics.REDIS_RETRIES.inc()
            raise Unavailable(f"Redis: {exc}") from exc
        self.last_write_ok = True
        metrics.REDIS_WRITE_SECONDS.observe(time.perf_counter() - began)
        for value in latest.values():
            metrics.REDIS_RECORDS.labels("delete" if value is None else "upsert").inc()
        if owned:
            metrics.REDIS_RECORDS.labels("owner").inc(len(owned))

    def _owners(self, batch: Iterable[SinkRecord]) -> dict[str, str | None]:
        """index key -> the customer the worker's owners table names (None: it forgot it)."""
        out: dict[str, str | None] = {}
        for record in batch:
            metrics.ACCEPTED.labels(CONNECTOR, record.topic).inc()
            owner = None if record.value is None else _loads_owner(record.value)
            if record.key is None or owner == "":
                metrics.REJECTED.labels(CONNECTOR, "undecodable").inc()
                log.warning("owners record at %s@%d not readable; skipped", record.topic,
                            record.offset)
                continue
            ref = record.key.decode("utf-8", "replace")
            out[self.owner_topics[record.topic].format(ref)] = owner
        return out

    def _latest(self, batch: Iterable[SinkRecord]) -> dict[str, bytes | None]:
        """customer_id -> the JSON to store (None: delete), the last record of each key winning.

        Records of one key come from one partition in offset order, so the last one is the
        newest state; decoding only that one also saves work on busy customers.
        """
        raw: dict[str, bytes | None] = {}
        for record in batch:
            metrics.ACCEPTED.labels(CONNECTOR, self.topic).inc()
            if record.key is None:
                metrics.REJECTED.labels(CONNECTOR, "undecodable").inc()
                log.warning("record at offset %d has no key; skipped", record.offset)
                continue
            raw[record.key.decode("utf-8", "replace")] = record.value
        out: dict[str, bytes | None] = {}
        for customer_id, value in raw.items():
            if value is None:
                out[customer_id] = None
                continue
            try:
                state = to_json("CustomerState", self.codec.decode(value, "CustomerState"))
            except CodecError as exc:
                metrics.REJECTED.labels(CONNECTOR, "undecodable").inc()
                log.warning("state of %s not decodable, Redis left as it was: %s", customer_id, exc)
                continue
            out[customer_id] = orjson.dumps(state)
        return out

    def _apply(self, latest: dict[str, bytes | None], owned: dict[str, str | None]) -> None:
        """One MULTI/EXEC: the owners' index keys first, then the states (a tombstone last
        removes what names its customer)."""
        ids = list(latest)
        previous = self.client.mget([CUSTOMER_KEY.format(cid) for cid in ids]) if ids else []
        tx = self.client.pipeline(transaction=True)
        bound = {key: owner for key, owner in sorted(owned.items()) if owner is not None}
        if bound:
            tx.mset(bound)
        for key in sorted(key for key, owner in owned.items() if owner is None):
            tx.delete(key)
        for cid, old_json in zip(ids, previous, strict=True):
            new_json = latest[cid]
            if new_json is None:
                tx.delete(CUSTOMER_KEY.format(cid))
                for key in sorted(index_keys(_loads(old_json))):
                    tx.eval(_DELETE_IF_OURS, 1, key, cid)
            else:
                tx.set(CUSTOMER_KEY.format(cid), new_json)
        tx.execute()


def _loads_owner(value: bytes) -> str:
    """The customer id of an owners changelog value (JSON string); "" if it is not one."""
    try:
        owner = orjson.loads(value)
    except orjson.JSONDecodeError:
        return ""
    return owner if isinstance(owner, str) else ""


def _loads(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        state = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None  # not ours to interpret; it is overwritten anyway
    return state if isinstance(state, dict) else None


def consumer_config(settings: ConnectorSettings) -> dict[str, Any]:
    """Manual commits only (after Redis accepted a batch); a new group starts at the beginning."""
    return {
        **client_config(settings.keel.kafka_bootstrap),
        "group.id": settings.redis_sink_group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10_000,
        "max.poll.interval.ms": 300_000,
        # the owners changelogs are created by the worker, maybe after the sink subscribed:
        # seen within seconds, not librdkafka's default 5 minutes
        "topic.metadata.refresh.interval.ms": 10_000,
        "logger": logging.getLogger("librdkafka"),
    }


def main(argv: list[str] | None = None) -> int:
    return run_sink("redis-sink", log, plan)


def plan(settings: ConnectorSettings, closing: ExitStack) -> SinkPlan:
    """customer-state.v1 and the owners changelogs into ``REDIS_URL``."""
    sink = RedisSink.from_url(
        settings.keel.redis_url, settings.keel.topics.state, settings.keel.app_id
    )
    describe = (
        f"Redis sink: {', '.join(sink.topics())} -> {redact(settings.keel.redis_url)} "
        f"(group {settings.redis_sink_group})"
    )
    return SinkPlan(
        CONNECTOR, sink, sink.status, settings.redis_sink_port, consumer_config(settings),
        sink.topics(), settings.redis_sink_batch, describe,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
