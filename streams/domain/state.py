"""CustomerState: the pure merge of one input event into a customer's state (docs/contract.md §5).

The agents call :func:`apply_event` for every event routed to a customer and keep the result,
as JSON, in a table; :func:`view` turns it into the public CustomerState (and
streams/domain/bounding.py keeps a stored state under Kafka's record size). Nothing here
touches Faust, I/O or the clock, so the merge can be property-tested and replayed anywhere.

Why it is order-independent and idempotent *by construction* (docs/contract.md §4): every stored
value is a lattice merge — the maximum by *stamp* ``[occurred_at, event_id]``, a min/max of
timestamps, a set union or a top-k — so the state depends only on the set of events applied,
never on their interleaving or duplicates. Only ``version`` and ``updated_at`` depend on
arrival. The one exception is retention: a state keeps every open order and contact but only the
``Limits.keep_closed`` most recent closed ones of each (an order takes its shipments along).
A dropped entity is *retired*: ``_retired`` keeps its id and the stamp of its last event (the
``Limits.keep_retired`` most recent per kind), so an event no later than that — a re-send, or
a late one that would not have changed what it showed — is recognised and changes nothing,
as is a shipment event no later than its retired order's last event (later ones wait, as
for an order not seen yet); the shipments an order takes along are retired with it. Only an
event *later* than a retired entity's last one starts it afresh, as does any event of an
entity retired beyond ``keep_retired``.

Stored layout (plain JSON; keys starting with ``_`` never reach the view)::

    {"customer_id": "c-1", "version": 7, "updated_at": ms, "signals": [...],
     "emails": ["ann@example.com"], "phones": ["+4917012345"], "last_event_at": {"erp": ms},
     "_name": [occurred_at, event_id, "Ann"] or None,
     "_orders": {order_id: entity}, "_shipments": {shipment_id: entity},
     "_contacts": {contact_id: entity},
     "_retired": {"order": {id: stamp}, "shipment": {id: stamp}, "contact": {id: stamp}},
     "_joined": {contact_id: [event, ...]}, "_moved": {contact_id: [customer_id, rank]}}

``_since`` (identifier -> its earliest event time here) and ``_ids`` (identifier -> the
newest identity record keel told this customer of) are streams/domain/links.py's: what the state
shows as ``linked`` and ``identity_guards``.

``_joined`` and ``_moved`` (and a contact's ``via``) say where a joined contact was placed and
where it moved (streams/domain/placement.py); both are absent while unused.

Every entity (order, shipment, contact) holds ``at``, the stamp of its latest event (so
``at[0]`` is its updated_at), ``type``, that event's type, ``first``, its earliest occurred_at
(orders and contacts: only until their PLACED/OPENED is seen), the fields copied from the latest
event, and its nullable fields. A nullable field is absent while never set, a bare value when
the latest event carried it (its stamp is ``at``), else ``[occurred_at, event_id, value]`` from
the older event that did: sharing ``at`` keeps a typical state under 3 KB. Read one with
:func:`field`. Per kind:

- order: channel, items ``[[sku, quantity, unit_price_cents], ...]``, total_cents, currency;
  nullable promised_by; ``placed``, occurred_at of the latest PLACED.
- shipment: order_id, carrier; nullable tracking_number, expected_by, replaces_shipment_id;
  ``lost``, the earliest LOST; ``delivered``/``returned``, the latest DELIVERED/RETURNED.
  Shipments are kept apart from orders, so one whose order is not here yet waits and shows
  once the order is.
- contact: channel, kind; nullable topic, order_id, agent; ``opened``, the latest OPENED;
  ``resolved``, the latest RESOLVED; ``notes`` ``[[occurred_at, event_id, agent, text], ...]``,
  ascending, one per event_id (that of its latest occurred_at), the newest
  ``Limits.max_notes`` only.

Re-sent ids (docs/contract.md §3): an event_id is one event. Sent again under another
``occurred_at``, its version with the latest stamp is the one that counts wherever one event
wins (an entity's latest event, a contact's note), so no order of arrival makes it count twice
or lets an older version win; min/max times (``first``, ``lost``, ``placed`` ...) take each
version as a sighting, which is order-independent too.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streams.domain.identity import normalize_email, normalize_phone
from streams.domain.links import links_view

State = dict[str, Any]
Entity = dict[str, Any]
Event = Mapping[str, Any]

OPEN_ORDER_TYPES = frozenset({"PLACED", "AMENDED"})
CLOSED_ORDER_TYPES = frozenset({"CANCELLED", "COMPLETED"})
CLOSED_CONTACT_TYPES = frozenset({"RESOLVED"})


@dataclass(frozen=True)
class _Fields:
    """How an entity takes an event's fields (docs/contract.md §5)."""

    latest: tuple[str, ...]  # copied from its latest event
    nullable: tuple[str, ...]  # the latest non-null value (scalars only: see field())
    start: tuple[str, str] | None = None  # (event type, key) of the event that dates it


_ORDER = _Fields(("channel", "total_cents", "currency"), ("promised_by",), ("PLACED", "placed"))
_SHIPMENT = _Fields(
    ("order_id", "carrier"), ("tracking_number", "expected_by", "replaces_shipment_id")
)
_CONTACT = _Fields(("channel", "kind"), ("topic", "order_id", "agent"), ("OPENED", "opened"))


@dataclass(frozen=True)
class Limits:
    """How much history one state keeps (docs/contract.md §5 "Kept"), e.g.
    ``Limits(keep_closed=10)``."""

    keep_closed: int = 50  # closed orders / resolved contacts kept, most recent by updated_at
    max_notes: int = 20  # notes kept per contact, newest
    keep_retired: int = 1000  # dropped orders / contacts remembered per kind, most recent

    def __post_init__(self) -> None:
        if self.keep_closed < 0 or self.max_notes < 0 or self.keep_retired < 0:
            raise ValueError(f"limits must not be negative: {self}")


DEFAULT_LIMITS = Limits()


def empty_state(customer_id: str) -> State:
    """The state of a customer no event has been applied to yet (version 0)."""
    return {
        "customer_id": customer_id,
        "version": 0,
        "updated_at": 0,
        "signals": [],
        "emails": [],
        "phones": [],
        "last_event_at": {},
        "_name": None,
        "_orders": {},
        "_shipments": {},
        "_contacts": {},
    }


def apply_event(
    state: State, kind: str, event: Event, now_ms: int, limits: Limits = DEFAULT_LIMITS
) -> tuple[State, bool]:
    """Merge one event of ``kind`` ("order", "shipment", "contact") into ``state``.

    Returns ``(new_state, changed)``. ``state`` is never mutated: only the touched entity and
    the dicts holding it are copied. When the event adds nothing (a duplicate, a stale value)
    ``changed`` is False and ``state`` itself is returned; otherwise ``version`` goes up by one
    and ``updated_at`` becomes ``now_ms``. Closing an order or contact applies ``limits``.

    >>> event = {"event_id": "e-1", "occurred_at": 1767225600000, "source": "webshop",
    ...          "type": "PLACED", "order_id": "o-1", "customer_id": "c-1", "channel": "WEB",
    ...          "items": [], "total_cents": 0, "currency": "EUR", "promised_by": None,
    ...          "customer_name": None, "customer_email": None, "customer_phone": None}
    >>> state, changed = apply_event(empty_state("c-1"), "order", event, now_ms=1767225601000)
    >>> changed, state["version"], view(state)["open_orders"]
    (True, 1, 1)
    >>> apply_event(state, "order", event, now_ms=1767225602000) == (state, False)
    True
    """
    merge = _MERGES.get(kind)
    if merge is None:
        raise ValueError(f"unknown event kind {kind!r}")
    new = dict(state)
    merge(new, event, limits)
    source, occurred_at = event["source"], event["occurred_at"]
    seen = state["last_event_at"].get(source)
    if seen is None or occurred_at > seen:
        new["last_event_at"] = {**state["last_event_at"], source: occurred_at}
    if new == state:  # cheap: untouched parts are the same objects
        return state, False
    new["version"] = state["version"] + 1
    new["updated_at"] = now_ms
    return new, True


def field(entity: Entity, name: str) -> Any:
    """The current value of an entity's nullable field (None while never set)."""
    value = entity.get(name)
    return value[2] if isinstance(value, list) else value


def order_lines(order: Entity) -> dict[str, int]:
    """An order's lines as sku -> quantity (what DUPLICATE_ORDER compares)."""
    lines: dict[str, int] = {}
    for sku, quantity, _price in order["items"]:
        lines[sku] = lines.get(sku, 0) + quantity
    return lines


def placed_at(order: Entity) -> int:
    """When the order was placed; the earliest event we have until its PLACED arrives."""
    at: int = order["placed"] if "placed" in order else order["first"]
    return at


def contact_status(contact: Entity) -> str:
    return "RESOLVED" if contact["type"] in CLOSED_CONTACT_TYPES else "OPEN"


def opened_at(contact: Entity) -> int:
    """When the contact was opened; the earliest event we have until its OPENED arrives."""
    at: int = contact["opened"] if "opened" in contact else contact["first"]
    return at


def view(state: State) -> dict[str, Any]:
    """The public CustomerState of docs/contract.md §5 (timestamps as int ms), ready for Avro or
    JSON."""
    shipments: dict[str, list[tuple[int, str, Entity]]] = {}
    for shipment_id, s in state["_shipments"].items():
        shipments.setdefault(s["order_id"], []).append((s["first"], shipment_id, s))
    orders = [
        _order_view(order_id, o, sorted(shipments.get(order_id, ())))
        for order_id, o in sorted(
            state["_orders"].items(), key=lambda kv: (placed_at(kv[1]), kv[0])
        )
    ]
    contacts = [
        _contact_view(contact_id, c)
        for contact_id, c in sorted(
            state["_contacts"].items(), key=lambda kv: (opened_at(kv[1]), kv[0])
        )
    ]
    name = state["_name"]
    linked, guards = links_view(state)
    return {
        "customer_id": state["customer_id"],
        "name": name[2] if name else None,
        "emails": list(state["emails"]),
        "phones": list(state["phones"]),
        "orders": orders,
        "contacts": contacts,
        "signals": list(state.get("signals") or ()),
        "open_orders": sum(o["status"] in OPEN_ORDER_TYPES for o in orders),
        "open_contacts": sum(c["status"] == "OPEN" for c in contacts),
        "total_spent_cents": sum(o["total_cents"] for o in orders if o["status"] != "CANCELLED"),
        "last_event_at": last_event_at_of(state),
        "updated_at": state["updated_at"],
        "version": state["version"],
        "linked": linked,
        "identity_guards": guards,
    }


def last_event_at_of(state: State) -> dict[str, int]:
    """``last_event_at`` with the events of contacts that may still move
    (streams/domain/placement.py
    keeps those apart, so that a move takes their times along)."""
    out = dict(state["last_event_at"])
    for events in (state.get("_joined") or {}).values():
        for e in events:
            if e["source"] not in out or e["occurred_at"] > out[e["source"]]:
                out[e["source"]] = e["occurred_at"]
    return out


def _order_view(
    order_id: str, o: Entity, shipments: list[tuple[int, str, Entity]]
) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "status": o["type"],
        "channel": o["channel"],
        "placed_at": placed_at(o),
        "updated_at": o["at"][0],
        "total_cents": o["total_cents"],
        "currency": o["currency"],
        "items": [
            {"sku": sku, "quantity": quantity, "unit_price_cents": price}
            for sku, quantity, price in o["items"]
        ],
        "promised_by": field(o, "promised_by"),
        "shipments": [_shipment_view(shipment_id, s) for _, shipment_id, s in shipments],
    }


def _contact_view(contact_id: str, c: Entity) -> dict[str, Any]:
    return {
        "contact_id": contact_id,
        "status": contact_status(c),
        "channel": c["channel"],
        "kind": c["kind"],
        "topic": field(c, "topic"),
        "order_id": field(c, "order_id"),
        "agent": field(c, "agent"),
        "opened_at": opened_at(c),
        "updated_at": c["at"][0],
        "notes": [
            {"at": at, "agent": agent, "text": text} for at, _event_id, agent, text in c["notes"]
        ],
    }


def _shipment_view(shipment_id: str, s: Entity) -> dict[str, Any]:
    return {
        "shipment_id": shipment_id,
        "status": s["type"],
        "carrier": s["carrier"],
        "tracking_number": field(s, "tracking_number"),
        "expected_by": field(s, "expected_by"),
        "replaces_shipment_id": field(s, "replaces_shipment_id"),
        "updated_at": s["at"][0],
    }


# --- merges: each replaces (never mutates) the parts of ``new`` it changes -------------------


def _merge_order(new: State, event: Event, limits: Limits) -> None:
    order_id = event["order_id"]
    if not _retired_before(new, "order", order_id, event):
        orders = {**new["_orders"]}
        order, latest = _merge_entity(orders.get(order_id), event, _ORDER)
        if latest:
            order["items"] = [
                [i["sku"], i["quantity"], i["unit_price_cents"]] for i in event["items"]
            ]
        orders[order_id] = order
        if order["type"] in CLOSED_ORDER_TYPES:
            dropped = _retain(orders, CLOSED_ORDER_TYPES, limits.keep_closed)
            if dropped:
                kept: dict[str, Entity] = {}
                gone: dict[str, Entity] = {}
                for k, s in new["_shipments"].items():
                    (gone if s["order_id"] in dropped else kept)[k] = s
                new["_shipments"] = kept
                remember_retired(new, "order", dropped, limits.keep_retired)
                gone_at = {k: s["at"] for k, s in gone.items()}
                remember_retired(new, "shipment", gone_at, limits.keep_retired)
        new["_orders"] = orders

    name = event.get("customer_name")
    if name is not None:
        stamp = [event["occurred_at"], event["event_id"]]
        if new["_name"] is None or stamp > new["_name"][:2]:
            new["_name"] = [*stamp, name]
    new["emails"] = _with(new["emails"], normalize_email(event.get("customer_email")))
    new["phones"] = _with(new["phones"], normalize_phone(event.get("customer_phone")))


def _merge_shipment(new: State, event: Event, limits: Limits) -> None:
    shipment_id = event["shipment_id"]
    if _retired_before(new, "shipment", shipment_id, event) or _retired_before(
        new, "order", event["order_id"], event
    ):
        return  # it went with its order (or would have): whether the order is back or not
    shipment, _ = _merge_entity(new["_shipments"].get(shipment_id), event, _SHIPMENT)
    occurred_at, kind = event["occurred_at"], event["type"]
    if kind == "LOST":
        _keep_min(shipment, "lost", occurred_at)
    elif kind in ("DELIVERED", "RETURNED"):
        _keep_max(shipment, kind.lower(), occurred_at)
    new["_shipments"] = {**new["_shipments"], shipment_id: shipment}


def _merge_contact(new: State, event: Event, limits: Limits) -> None:
    contact_id = event["contact_id"]
    if not _retired_before(new, "contact", contact_id, event):
        contacts = {**new["_contacts"]}
        old = contacts.get(contact_id)
        contact, _ = _merge_entity(old, event, _CONTACT)
        if event["type"] == "RESOLVED":
            _keep_max(contact, "resolved", event["occurred_at"])
        contact["notes"] = _with_note(old["notes"] if old else [], event, limits.max_notes)
        contacts[contact_id] = contact
        if contact["type"] in CLOSED_CONTACT_TYPES:
            dropped = _retain(contacts, CLOSED_CONTACT_TYPES, limits.keep_closed)
            remember_retired(new, "contact", dropped, limits.keep_retired)
        new["_contacts"] = contacts

    if event.get("customer_id") == new["customer_id"]:
        new["emails"] = _with(new["emails"], normalize_email(event.get("email")))
        new["phones"] = _with(new["phones"], normalize_phone(event.get("phone")))


_MERGES = {"order": _merge_order, "shipment": _merge_shipment, "contact": _merge_contact}


def _merge_entity(old: Entity | None, event: Event, fields: _Fields) -> tuple[Entity, bool]:
    """Merge what every kind shares into a fresh entity; also says whether the event is latest."""
    occurred_at = event["occurred_at"]
    stamp = [occurred_at, event["event_id"]]
    entity: Entity = dict(old) if old else {}
    if fields.start is not None and event["type"] == fields.start[0]:
        entity.pop("first", None)  # dated by its start event from now on
        _keep_max(entity, fields.start[1], occurred_at)
    elif fields.start is None or fields.start[1] not in entity:
        _keep_min(entity, "first", occurred_at)

    at = entity.get("at")
    if at is None or stamp > at:
        entity["at"], entity["type"] = stamp, event["type"]
        for f in fields.latest:
            entity[f] = event[f]
        for f in fields.nullable:
            value = event.get(f)
            if value is not None:
                entity[f] = value
            elif at is not None and f in entity and not isinstance(entity[f], list):
                entity[f] = [*at, entity[f]]  # it stays, but no longer shares the latest stamp
        return entity, True
    if stamp < at:
        for f in fields.nullable:
            value = event.get(f)
            current = entity.get(f)
            if value is not None and (
                current is None or (isinstance(current, list) and stamp > current[:2])
            ):
                entity[f] = [*stamp, value]
    return entity, False


def _retain(
    entities: dict[str, Entity], closed_types: frozenset[str], keep: int
) -> dict[str, list[Any]]:
    """Drop all but the ``keep`` most recent closed entities (in place).

    Returns the dropped ids with the stamp of each one's latest event.
    """
    closed = [(e["at"][0], k) for k, e in entities.items() if e["type"] in closed_types]
    if len(closed) <= keep:
        return {}
    closed.sort(reverse=True)
    return {k: entities.pop(k)["at"] for _, k in closed[keep:]}


def _retired_before(state: State, kind: str, entity_id: str, event: Event) -> bool:
    """Whether ``event`` is no later than the last event of a dropped entity it is about.

    Such an event was applied before the entity was dropped (a re-send), or would have
    changed nothing it showed: it is recognised, not taken for the start of a new entity.
    The answer depends only on the event and the record, never on whether the entity came
    back since, so sending it again never changes what the first time did.
    """
    stamp = state.get("_retired", {}).get(kind, {}).get(entity_id)
    return stamp is not None and [event["occurred_at"], event["event_id"]] <= stamp


def remember_retired(new: State, kind: str, dropped: dict[str, list[Any]], keep: int) -> None:
    """Add dropped entities' final stamps to ``_retired[kind]``; keep the ``keep`` latest."""
    if not dropped or not keep:
        return
    retired = dict(new.get("_retired") or {})
    stamps = dict(retired.get(kind) or {})
    for entity_id, stamp in dropped.items():
        if entity_id not in stamps or stamp > stamps[entity_id]:
            stamps[entity_id] = stamp
    while len(stamps) > keep:
        del stamps[min(stamps, key=lambda k: (stamps[k], k))]
    retired[kind] = stamps
    new["_retired"] = retired


def _keep_max(entity: Entity, key: str, value: int) -> None:
    if key not in entity or value > entity[key]:
        entity[key] = value


def _keep_min(entity: Entity, key: str, value: int) -> None:
    if key not in entity or value < entity[key]:
        entity[key] = value


def _note_key(note: list[Any]) -> tuple[int, str]:
    return note[0], note[1]


def _with_note(notes: list[list[Any]], event: Event, keep: int) -> list[list[Any]]:
    """``notes`` with ``event``'s note: one per event_id, that of its latest ``occurred_at``.

    An id re-sent under another ``occurred_at`` is one event (its latest stamp wins), so the
    note shows once and the same one whatever arrives first (docs/contract.md §3).
    """
    text, event_id = event.get("note"), event["event_id"]
    if text is None or not keep:
        return notes
    same = next((n for n in notes if n[1] == event_id), None)
    if same is not None and same[0] >= event["occurred_at"]:
        return notes
    notes = [n for n in notes if n is not same]
    insort(notes, [event["occurred_at"], event_id, event.get("agent"), text], key=_note_key)
    del notes[:-keep]
    return notes


def _with(values: list[str], value: str | None) -> list[str]:
    """``values`` (sorted, unique) with ``value`` added; the same list when nothing to add."""
    if value is None or value in values:
        return values
    return sorted([*values, value])
