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

Agents keep ``concurrency=1``: faust-streaming #606 commits offsets past unfinished events
with more. Nothing here blocks the event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import faust
import orjson
from faust.types import EventT

from streams import metrics
from streams import topics as t
from streams.app import app, settings
from streams.codec import CodecError, get_codec
from streams.join import NAMESPACES, Route, add_held, new_refs, remove_held, route, unhold_refs
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
    return app.tables.add(_KeelTable(app, name=name, key_type=str))


customers = _table("customers")
owners = {ns: _table(f"{ns}-owners") for ns in NAMESPACES}
held = {ns: _table(f"{ns}-held") for ns in NAMESPACES}
#: customer -> when its time-based signals next change (SHIPMENT_LATE, COMPLAINT_UNRESOLVED)
due = _table("signal-due")


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


async def dead_letter(event: EventT, reason: str) -> None:
    msg = event.message
    headers = [
        ("x-error", reason.encode()),
        ("x-source-topic", msg.topic.encode()),
        ("x-source-partition", str(msg.partition).encode()),
        ("x-source-offset", str(msg.offset).encode()),
        (
            "x-failed-at",
            datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z").encode(),
        ),
    ]
    await t.deadletter.send(key=msg.key, value=msg.value, headers=headers)
    metrics.EVENTS.labels(msg.topic, "dead_letter").inc()
    log.warning("dead letter from %s[%s]@%s: %s", msg.topic, msg.partition, msg.offset, reason)


async def decoded(kind: str, stream: AsyncIterator[EventT]) -> AsyncIterator[tuple[EventT, dict]]:
    """Yield (faust event, decoded input event); dead-letter whatever cannot be used."""
    async for event in stream:
        try:
            yield event, decode_input(kind, event.key, event.value)
        except Rejected as exc:
            await dead_letter(event, exc.reason)


async def apply_to_customer(customer_id: str, kind: str, event: dict, topic: str) -> None:
    """Merge one event into its customer's state; publish the state and new binds if it changed."""
    before = customers.get(customer_id)
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
    public = await save_and_publish(customer_id, state, signal_changes, now)
    old_public = view(before) if before is not None else None
    bind = orjson.dumps({"op": "bind", "customer_id": customer_id})
    for ns, ref in new_refs(old_public, public):
        await t.ref_topics[ns].send(key=ref.encode(), value=bind)
    refs = unhold_refs(kind, event)
    if refs:
        unhold = orjson.dumps({"op": "unhold", "event_id": event["event_id"]})
        for ns, ref in refs:
            await t.ref_topics[ns].send(key=ref.encode(), value=unhold)


async def recheck_signals(customer_id: str) -> None:
    """Re-evaluate time-based signals (a deadline passed) for one customer; sent by the timer."""
    stored = customers.get(customer_id)
    if stored is None:
        if customer_id in due:
            del due[customer_id]
        return
    now = now_ms()
    state, signal_changes = apply_signals(stored, now, windows)
    if state is not stored:
        await save_and_publish(customer_id, state, signal_changes, now)
    else:
        schedule(customer_id, state, now)


async def save_and_publish(
    customer_id: str, state: dict, signal_changes: list[dict], now: int
) -> dict:
    """Store a changed state; publish it and its signal changes; return its public view."""
    customers[customer_id] = state
    schedule(customer_id, state, now)
    public = view(state)
    await t.customer_state.send(
        key=customer_id.encode(), value=codec.encode("CustomerState", public)
    )
    metrics.STATE_PUBLISHED.inc()
    for change in signal_changes:
        await t.customer_signals.send(
            key=customer_id.encode(), value=codec.encode("CustomerSignal", change)
        )
    return public


def schedule(customer_id: str, state: dict, now: int) -> None:
    """Remember when this customer's signals next change on their own (or forget it)."""
    when = next_check_ms(state, now, windows)
    if when is None:
        if customer_id in due:
            del due[customer_id]
    elif due.get(customer_id) != when:
        due[customer_id] = when


async def forward(customer_id: str, message: dict) -> None:
    body = orjson.dumps(
        {"kind": message["kind"], "event": message["event"], "topic": message["topic"]}
    )
    await t.customer_events.send(key=customer_id.encode(), value=body)


async def lookup(ns: str, ref: str, message: dict) -> None:
    """Resolve ``message`` through reference ``ref`` (this worker owns its partition)."""
    owner = owners[ns].get(ref)
    if owner is not None:
        await forward(owner, message)
        return
    waiting = add_held(held[ns].get(ref), message)
    if waiting is None:
        return  # already held here, and already passed down the chain
    held[ns][ref] = waiting
    metrics.HELD.inc()
    metrics.EVENTS.labels(message["topic"], "held").inc()
    rest = message["refs"]
    if rest:
        (next_ns, next_ref), *after = rest
        onward = {**message, "op": "lookup", "refs": after}
        await t.ref_topics[next_ns].send(key=next_ref.encode(), value=orjson.dumps(onward))


async def bind(ns: str, ref: str, customer_id: str) -> None:
    """Make ``ref`` known as ``customer_id``'s and release what waited for it."""
    owner = owners[ns].get(ref)
    if owner is None:
        owners[ns][ref] = owner = customer_id  # first bind wins: ids are not re-assigned
    waiting = held[ns].get(ref)
    if waiting:
        del held[ns][ref]
        metrics.HELD.dec(len(waiting))
        for message in waiting:
            await forward(owner, message)


def drop_held(ns: str, ref: str, event_id: str) -> None:
    """Forget a held copy of an event that was applied through another reference."""
    rest = remove_held(held[ns].get(ref), event_id)
    if rest is None:
        return
    if rest:
        held[ns][ref] = rest
    else:
        del held[ns][ref]
    metrics.HELD.dec()


async def start(kind: str, topic: str, event: dict) -> None:
    """Send a freshly decoded input event on its way to its customer."""
    r: Route = route(kind, event)
    message: dict[str, Any] = {"kind": kind, "event": event, "topic": topic}
    if r.customer_id is not None:
        await forward(r.customer_id, message)
        return
    (ns, ref), *rest = r.refs
    await lookup(ns, ref, {**message, "refs": rest})


@app.agent(t.orders, concurrency=1)
async def on_orders(stream: Any) -> None:
    async for _, event in decoded("order", stream.events()):
        await apply_to_customer(event["customer_id"], "order", event, settings.topics.orders)


@app.agent(t.shipments, concurrency=1)
async def on_shipments(stream: Any) -> None:
    # shipments.v1 is keyed by order_id, like the order references: look up in place.
    async for _, event in decoded("shipment", stream.events()):
        await start("shipment", settings.topics.shipments, event)


@app.agent(t.contacts, concurrency=1)
async def on_contacts(stream: Any) -> None:
    # contacts.v1 is keyed by contact_id, like the contact references: look up in place.
    async for _, event in decoded("contact", stream.events()):
        await start("contact", settings.topics.contacts, event)


@app.agent(t.customer_events, concurrency=1)
async def on_customer_events(stream: Any) -> None:
    async for event in stream.events():
        m = orjson.loads(event.value)
        if m["kind"] == "recheck":
            await recheck_signals(event.key.decode())
        else:
            await apply_to_customer(event.key.decode(), m["kind"], m["event"], m["topic"])


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
    recheck = orjson.dumps({"kind": "recheck"})
    for customer_id, when in list(due.items()):
        if when <= now:
            await t.customer_events.send(key=customer_id.encode(), value=recheck)


def _ref_agent(ns: str) -> None:
    async def on_refs(stream: Any) -> None:
        async for event in stream.events():
            m = orjson.loads(event.value)
            ref = event.key.decode()
            if m["op"] == "bind":
                await bind(ns, ref, m["customer_id"])
            elif m["op"] == "unhold":
                drop_held(ns, ref, m["event_id"])
            else:
                await lookup(ns, ref, m)

    on_refs.__name__ = on_refs.__qualname__ = f"on_{ns}_refs"
    app.agent(t.ref_topics[ns], name=f"keel.{ns}_refs", concurrency=1)(on_refs)


for _ns in NAMESPACES:
    _ref_agent(_ns)
