"""The one ``faust.App`` of keel, configured from the environment (streams/config.py).

Settings that matter for correctness, not just speed:

- ``processing_guarantee='at_least_once'``: faust's exactly-once mode is unreliable
  (faust-streaming issues #517, #323), so every state update is idempotent by
  ``event_id`` instead (streams/domain/state.py) and a replayed event changes nothing.
- ``store='rocksdb://'`` with changelog topics: tables survive a restart (kept dir) and
  a lost disk (restored from the changelog).
- ``topic_partitions`` equals the input topics' partition count: tables must be
  co-partitioned with the streams that write them (streams/kafka/admin.py enforces it).
- ``producer_linger_ms=5`` (streams/tuning.py): faust's default (0) sends every record in
  a request of its own. The agents' outputs and table changelogs go through
  streams/worker/emit.py instead; what is left on faust's producer is little.
- ``broker_session_timeout`` of ``KEEL_SESSION_TIMEOUT_MS`` (3 s; faust's default is 60 s),
  heartbeats every third of it: a crashed worker's partitions move to the others after at
  most that long (docs/fault-tolerance.md has the trade-off). The intake's consumer uses the
  same (streams/worker/intake.py).
- ``consumer_group_instance_id`` (KEEL_INSTANCE_ID, static membership): a worker that
  comes back within the session timeout is the same group member again and gets its
  partitions back with no rebalance; a stopped worker sends no LeaveGroup, so its partitions
  move to the others only once its session has timed out.
- ``canonical_url`` must be reachable by the other workers: ``table_route`` forwards
  queries for keys this worker does not own to that URL.
- ``broker_credentials`` from the same ``KAFKA_*`` variables as every librdkafka client
  (streams/kafka/config.py), so aiokafka and librdkafka connect the same way.
- ``web_ssl_context``: HTTPS when ``KEEL_TLS_CERT``/``KEEL_TLS_KEY`` are set, and an
  ``HttpClient`` that trusts ``KEEL_TLS_CA`` for the forwards to other workers (streams/tls.py).
- ``_ConsumerThread``: aiokafka's fetch waits at most 200 ms for data, not faust's fixed 1.5 s
  (a restart waited for it three times).
- ``_Consumer``: after a rebalance every stream partition is sought, those without a committed
  offset too (to their first offset), so records faust dropped around it are read again; and
  heartbeats go on while faust handles an assignment (aiokafka sends none until it returns).
- aiohttp's own 404/405s answer keel's JSON error (streams/weberrors.py), like the handlers;
- every request to the web server passes streams/auth.py's check first (one aiohttp
  middleware, the role per path in ``auth.worker_role``), forwarded ones included: a worker
  forwards the caller's token and the owner checks it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import faust
import orjson
from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError
from faust.serializers import codecs
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streams import auth, tls, tuning
from streams.config import Settings
from streams.kafka.config import faust_credentials
from streams.weberrors import json_errors


class _OrjsonCodec(codecs.Codec):
    """JSON for tables and internal topics, via orjson (several times faster than json)."""

    def _dumps(self, obj: object) -> bytes:
        return orjson.dumps(obj)

    def _loads(self, s: bytes) -> object:
        return orjson.loads(s)


codecs.register("orjson", _OrjsonCodec())
log = logging.getLogger(__name__)


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's consumer thread, with a fetch that waits at most ``tuning.FAUST_FETCH_MAX_WAIT_MS``
    for data (faust fixes 1,500 ms). Every call faust makes through the thread (recovery's
    high-water marks and offsets, seeks after a rebalance) waits for the fetch in flight, so
    each took up to 1.5 s when nothing arrived: 4.5 s of every restart."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = tuning.FAUST_FETCH_MAX_WAIT_MS  # read by start()
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    """faust's consumer, with a seek after each rebalance that reaches every stream partition.

    Around a rebalance faust drops records it has fetched but not handed out, and reads them
    again by seeking each partition to its committed offset once the tables are recovered.
    aiokafka's ``seek_to_committed`` skips a partition whose committed offset is missing or 0,
    which then keeps its fetch position past the dropped records: a worker taking over from
    one killed before its first commit lost them for good (test_scale_out). Such partitions
    go back to their first offset, where a group without a committed offset starts anyway
    (``consumer_auto_offset_reset="earliest"``); what is read twice is a duplicate by id.
    """

    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        """faust's handling of an assignment, with heartbeats to the group meanwhile.

        aiokafka starts its heartbeat task only once the assignment callback has returned, and
        faust's callback opens every table partition and keel's restores the new ones
        (streams/worker/tables.py) inside it: seconds, longer than the 3 s session, so the
        worker was thrown out of its group and the group rebalanced again and again
        (bench/failover.py found it). The heartbeats go out on the consumer's own thread,
        which is free meanwhile: its coordinator only awaits the callback.
        """
        async with _heartbeating(self._thread):
            await super().on_partitions_assigned(assigned, generation_id)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed = await super().seek_to_committed()
        changelogs = self.app.tables.changelog_topics
        rewind = [
            TopicPartition(tp.topic, tp.partition)
            for tp in self.assignment()
            if tp.topic not in changelogs and not committed.get(tp)
        ]
        if rewind:
            try:
                await self._thread.seek_to_beginning(*rewind)
            except IllegalStateError as exc:  # reassigned meanwhile: the next rebalance seeks
                log.warning("partitions without a committed offset not sought (%s)", exc)
        return committed

@contextlib.asynccontextmanager
async def _heartbeating(thread: Any) -> AsyncIterator[None]:
    """A heartbeat to the join's group at once and then every ``settings.heartbeat_ms``, sent
    by the consumer ``thread``'s coordinator, while the block runs."""
    coordinator = thread._ensure_consumer()._coordinator

    async def beat() -> None:
        while True:
            try:
                await thread.call_thread(coordinator._do_heartbeat)
            except Exception as exc:  # noqa: BLE001 - the group is rebalancing again, or gone
                log.debug("heartbeat during an assignment failed: %r", exc)
            await asyncio.sleep(settings.heartbeat_ms / 1000)

    task = asyncio.ensure_future(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


settings = Settings.from_env()
auth_config = auth.AuthConfig.from_env()


def _broker_url(bootstrap: str) -> str:
    return ";".join(f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip())


_forward_client = tls.http_client_class(settings.tls_ca)
_http_client_options: dict[str, Any] = {"HttpClient": _forward_client} if _forward_client else {}

app = faust.App(
    settings.app_id,
    broker=_broker_url(settings.kafka_bootstrap),
    **faust_credentials(settings.kafka_security),
    store="rocksdb://",
    datadir=str(settings.data_dir),
    processing_guarantee="at_least_once",
    topic_partitions=settings.partitions,
    topic_replication_factor=settings.replication,
    topic_allow_declare=True,
    table_standby_replicas=settings.standby_replicas,
    web_enabled=True,
    web_application_options={
        "middlewares": [
            json_errors("see /openapi.json"),
            auth.middleware(auth_config, auth.worker_role, auth.sse_path),
        ]
    },
    web_bind=settings.api_bind,
    web_port=settings.api_port,
    web_host=settings.api_bind,
    canonical_url=settings.canonical_url,
    web_ssl_context=settings.server_ssl_context(),
    **_http_client_options,
    consumer_auto_offset_reset="earliest",
    producer_linger_ms=tuning.FAUST_PRODUCER_LINGER_MS,
    broker_session_timeout=settings.session_timeout_ms / 1000,
    broker_heartbeat_interval=settings.heartbeat_ms / 1000,
    consumer_group_instance_id=settings.instance_id,
    key_serializer="raw",
    value_serializer="raw",
)
app.transport.Consumer = _Consumer  # type: ignore[misc]  # faust builds it from here
