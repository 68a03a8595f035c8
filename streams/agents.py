"""Thin agents: decode → route/join → merge (streams/state.py) → emit.

The flow, with every table co-partitioned with the topic that writes it:

    orders.v1 (key customer_id) ─────────────────────────────┐
    shipments.v1 (key order_id) ── order refs ──┐            ├─► customers table
    contacts.v1 (key contact_id) ─ contact refs ┼─ lookups ─►│   ─► customer-state.v1
                                   email/phone refs ─┘  customer-events (key customer_id)

A reference namespace (order, contact, email, phone) has an *owners* table (reference →
customer) and a *held* table (reference → events waiting for it). The customer agent
emits a *bind* for every reference a state newly knows; the bind sets the owner and
releases what was held. Both tables are changelog-backed, so held events survive a crash.

Every agent takes its input in batches (``stream.take_events``: up to ``KEEL_BATCH_MAX``
records, or what arrived within ``KEEL_BATCH_WAIT_MS``) and handles a batch in chunks of one
partition's events, each synchronously: table reads and writes go through a :class:`Tx`
that writes each changed key once, a customer's state is published once per chunk however
many of its events the chunk held, and every output record goes through the Emitter
(streams/emit.py). The batch's offsets are acknowledged only after Kafka confirmed all of
its outputs, so a crash replays the batch and the idempotent merge absorbs the replay.

Agents keep ``concurrency=1``: faust-streaming #606 commits offsets past unfinished events
with more.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, cast

import faust
import orjson
from aiokafka.partitioner import murmur2
from faust.streams import _current_event
from faust.types import TP, EventT

from streams import admin, live, metrics, tuning
from streams import topics as t
from streams.app import app, settings
from streams.codec import CodecError, get_codec
from streams.emit import Emitter, Headers, Outbox
from streams.join import (
    NAMESPACES,
    Route,
    add_held,
    new_state_refs,
    remove_held,
    route,
    unhold_refs,
)
from streams.signals import Windows, apply_signals, next_check_ms
from streams.state import Limits, apply_event, empty_state, view

log = logging.getLogger(__name__)

SCHEMA_OF_KIND = {"order": "OrderEvent", "shipment": "ShipmentEvent", "contact": "ContactEvent"}
KEY_FIELD_OF_KIND = {"order": "customer_id", "shipment": "order_id", "contact": "contact_id"}

limits = Limits(keep_closed=settings.keep_closed, max_notes=settings.max_notes)
windows = Windows(
    duplicate_order_ms=settings.duplicate_order_window_s * 1000,
    repeat_contact_ms=settings.repeat_contact_window_s * 1000,
    complaint_unresolved_ms=settings.complaint_unresolved_s * 1000,
)
codec = get_codec()
emitter = Emitter(settings.kafka_bootstrap)

STATE_TOPIC = settings.topics.state
SIGNAL_TOPIC = settings.topics.signals
DEADLETTER_TOPIC = settings.topics.deadletter
CUSTOMER_EVENTS = t.customer_events.get_topic_name()
REF_TOPIC = {ns: topic.get_topic_name() for ns, topic in t.ref_topics.items()}


class _KeelTable(faust.Table):
    """A RocksDB table keyed by a plain UTF-8 id, values as orjson.

    faust picks serializers from the types and would JSON-encode str keys ('"c-1"'), which
    hash to another partition than the topics' keys, so ``table_route`` would ask the wrong
    worker. The serializers must be right from construction on: faust builds the changelog
    topic (and with it how recovery decodes) while the table is being registered.
    """

    def _serializer_from_type(self, typ: Any) -> str:
        return "raw" if typ is str else "orjson"


def _table(name: str) -> Any:
    table = _KeelTable(app, name=name, key_type=str, options=tuning.ROCKSDB)
    return app.tables.add(table)


customers = _table("customers")
owners = {ns: _table(f"{ns}-owners") for ns in NAMESPACES}
held = {ns: _table(f"{ns}-held") for ns in NAMESPACES}
#: customer -> when its time-based signals next change (SHIPMENT_LATE, COMPLAINT_UNRESOLVED)
due = _table("signal-due")

TABLES = [customers, due, *owners.values(), *held.values()]
# streams/admin.py creates their changelog topics (with small segments) before faust starts
if sorted(table.name for table in TABLES) != sorted(admin.TABLES):
    raise RuntimeError("streams/admin.py TABLES must name every table of streams/agents.py")
CHANGELOG_TOPIC = {table: table.changelog_topic.get_topic_name() for table in TABLES}
TABLE_OF_CHANGELOG = {name: table for table, name in CHANGELOG_TOPIC.items()}


def views_ready() -> bool:
    """Tables recovered and not rebalancing (the same test as /readyz)."""
    return bool(app.tables.recovery.completed.is_set() and not app.rebalancing)  # type: ignore[attr-defined]


def now_ms() -> int:
    return int(time.time() * 1000)


class Rejected(Exception):
    """An input record keel cannot use; becomes a dead letter with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_input(kind: str, key: bytes | None, value: bytes | None) -> dict:
    """Decode and check one input record, or raise Rejected with a reason a person can act on."""
    if value is None:
        raise Rejected("record has no value (null)")
    if len(value) > settings.max_record_bytes:
        raise Rejected(
            f"record of {len(value)} bytes exceeds "
            f"KEEL_MAX_RECORD_BYTES={settings.max_record_bytes}"
        )
    try:
        event = codec.decode(value, SCHEMA_OF_KIND[kind])
    except CodecError as exc:
        raise Rejected(exc.reason) from exc
    field = KEY_FIELD_OF_KIND[kind]
    try:
        key_text = key.decode() if key is not None else None
    except UnicodeDecodeError:
        raise Rejected("record key is not valid UTF-8") from None
    if key_text != event[field]:
        raise Rejected(
            f"record key {key_text!r} disagrees with the body's {field} {event[field]!r}"
        )
    return event


def partition_for(key: bytes) -> int:
    """The partition Kafka's default partitioner (murmur2) gives ``key`` on keel's topics."""
    return (murmur2(key) & 0x7FFFFFFF) % settings.partitions


class Internal:
    """Messages to the worker's own topics (forwards, lookups, binds), packed.

    A message still goes to the partition its key hashes to, which is what keeps it
    co-partitioned with the table it reads, but all of a batch's messages for one
    partition travel as one record: ``[[key, message], ...]`` as JSON. faust's consumer
    spends about as much per record as keel spends merging an event, and each input event
    caused one or two such records; packed, their cost is per batch. A pack is closed at
    ``PACK_BYTES`` so a record stays well under Kafka's default size limit.
    """

    PACK_BYTES = tuning.PACK_BYTES

    __slots__ = ("_out", "_packs", "_sizes")

    def __init__(self, out: Outbox) -> None:
        self._out = out
        self._packs: dict[tuple[str, int], list[bytes]] = {}
        self._sizes: dict[tuple[str, int], int] = {}

    def send(self, topic: str, key: str, message: dict) -> None:
        where = (topic, partition_for(key.encode()))
        item = orjson.dumps([key, message])
        pack = self._packs.setdefault(where, [])
        pack.append(item)
        size = self._sizes.get(where, 0) + len(item) + 1
        if size >= self.PACK_BYTES:
            self._close(where)
        else:
            self._sizes[where] = size

    def _close(self, where: tuple[str, int]) -> None:
        pack = self._packs.pop(where)
        self._sizes.pop(where, None)
        self._out.produce(where[0], None, b"[" + b",".join(pack) + b"]", None, where[1])

    def flush(self) -> None:
        for where in list(self._packs):
            self._close(where)


def unpack(record: EventT) -> list[tuple[str, dict]]:
    """The (key, message) pairs of a record on an internal topic."""
    value = orjson.loads(record.value)
    if isinstance(value, list):
        return value
    key = cast(bytes, record.key)
    return [(key.decode(), value)]  # one message per record, as keel wrote them before


_GONE = object()


class Tx:
    """One chunk of a batch (one partition): table reads and writes, and the outputs they cause.

    Reads see this chunk's own writes; :meth:`commit` writes each changed key once: into
    RocksDB and, through the batch's outbox, to the table's changelog partition (the same
    record faust would write: raw key, orjson value, null to delete), and publishes each
    changed customer's latest state once. Going around faust's table API saves most of the
    per-write cost (its changelog send is an awaited-future message each); run_batches
    records the changelog offsets in RocksDB once Kafka confirmed them, which is how faust
    knows where to resume recovery. It must run while faust's current event is one of this
    partition's: that is how the RocksDB store picks the partition's database.
    """

    __slots__ = ("out", "internal", "partition", "_writes", "_published")

    def __init__(self, out: Outbox, internal: Internal, partition: int) -> None:
        self.out = out
        self.internal = internal
        self.partition = partition
        self._writes: dict[Any, dict[str, Any]] = {}
        self._published: dict[str, dict] = {}

    def get(self, table: Any, key: str) -> Any:
        writes = self._writes.get(table)
        if writes is not None and key in writes:
            value = writes[key]
            return None if value is _GONE else value
        raw = table.data._get(key.encode())
        return None if raw is None else orjson.loads(raw)

    def set(self, table: Any, key: str, value: Any) -> None:
        self._writes.setdefault(table, {})[key] = value

    def delete(self, table: Any, key: str) -> None:
        self._writes.setdefault(table, {})[key] = _GONE

    def contains(self, table: Any, key: str) -> bool:
        return self.get(table, key) is not None

    def publish_state(self, customer_id: str, public: dict) -> None:
        self._published[customer_id] = public

    def commit(self) -> None:
        produce = self.out.produce
        for table, writes in self._writes.items():
            store = table.data
            changelog = CHANGELOG_TOPIC[table]
            for key, value in writes.items():
                raw_key = key.encode()
                if value is _GONE:
                    if store._get(raw_key) is None:
                        continue
                    store._del(raw_key)
                    raw = None
                else:
                    raw = orjson.dumps(value)
                    store._set(raw_key, raw)
                produce(changelog, raw_key, raw, None, self.partition)
        for customer_id, public in self._published.items():
            produce(
                STATE_TOPIC,
                customer_id.encode(),
                codec.encode("CustomerState", public, check=False),
            )
        metrics.STATE_PUBLISHED.inc(len(self._published))
        self._writes.clear()
        self._published.clear()


def persist_changelog_offsets(out: Outbox) -> None:
    """Tell each table's RocksDB up to which changelog offset it holds (what faust's own
    changelog callback does), so a restart with the data dir kept replays only the rest."""
    for (topic, partition), offset in out.offsets.items():
        table = TABLE_OF_CHANGELOG.get(topic)
        if table is not None and partition in table.data._dbs:
            table.data.set_persisted_offset(TP(topic, partition), offset)


def _chunks(events: list[EventT]) -> Iterator[list[EventT]]:
    """A batch as runs of one partition's events, at most ``tuning.CHUNK`` long each."""
    groups: dict[int, list[EventT]] = {}
    for event in events:
        groups.setdefault(event.message.partition, []).append(event)
    for group in groups.values():
        for i in range(0, len(group), tuning.CHUNK):
            yield group[i : i + tuning.CHUNK]


Handler = Callable[[Tx, EventT], None]


async def run_batches(stream: Any, handle: Handler) -> None:
    """Feed ``stream`` to ``handle`` batch by batch; acknowledge a batch once its outputs are in.

    A batch is handled in chunks of one partition's events; each chunk's table writes are
    committed before the event loop is given a turn (queries, other agents), so no other
    agent ever sees, or overwrites, a half-applied chunk.
    """
    async for events in stream.take_events(settings.batch_max, settings.batch_wait_s):
        out = emitter.outbox()
        internal = Internal(out)
        published: set[str] = set()
        for chunk in _chunks(events):
            token = _current_event.set(weakref.ref(chunk[-1]))
            try:
                tx = Tx(out, internal, chunk[-1].message.partition)
                for event in chunk:
                    handle(tx, event)
                published.update(tx._published)
                tx.commit()
            finally:
                _current_event.reset(token)
            await asyncio.sleep(0)
        internal.flush()
        await out.confirmed()
        persist_changelog_offsets(out)
        live.changed(published)


def dead_letter(tx: Tx, event: EventT, reason: str) -> None:
    msg = event.message
    headers: Headers = [
        ("x-error", reason.encode()),
        ("x-source-topic", msg.topic.encode()),
        ("x-source-partition", str(msg.partition).encode()),
        ("x-source-offset", str(msg.offset).encode()),
        (
            "x-failed-at",
            datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z").encode(),
        ),
    ]
    tx.out.produce(DEADLETTER_TOPIC, msg.key, msg.value, headers)
    metrics.EVENTS.labels(msg.topic, "dead_letter").inc()
    log.warning("dead letter from %s[%s]@%s: %s", msg.topic, msg.partition, msg.offset, reason)


def decoded(tx: Tx, kind: str, event: EventT) -> dict | None:
    """The decoded input event, or None after dead-lettering what cannot be used."""
    try:
        return decode_input(kind, event.key, event.value)
    except Rejected as exc:
        dead_letter(tx, event, exc.reason)
        return None


def apply_to_customer(tx: Tx, customer_id: str, kind: str, event: dict, topic: str) -> None:
    """Merge one event into its customer's state; publish the state and new binds if it changed."""
    before = tx.get(customers, customer_id)
    now = now_ms()
    state, changed = apply_event(before or empty_state(customer_id), kind, event, now, limits)
    if not changed:
        metrics.EVENTS.labels(topic, "duplicate").inc()
        return
    version = state["version"]
    state, signal_changes = apply_signals(state, now, windows)
    state["version"] = version  # one change, one version, even when it also moved a signal
    metrics.EVENTS.labels(topic, "applied").inc()
    metrics.FRESHNESS.observe(max(0.0, time.time() - event["occurred_at"] / 1000))
    metrics.observe_source(event["source"], event["occurred_at"])
    save_and_publish(tx, customer_id, state, signal_changes, now)
    for ns, ref in new_state_refs(before, state):
        tx.internal.send(REF_TOPIC[ns], ref, {"op": "bind", "customer_id": customer_id})
    refs = unhold_refs(kind, event)
    if refs:
        unhold = {"op": "unhold", "event_id": event["event_id"]}
        for ns, ref in refs:
            tx.internal.send(REF_TOPIC[ns], ref, unhold)


def recheck_signals(tx: Tx, customer_id: str) -> None:
    """Re-evaluate time-based signals (a deadline passed) for one customer; sent by the timer."""
    stored = tx.get(customers, customer_id)
    if stored is None:
        tx.delete(due, customer_id)
        return
    now = now_ms()
    state, signal_changes = apply_signals(stored, now, windows)
    if state is not stored:
        save_and_publish(tx, customer_id, state, signal_changes, now)
    else:
        schedule(tx, customer_id, state, now)


def save_and_publish(
    tx: Tx, customer_id: str, state: dict, signal_changes: list[dict], now: int
) -> dict:
    """Store a changed state; publish it (once per chunk) and its signal changes."""
    tx.set(customers, customer_id, state)
    schedule(tx, customer_id, state, now)
    public = view(state)
    tx.publish_state(customer_id, public)
    for change in signal_changes:
        tx.out.produce(
            SIGNAL_TOPIC, customer_id.encode(), codec.encode("CustomerSignal", change, check=False)
        )
    return public


def schedule(tx: Tx, customer_id: str, state: dict, now: int) -> None:
    """Remember when this customer's signals next change on their own (or forget it)."""
    when = next_check_ms(state, now, windows)
    if when is None:
        if tx.contains(due, customer_id):
            tx.delete(due, customer_id)
    elif tx.get(due, customer_id) != when:
        tx.set(due, customer_id, when)


def forward(tx: Tx, customer_id: str, message: dict) -> None:
    body = {"kind": message["kind"], "event": message["event"], "topic": message["topic"]}
    tx.internal.send(CUSTOMER_EVENTS, customer_id, body)


def lookup(tx: Tx, ns: str, ref: str, message: dict) -> None:
    """Resolve ``message`` through reference ``ref`` (this worker owns its partition)."""
    owner = tx.get(owners[ns], ref)
    if owner is not None:
        forward(tx, owner, message)
        return
    waiting = add_held(tx.get(held[ns], ref), message)
    if waiting is None:
        return  # already held here, and already passed down the chain
    tx.set(held[ns], ref, waiting)
    metrics.HELD.inc()
    metrics.EVENTS.labels(message["topic"], "held").inc()
    rest = message["refs"]
    if rest:
        (next_ns, next_ref), *after = rest
        onward = {**message, "op": "lookup", "refs": after}
        tx.internal.send(REF_TOPIC[next_ns], next_ref, onward)


def bind(tx: Tx, ns: str, ref: str, customer_id: str) -> None:
    """Make ``ref`` known as ``customer_id``'s and release what waited for it."""
    owner = tx.get(owners[ns], ref)
    if owner is None:
        owner = customer_id  # first bind wins: ids are not re-assigned
        tx.set(owners[ns], ref, owner)
    waiting = tx.get(held[ns], ref)
    if waiting:
        tx.delete(held[ns], ref)
        metrics.HELD.dec(len(waiting))
        for message in waiting:
            forward(tx, owner, message)


def drop_held(tx: Tx, ns: str, ref: str, event_id: str) -> None:
    """Forget a held copy of an event that was applied through another reference."""
    rest = remove_held(tx.get(held[ns], ref), event_id)
    if rest is None:
        return
    if rest:
        tx.set(held[ns], ref, rest)
    else:
        tx.delete(held[ns], ref)
    metrics.HELD.dec()


def start(tx: Tx, kind: str, topic: str, event: dict) -> None:
    """Send a freshly decoded input event on its way to its customer."""
    r: Route = route(kind, event)
    message: dict[str, Any] = {"kind": kind, "event": event, "topic": topic}
    if r.customer_id is not None:
        forward(tx, r.customer_id, message)
        return
    (ns, ref), *rest = r.refs
    lookup(tx, ns, ref, {**message, "refs": rest})


def handle_order(tx: Tx, record: EventT) -> None:
    event = decoded(tx, "order", record)
    if event is not None:
        apply_to_customer(tx, event["customer_id"], "order", event, settings.topics.orders)


def handle_shipment(tx: Tx, record: EventT) -> None:
    # shipments.v1 is keyed by order_id, like the order references: look up in place.
    event = decoded(tx, "shipment", record)
    if event is not None:
        start(tx, "shipment", settings.topics.shipments, event)


def handle_contact(tx: Tx, record: EventT) -> None:
    # contacts.v1 is keyed by contact_id, like the contact references: look up in place.
    event = decoded(tx, "contact", record)
    if event is not None:
        start(tx, "contact", settings.topics.contacts, event)


def handle_customer_event(tx: Tx, record: EventT) -> None:
    for customer_id, m in unpack(record):
        if m["kind"] == "recheck":
            recheck_signals(tx, customer_id)
        else:
            apply_to_customer(tx, customer_id, m["kind"], m["event"], m["topic"])


@app.agent(t.orders, concurrency=1)
async def on_orders(stream: Any) -> None:
    await run_batches(stream, handle_order)


@app.agent(t.shipments, concurrency=1)
async def on_shipments(stream: Any) -> None:
    await run_batches(stream, handle_shipment)


@app.agent(t.contacts, concurrency=1)
async def on_contacts(stream: Any) -> None:
    await run_batches(stream, handle_contact)


@app.agent(t.customer_events, concurrency=1)
async def on_customer_events(stream: Any) -> None:
    await run_batches(stream, handle_customer_event)


@app.timer(interval=settings.signal_check_interval_s)
async def signal_clock() -> None:
    """Ask the owner of every customer whose deadline passed to re-check its signals.

    faust tables can only be changed from inside an agent (the change needs the event's
    partition), so the timer only reads the due table and sends a message through
    customer-events, keyed by customer, which the customer agent handles like an event.
    """
    if not views_ready():
        return
    now = now_ms()
    recheck = {"kind": "recheck"}
    out = emitter.outbox()
    internal = Internal(out)
    for customer_id, when in list(due.items()):
        if when <= now:
            internal.send(CUSTOMER_EVENTS, customer_id, recheck)
    internal.flush()
    await out.confirmed()


def _ref_handler(ns: str) -> Handler:
    def handle(tx: Tx, record: EventT) -> None:
        for ref, m in unpack(record):
            if m["op"] == "bind":
                bind(tx, ns, ref, m["customer_id"])
            elif m["op"] == "unhold":
                drop_held(tx, ns, ref, m["event_id"])
            else:
                lookup(tx, ns, ref, m)

    return handle


def _ref_agent(ns: str) -> None:
    handle = _ref_handler(ns)

    async def on_refs(stream: Any) -> None:
        await run_batches(stream, handle)

    on_refs.__name__ = on_refs.__qualname__ = f"on_{ns}_refs"
    app.agent(t.ref_topics[ns], name=f"keel.{ns}_refs", concurrency=1)(on_refs)


for _ns in NAMESPACES:
    _ref_agent(_ns)


@app.on_before_shutdown.connect
def _stop_emitter(_app: Any, /, *_args: Any, signal: Any, **_kwargs: Any) -> None:
    """Deliver what the agents produced before the worker goes (unconfirmed batches are
    not acknowledged either way, so this only saves a replay)."""
    emitter.stop()
