"""The intake: the departments' topics read in bulk, checked, and passed on packed.

faust spends ~70 µs on every record it consumes (a future per message, a loop turn per
event, four sensor calls, an ack); a confluent-kafka consumer reading batches costs a tenth
of that. So the department topics (orders.v1, shipments.v1, contacts.v1) are not faust
streams: a thread of each worker reads them as the consumer group ``{app_id}-intake``,
decodes and checks every record (streams/encoding/codec.py), dead-letters what cannot be used, and
sends each event, packed with the others of its batch, to where its join starts:

    order              -> customer-events (key customer_id)
    contact with id    -> customer-events (key customer_id)
    desk command       -> customer-events (key customer_id; commands.v1)
    command outcome    -> customer-events (key customer_id; command-outcomes.v1)
    erasure request    -> customer-events (key customer_id; erasures.v1)
    shipment           -> order-refs      (key order_id):   look the order's customer up
    other contact      -> contact-refs    (key contact_id): look up by case, order, e-mail, phone

Before it reads anything else, each worker's intake passes on *every* erasure request in
erasures.v1 from the beginning (:meth:`Intake._erasures_first`): in each partition of
customer-events they then come before any event it passes on, so a new deployment replaying
the departments' topics from offset 0 drops an erased customer's events instead of showing
the customer again until its request comes round. A request handled again changes nothing.

A batch is committed only after Kafka confirmed every record it caused (at-least-once; the
merge downstream is idempotent by event_id): its records, and the erasure requests passed on
first, are counted in one :class:`~streams.kafka.producer.Deliveries` each and flushed through
keel's one producer (streams/kafka/producer.py), which waits out a full local queue. No
record can stop the intake: whatever fails for one record makes that record a dead letter
with the reason. If Kafka refuses what the intake produced, the batch is not committed and
is read again.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any, cast

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from streams import tuning
from streams.app import settings as _app_settings
from streams.config import Settings
from streams.domain.commands import target_key
from streams.domain.ids import ID_RULE, blank_id
from streams.domain.join import route
from streams.encoding.codec import CodecError, get_codec
from streams.errors import KeelError
from streams.kafka.config import client_config
from streams.kafka.producer import BaseProducer, Deliveries
from streams.ops import health, metrics
from streams.ops.deadletters import REPLAY_OF, REPLAYED_FROM
from streams.worker import messages as proto
from streams.worker.backpressure import JoinLag
from streams.worker.checkpoint import Packer

log = logging.getLogger(__name__)

SCHEMA_OF_KIND = {
    "order": "OrderEvent",
    "shipment": "ShipmentEvent",
    "contact": "ContactEvent",
    "command": "DeskCommand",  # the desk's own commands.v1: their lifecycle is in the state
    "outcome": "CommandOutcome",  # the departments' answers to them (command-outcomes.v1)
    "erasure": "ErasureRequest",  # forget a customer (erasures.v1, streams/domain/erasure.py)
}
KEY_FIELD_OF_KIND = {
    "order": "customer_id",
    "shipment": "order_id",
    "contact": "contact_id",
    "outcome": "customer_id",
    "erasure": "customer_id",
}

Headers = list[tuple[str, str | bytes | None]]


class RejectedInput(KeelError):
    """An input record keel cannot use; becomes a dead letter with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


codec = get_codec()


def decode_input(kind: str, key: bytes | None, value: bytes | None, max_bytes: int) -> dict:
    """Decode and check one input record, or raise RejectedInput with a reason a person can
    act on."""
    if value is None:
        raise RejectedInput("record has no value (null)")
    if len(value) > max_bytes:
        raise RejectedInput(
            f"record of {len(value)} bytes exceeds KEEL_MAX_RECORD_BYTES={max_bytes}"
        )
    try:
        event = codec.decode(value, SCHEMA_OF_KIND[kind])
    except CodecError as exc:
        raise RejectedInput(exc.reason) from exc
    blank = blank_id(event)
    if blank is not None:  # "" as a customer_id would join unrelated events into one customer
        raise RejectedInput(
            f"{blank} {event[blank]!r}: {ID_RULE}; a blank id would join unrelated events"
        )
    try:
        key_text = key.decode() if key is not None else None
    except UnicodeDecodeError:
        raise RejectedInput("record key is not valid UTF-8") from None
    if kind == "command":
        expected, field = target_key(event).decode(), "target"
    else:
        field = KEY_FIELD_OF_KIND[kind]
        expected = event[field]
    if key_text != expected:
        raise RejectedInput(
            f"record key {key_text!r} disagrees with the body's {field} {expected!r}"
        )
    return event


def first_hop(
    kind: str, event: dict, topic: str, names: dict[str, str], appended: int | None = None
) -> tuple[str, str, proto.Event | proto.Lookup]:
    """(internal topic, key, message) where ``event``'s join starts: its customer if the
    event names one, else a lookup at the first reference of its chain.

    ``names`` maps "customer" and each reference namespace to its internal topic;
    ``appended``: when Kafka appended the input record (ms), for the apply-lag metric.
    """
    r = route(kind, event)
    if r.customer_id is not None:
        return names["customer"], r.customer_id, proto.event(kind, event, topic,
                                                             appended=appended)  # fmt: skip
    (ns, ref), *rest = r.refs
    return names[ns], ref, proto.lookup(kind, event, topic, rest, appended=appended)


def dead_letter_record(
    reason: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
) -> tuple[bytes | None, bytes | None, Headers]:
    """(key, value, headers) of the dead letter of one record (docs/contract.md §1).

    A record Kafka accepted can still be too big to copy: the broker's limit applies to a
    compressed batch, the producer's (``message.max.bytes``) to the record as it is. Such a
    value is cut to its first ``tuning.DEADLETTER_KEEP_BYTES`` and says so (header
    ``x-truncated-from``, and the reason); the original stays at its source offset.
    """
    headers: Headers = [
        ("x-source-topic", topic.encode()),
        ("x-source-partition", str(partition).encode()),
        ("x-source-offset", str(offset).encode()),
        (
            "x-failed-at",
            datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z").encode(),
        ),
    ]
    size = len(key or b"") + len(value or b"")
    if size > tuning.DEADLETTER_MAX_BYTES:
        keep = tuning.DEADLETTER_KEEP_BYTES
        headers.append(("x-truncated-from", str(size).encode()))
        reason = (
            f"{reason} (record of {size} bytes is too big to copy: key and value cut to their "
            f"first {keep} bytes; the original is at {topic}[{partition}]@{offset})"
        )
        key = key[:keep] if key is not None else None
        value = value[:keep] if value is not None else None
    headers.insert(0, ("x-error", reason.encode()))
    return key, value, headers


class _ConsumerFenced(KeelError):
    """The intake's consumer hit a fatal error (librdkafka: the consumer is unusable), e.g.
    ``FENCED_INSTANCE_ID``: as a static member (KEEL_INSTANCE_ID) whose session expired while
    the brokers were away, it rejoined under a new member id and the old one's requests were
    refused. A new consumer takes over."""


def _fatal(err: KafkaError) -> bool:
    """Whether the consumer is unusable after ``err`` (librdkafka reports its fatal error as
    ``_FATAL`` on the consumer's queue, without the fatal flag; a commit refused as fenced
    comes before it)."""
    return bool(err.fatal()) or err.code() in (KafkaError._FATAL, KafkaError.FENCED_INSTANCE_ID)


class Intake:
    """A thread reading the input topics in batches for the whole life of the worker."""

    def __init__(self, settings: Settings, names: dict[str, str]) -> None:
        self.settings = settings
        self.names = names
        self.kinds = {
            settings.topics.orders: "order",
            settings.topics.shipments: "shipment",
            settings.topics.contacts: "contact",
            settings.topics.commands: "command",
            settings.topics.command_outcomes: "outcome",
            settings.topics.erasures: "erasure",
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None
        self._lag: dict[tuple[str, int], int] = {}
        self._lag_at = 0.0
        #: (topic, partition) -> next offset to read, as committed, for assigned partitions
        self._committed: dict[tuple[str, int], int] = {}

    # ------------------------------------------------------------------------- life cycle

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="keel-intake", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def lag(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> records after the intake's committed offset."""
        return dict(self._lag)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._loop()
                return
            except _ConsumerFenced as exc:
                # librdkafka's consumer is unusable after a fatal error; a new one rejoins as
                # the same static member, and reads again from the committed offsets what
                # the old one had not committed (applied once, by event_id)
                log.warning("intake: its consumer stopped on a fatal error (%s); starting a "
                            "new one", exc)  # fmt: skip
                self._committed.clear()
                self._stop.wait(1.0)
            except Exception as exc:  # noqa: BLE001 - reported as unhealthy, not swallowed
                log.exception("intake failed")
                health.fail("intake", f"the intake thread failed: {exc!r}")
                return

    def _loop(self) -> None:
        s = self.settings
        consumer = self._consumer = Consumer(
            {
                **client_config(s.kafka_bootstrap),
                "group.id": f"{s.app_id}-intake",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 100,
                "session.timeout.ms": s.session_timeout_ms,  # as the join's (streams/app.py)
                "heartbeat.interval.ms": s.heartbeat_ms,
                # static membership like the join's consumer (streams/app.py)
                **({"group.instance.id": s.instance_id} if s.instance_id else {}),
                "logger": logging.getLogger("librdkafka"),  # not raw on stderr
            }
        )
        producer = BaseProducer(s.kafka_bootstrap, **tuning.INTAKE_PRODUCER)
        ahead = JoinLag(s.kafka_bootstrap, sorted(set(self.names.values())), s.app_id,
                        s.partitions, s.intake_ahead_records)  # fmt: skip
        while not self._stop.is_set() and not self._erasures_first(producer):
            time.sleep(1.0)
        consumer.subscribe(list(self.kinds), on_assign=self._on_assign, on_revoke=self._on_revoke)
        paused = False
        try:
            while not self._stop.is_set():
                self._measure_lag(consumer)
                # The join too far behind: wait, polling (a record fetched before the pause
                # is still handled) so the intake stays in its group; a new assignment comes
                # unpaused, so pause whatever is assigned (streams/worker/backpressure.py).
                if ahead.wait():
                    consumer.pause(consumer.assignment())
                    paused = True
                elif paused:
                    consumer.resume(consumer.assignment())
                    paused = False
                # Wait for the first record (an idle intake sleeps here), then take what is
                # already fetched without waiting: a lone event goes on at once, and under
                # load the batch is whatever arrived while the last one was confirmed.
                first = consumer.poll(tuning.INTAKE_IDLE_POLL_S)
                if first is None:
                    continue
                messages = [first]
                if s.batch_max > 1 and not paused:
                    messages += consumer.consume(s.batch_max - 1, 0)
                self._handle(consumer, producer, messages)
        finally:
            producer.flush(10)
            try:
                consumer.close()
            except KafkaException as exc:  # a fenced consumer may refuse to leave cleanly
                log.warning("intake: closing its consumer: %s", exc)
            ahead.close()

    def _erasures_first(self, producer: BaseProducer) -> bool:
        """Pass on every erasure request in erasures.v1 and wait until Kafka confirmed them.

        False if that could not be done (Kafka unreachable): the caller tries again, since
        reading the departments' topics first could apply what an erasure request forbids.
        """
        s, topic = self.settings, self.settings.topics.erasures
        reader = Consumer(client_config(s.kafka_bootstrap, None, **{
            "enable.auto.commit": False, "group.id": f"{s.app_id}-erasures-reader",
            "logger": logging.getLogger("librdkafka")}))  # fmt: skip
        try:
            meta = reader.list_topics(topic, timeout=10).topics.get(topic)
            if meta is None or meta.error is not None:  # no such topic: nothing to pass on
                return meta is None or meta.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
            ends = {}
            for p in meta.partitions:
                low, high = reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if high > low:
                    ends[p] = high
            reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
            deliveries = Deliveries()
            packer = Packer(_sender(producer, deliveries))
            passed, deadline = 0, time.monotonic() + 120
            while ends and time.monotonic() < deadline and not self._stop.is_set():
                msg = reader.poll(0.5)
                if msg is None or msg.error() is not None:
                    continue
                p, offset = msg.partition(), msg.offset()
                assert p is not None and offset is not None
                if offset + 1 >= ends.get(p, 0):
                    ends.pop(p, None)
                try:
                    event = decode_input("erasure", msg.key(), msg.value(), s.max_record_bytes)
                except RejectedInput:
                    continue  # the intake dead-letters it when it reads the topic
                dest, key, message = first_hop("erasure", event, topic, self.names)
                packer.send(dest, key, message)
                passed += 1
            packer.flush()
            failures = deliveries.errors
            if ends or producer.flush(tuning.INTAKE_CONFIRM_TIMEOUT_S) or failures:
                log.warning("intake: erasure requests not all passed on (%s); trying again",
                            producer.refusal(failures[0] if failures
                                             else "not read or confirmed in time"))
                return False
            if passed:
                log.info("intake: %d erasure request(s) passed on before any event", passed)
            return True
        except KafkaException as exc:
            log.warning("intake: erasure requests not read (%s); trying again", exc)
            return False
        finally:
            reader.close()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # only the lag metric needs these: an exception here would end the intake thread
        try:
            committed = consumer.committed(partitions, timeout=10)
        except KafkaException as exc:
            log.warning(
                "intake: committed offsets unknown (%s); their lag is not measured "
                "until the next assignment",
                exc,
            )
            committed = []
        for tp in committed:
            self._committed[(tp.topic, tp.partition)] = max(tp.offset, 0)
        self._lag_at = 0.0

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._lag.pop((tp.topic, tp.partition), None)
            self._committed.pop((tp.topic, tp.partition), None)

    def _measure_lag(self, consumer: Consumer) -> None:
        """Refresh :meth:`lag` about once a second from the fetcher's cached end offsets."""
        now = time.monotonic()
        if now - self._lag_at < tuning.INTAKE_LAG_INTERVAL_S:
            return
        self._lag_at = now
        lag = {}
        for (topic, partition), done in list(self._committed.items()):
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            lag[(topic, partition)] = max(0, high - done) if high >= 0 else 0
        self._lag = lag

    # --------------------------------------------------------------------------- one batch

    def _handle(
        self, consumer: Consumer, producer: BaseProducer, messages: list[Message]
    ) -> None:
        """Pass one batch on; commit it once everything it caused is confirmed."""
        deliveries = Deliveries()
        failures = deliveries.errors
        produce = _sender(producer, deliveries)
        packer = Packer(produce)
        ends: dict[tuple[str, int], int] = {}
        first: dict[tuple[str, int], int] = {}
        for msg in messages:
            err = msg.error()
            if err is not None:
                if _fatal(err):  # e.g. fenced: its session expired while Kafka was away
                    raise _ConsumerFenced(err.str())
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("intake: consumer error %s", err.str())
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            assert topic is not None and partition is not None and offset is not None
            first.setdefault((topic, partition), offset)
            ends[(topic, partition)] = offset + 1
            self._pass_on(msg, topic, partition, offset, packer, produce)
        packer.flush()
        left = producer.flush(tuning.INTAKE_CONFIRM_TIMEOUT_S)
        if left or failures:
            reason = failures[0] if failures else f"{left} record(s) not confirmed in time"
            reason = producer.refusal(reason)  # led by refused credentials, if they are why
            log.warning("intake: Kafka did not take a batch (%s); reading it again", reason)
            for (topic, partition), offset in first.items():
                consumer.seek(TopicPartition(topic, partition, offset))
            time.sleep(1.0)
            return
        if not ends:
            return
        try:
            consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in ends.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            if exc.args and _fatal(exc.args[0]):
                raise _ConsumerFenced(exc.args[0].str()) from None
            # Everything the batch caused is confirmed, so an offset not committed only means
            # it is read again (after a rebalance or a restart) and the merge finds nothing
            # new: e.g. the group forgot this member while the cluster was down.
            log.warning(
                "intake: offsets of a delivered batch not committed (%s); it may be read again",
                exc.args[0].str() if exc.args else exc,
            )
            return
        self._committed.update(ends)

    def _pass_on(
        self, msg: Message, topic: str, partition: int, offset: int, packer: Packer, produce: Any
    ) -> None:
        kind = self.kinds[topic]
        key, value = msg.key(), msg.value()
        try:
            event = decode_input(kind, key, value, self.settings.max_record_bytes)
            kind_of_time, at = msg.timestamp()
            appended = at if kind_of_time != TIMESTAMP_NOT_AVAILABLE and at > 0 else None
            dest, dest_key, message = first_hop(kind, event, topic, self.names, appended)
            packer.send(dest, dest_key, message)
        except RejectedInput as exc:
            reason = exc.reason
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
                reason = (
                    "the event is too big to pass on: as keel's internal message (JSON) it is "
                    "over what Kafka takes (message.max.bytes)"
                )
            else:
                reason = f"keel could not pass this record on: {exc!r}"
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the intake
            log.exception("intake: unexpected failure on %s[%s]@%s", topic, partition, offset)
            reason = f"keel could not process this record: {exc!r}"
        else:
            return
        dl_key, dl_value, headers = dead_letter_record(reason, topic, partition, offset, key, value)
        for name, raw in cast(list[tuple[str, bytes | None]], msg.headers() or []):
            if name == REPLAYED_FROM:  # a replayed record failing again: say which letter
                headers.append((REPLAY_OF, raw or b""))
        produce(self.settings.topics.deadletter, dl_key, dl_value, headers, -1)
        metrics.count_event(topic, "dead_letter")
        log.warning("dead letter from %s[%s]@%s: %s", topic, partition, offset, reason[:300])


def _sender(producer: BaseProducer, deliveries: Deliveries) -> Any:
    """``produce(topic, key, value, headers, partition)`` (a Packer's) counted in ``deliveries``.

    A full local queue is waited out: the batch's records go on in order.
    """

    def produce(
        topic: str, key: bytes | None, value: bytes | None, headers: Any, partition: int
    ) -> None:
        producer.produce(topic, key, value, headers, partition, deliveries)

    return produce


def _names() -> dict[str, str]:
    from streams.kafka import topics as t

    names = {ns: topic.get_topic_name() for ns, topic in t.ref_topics.items()}
    return {"customer": t.customer_events.get_topic_name(), **names}


#: the worker's intake (started by streams/worker/agent.py once faust runs)
intake = Intake(_app_settings, _names())
