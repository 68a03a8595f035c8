"""An obviously-correct reference model of what keel should show (docs/contract.md §4, §5, §6).

Computed straight from the *set* of events, the way a person would read the contract: dedupe
by ``event_id``, find each event's customer, group events per entity, take the latest by
``(occurred_at, event_id)``, evaluate each signal rule over pairs of entities. It shares no code
with streams/domain/state.py, streams/domain/join.py or streams/domain/signals.py (only their
settings classes), so
a property test that compares keel's pipeline with it checks the design, not a copy of itself.

What it leaves out, on purpose:

- ``version`` and ``updated_at`` (they depend on arrival, §5) and each signal's ``detail``
  (wording, not a rule; tests/unit/test_signals.py reads it). :func:`content` strips the same
  from a real view, so ``content(view(state)) == expected_views(...)[customer_id]``.
- Retention is applied at the end (open entities plus the ``limits.keep_closed`` most recent
  closed ones). keel prunes as it goes, so the two agree only while no event arrives for an
  entity after keel forgot it: keep histories smaller than the limits to compare exactly.

It assumes each order, e-mail and phone belongs to one customer (tests/strategies.py makes it
so) and raises ``AmbiguousHistory`` otherwise, as keel's first-bind-wins has no single answer.
One contact's identifiers may point at different customers (its order is A's, its e-mail
B's): each event belongs to the customer of its strongest known reference — its order, else
its e-mail, else its phone, else its case — whatever became known first, and the other
customer shows no trace of it (not in ``contacts``, not in ``last_event_at``, no signal).
"""

from __future__ import annotations

import re
from collections import defaultdict
from fnmatch import fnmatchcase
from typing import Any

from streams.domain.signals import DEFAULT_WINDOWS, Windows
from streams.domain.state import DEFAULT_LIMITS, Limits

Event = dict[str, Any]
KindEvent = tuple[str, Event]
View = dict[str, Any]


class AmbiguousHistory(ValueError):
    """A reference (order, e-mail, phone, case) belongs to two customers in one history."""


def content(view: View) -> View:
    """A real CustomerState without what the oracle leaves out (version, updated_at, details)."""
    out = {k: v for k, v in view.items() if k not in ("version", "updated_at")}
    out["signals"] = [{k: v for k, v in s.items() if k != "detail"} for s in view["signals"]]
    out["identity_guards"] = [
        {k: v for k, v in g.items() if k != "why"} for g in view.get("identity_guards", ())
    ]
    return out


def expected_views(
    events: list[KindEvent],
    now_ms: int,
    limits: Limits = DEFAULT_LIMITS,
    windows: Windows = DEFAULT_WINDOWS,
) -> dict[str, View]:
    """Every customer's expected state at ``now_ms``, keyed by customer id.

    A customer appears once at least one event resolves to it; events that never resolve
    (a shipment whose order never came, a contact nothing identifies) appear nowhere.
    """
    unique: dict[str, KindEvent] = {}
    for kind, event in events:
        unique.setdefault(event["event_id"], (kind, event))
    mine: dict[str, list[KindEvent]] = defaultdict(list)
    for kind, event, customer_id in _resolve(list(unique.values())):
        mine[customer_id].append((kind, event))
    identities = expected_identities(list(unique.values()))
    return {
        customer_id: _customer(customer_id, evs, now_ms, limits, windows)
        | identities.get(customer_id, {"linked": [], "identity_guards": []})
        for customer_id, evs in sorted(mine.items())
    }


#: KEEL_IDENTITY_BLOCKLIST's default
BLOCKLIST = ("noreply@*", "no-reply@*", "+0000*")


def expected_identities(
    events: list[KindEvent], shared_after: int = 3, blocklist: tuple[str, ...] = BLOCKLIST
) -> dict[str, dict[str, list[dict]]]:
    """Each customer's ``linked`` and ``identity_guards`` (without ``why``), from the events.

    An identifier (normalised e-mail or phone of an order, or of a contact naming its
    customer) is *with* each customer id that made it known, since that customer's earliest
    such event. Blocked (a block-list pattern matches): no links, BLOCKED for each. With more
    than ``shared_after`` customers: no links, SHARED for each. Otherwise every two of them
    are linked, since the later of their first times.
    """
    first: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    seen: set[str] = set()
    for kind, e in events:
        if e["event_id"] in seen:
            continue
        seen.add(e["event_id"])
        if kind == "order":
            found = [
                ("EMAIL", _email(e["customer_email"])),
                ("PHONE", _phone(e["customer_phone"])),
            ]
        elif kind == "contact" and e["customer_id"]:
            found = [("EMAIL", _email(e["email"])), ("PHONE", _phone(e["phone"]))]
        else:
            continue
        for typ, value in found:
            if value is not None:
                who = first[(typ, value)]
                at = who.get(e["customer_id"])
                when = e["occurred_at"]
                who[e["customer_id"]] = when if at is None else min(at, when)
    out: dict[str, dict[str, list[dict]]] = defaultdict(
        lambda: {"linked": [], "identity_guards": []}
    )
    for (typ, value), who in sorted(first.items()):
        via = {"type": typ, "value": value}
        guard = None
        if any(fnmatchcase(value, p) for p in blocklist):
            guard = "BLOCKED"
        elif len(who) > shared_after:
            guard = "SHARED"
        for a in who:
            if guard:
                out[a]["identity_guards"].append({"via": via, "guard": guard})
                continue
            for b in who:
                if a != b:
                    out[a]["linked"].append(
                        {"customer_id": b, "via": via, "since": max(who[a], who[b])}
                    )
    for x in out.values():
        x["linked"].sort(key=lambda x: (x["customer_id"], x["via"]["type"], x["via"]["value"]))
        x["identity_guards"].sort(key=lambda x: (x["via"]["type"], x["via"]["value"]))
    return dict(out)


def expected_contacts(
    events: list[KindEvent], shared_after: int = 3, blocklist: tuple[str, ...] = BLOCKLIST
) -> tuple[dict[str, str], dict[str, list[dict]]]:
    """``(placed, unmatched)`` of the contacts that do not name their customer: contact id ->
    its customer, and contact id -> why it is unmatched (``GET /unmatched``'s ``why``).

    For histories of orders, named contacts and one-event contacts (their re-sends aside):
    a contact is its order's customer's; else that of its e-mail, then its phone, if that
    identifier is known for exactly one customer; an identifier known for several (more than
    ``shared_after``: SHARED, no candidates; else LINKED, those customers) names no one. A
    contact none of whose references name anyone, but that has such an identifier, is
    unmatched; one without either waits (in neither).
    """
    unique: dict[str, KindEvent] = {}
    for kind, event in events:
        unique.setdefault(event["event_id"], (kind, event))
    who: dict[tuple[str, str], set[str]] = defaultdict(set)
    order_owner: dict[str, str] = {}
    for kind, e in unique.values():
        if kind == "order":
            order_owner[e["order_id"]] = e["customer_id"]
            found = [("EMAIL", _email(e["customer_email"])), ("PHONE", _phone(e["customer_phone"]))]
        elif kind == "contact" and e["customer_id"]:
            found = [("EMAIL", _email(e["email"])), ("PHONE", _phone(e["phone"]))]
        else:
            continue
        for typ, value in found:
            if value is not None and not any(fnmatchcase(value, p) for p in blocklist):
                who[(typ, value)].add(e["customer_id"])
    placed: dict[str, str] = {}
    unmatched: dict[str, list[dict]] = {}
    for kind, e in unique.values():
        if kind != "contact" or e["customer_id"]:
            continue
        if e["order_id"] in order_owner:
            placed[e["contact_id"]] = order_owner[e["order_id"]]
            continue
        why = []
        for typ, value in (("EMAIL", _email(e["email"])), ("PHONE", _phone(e["phone"]))):
            ids = who.get((typ, value or ""))
            if not ids:
                continue
            if len(ids) == 1:
                placed[e["contact_id"]] = next(iter(ids))
                break
            shared = len(ids) > shared_after
            why.append({"type": typ, "value": value, "guard": "SHARED" if shared else "LINKED",
                        "candidates": [] if shared else sorted(ids)})  # fmt: skip
        else:
            if why:
                unmatched[e["contact_id"]] = why
    return placed, unmatched


def resolved_event_ids(events: list[KindEvent]) -> set[str]:
    """The ids of the events that reach a customer (the rest wait until they expire)."""
    unique: dict[str, KindEvent] = {}
    for kind, event in events:
        unique.setdefault(event["event_id"], (kind, event))
    return {event["event_id"] for _, event, _ in _resolve(list(unique.values()))}


# --- §4: whose event is it -----------------------------------------------------------------


def _email(s: str | None) -> str | None:
    return (s.strip().lower() or None) if s is not None else None


def _phone(s: str | None) -> str | None:
    if s is None:
        return None
    digits = re.sub(r"\D", "", s)
    if not digits:
        return None
    return "+" + digits if s.strip().startswith("+") else digits


def _resolve(events: list[KindEvent]) -> list[tuple[str, Event, str]]:
    """``(kind, event, customer_id)`` for every event that reaches a customer.

    References become known from orders (their id, e-mail, phone), from contacts that name
    their customer (their e-mail, phone) and from any contact event that reached a customer
    (its case id); repeat until nothing new resolves, since each newly attached contact can
    make its case id known to other events of that case.
    """
    owner: dict[tuple[str, str], str] = {}

    def know(ns: str, key: str | None, customer_id: str) -> None:
        if key is None:
            return
        if owner.setdefault((ns, key), customer_id) != customer_id:
            raise AmbiguousHistory(f"{ns} {key!r} belongs to {owner[(ns, key)]} and {customer_id}")

    for kind, e in events:
        if kind == "order":
            know("order", e["order_id"], e["customer_id"])
            know("email", _email(e["customer_email"]), e["customer_id"])
            know("phone", _phone(e["customer_phone"]), e["customer_id"])
        elif kind == "contact" and e["customer_id"]:
            know("email", _email(e["email"]), e["customer_id"])
            know("phone", _phone(e["phone"]), e["customer_id"])

    def customer_of(kind: str, e: Event) -> str | None:
        if kind == "order":
            return str(e["customer_id"])
        if kind == "shipment":
            return owner.get(("order", e["order_id"]))
        if e["customer_id"]:
            return str(e["customer_id"])
        for ref in (
            ("order", e["order_id"]),
            ("email", _email(e["email"])),
            ("phone", _phone(e["phone"])),
            ("contact", e["contact_id"]),
        ):
            if ref[1] is not None and ref in owner:
                return owner[ref]  # type: ignore[index]
        return None

    attached: dict[str, tuple[str, Event, str]] = {}
    progress = True
    while progress:
        progress = False
        for kind, e in events:
            if e["event_id"] in attached:
                continue
            customer_id = customer_of(kind, e)
            if customer_id is None:
                continue
            attached[e["event_id"]] = (kind, e, customer_id)
            progress = True
            if kind == "contact":
                know("contact", e["contact_id"], customer_id)
    return list(attached.values())


# --- §5: the state -------------------------------------------------------------------------


def _stamp(e: Event) -> tuple[int, str]:
    return e["occurred_at"], e["event_id"]


def _latest(evs: list[Event]) -> Event:
    return max(evs, key=_stamp)


def _latest_value(evs: list[Event], name: str) -> Any:
    """The field's value in the latest event that carries it (None if none does)."""
    having = [e for e in evs if e[name] is not None]
    return _latest(having)[name] if having else None


def _started(evs: list[Event], start_type: str) -> int:
    """The latest start event's time (PLACED/OPENED); before it arrives, the earliest event's."""
    starts = [e["occurred_at"] for e in evs if e["type"] == start_type]
    return max(starts) if starts else min(e["occurred_at"] for e in evs)


def _by(evs: list[KindEvent], kind: str, key: str) -> dict[str, list[Event]]:
    groups: dict[str, list[Event]] = defaultdict(list)
    for k, e in evs:
        if k == kind:
            groups[e[key]].append(e)
    return groups


def _keep(entities: list[dict], id_key: str, closed: set[str], keep: int) -> list[dict]:
    """All open entities and the ``keep`` closed ones with the greatest (updated_at, id)."""
    done = sorted(
        (e for e in entities if e["status"] in closed),
        key=lambda e: (e["updated_at"], e[id_key]),
        reverse=True,
    )
    dropped = {e[id_key] for e in done[keep:]}
    return [e for e in entities if e[id_key] not in dropped]


def _customer(
    customer_id: str, evs: list[KindEvent], now_ms: int, limits: Limits, windows: Windows
) -> View:
    shipments = []
    for shipment_id, sevs in _by(evs, "shipment", "shipment_id").items():
        top = _latest(sevs)
        shipments.append(
            {
                "shipment_id": shipment_id,
                "status": top["type"],
                "carrier": top["carrier"],
                "tracking_number": _latest_value(sevs, "tracking_number"),
                "expected_by": _latest_value(sevs, "expected_by"),
                "replaces_shipment_id": _latest_value(sevs, "replaces_shipment_id"),
                "updated_at": top["occurred_at"],
                # for the sort and the signals only:
                "_order_id": top["order_id"],
                "_first": min(e["occurred_at"] for e in sevs),
                "_lost": [e["occurred_at"] for e in sevs if e["type"] == "LOST"],
                "_delivered": [e["occurred_at"] for e in sevs if e["type"] == "DELIVERED"],
            }
        )

    orders = []
    for order_id, oevs in _by(evs, "order", "order_id").items():
        top = _latest(oevs)
        orders.append(
            {
                "order_id": order_id,
                "status": top["type"],
                "channel": top["channel"],
                "placed_at": _started(oevs, "PLACED"),
                "updated_at": top["occurred_at"],
                "total_cents": top["total_cents"],
                "currency": top["currency"],
                "items": top["items"],
                "promised_by": _latest_value(oevs, "promised_by"),
            }
        )
    orders = _keep(orders, "order_id", {"CANCELLED", "COMPLETED"}, limits.keep_closed)
    orders.sort(key=lambda o: (o["placed_at"], o["order_id"]))
    for o in orders:
        of_order = [s for s in shipments if s["_order_id"] == o["order_id"]]
        o["shipments"] = sorted(of_order, key=lambda s: (s["_first"], s["shipment_id"]))

    contacts = []
    for contact_id, cevs in _by(evs, "contact", "contact_id").items():
        top = _latest(cevs)
        notes = sorted((_stamp(e), e["agent"], e["note"]) for e in cevs if e["note"] is not None)
        kept_notes = notes[len(notes) - limits.max_notes :] if limits.max_notes else []
        resolved = [e["occurred_at"] for e in cevs if e["type"] == "RESOLVED"]
        contacts.append(
            {
                "contact_id": contact_id,
                "status": "RESOLVED" if top["type"] == "RESOLVED" else "OPEN",
                "channel": top["channel"],
                "kind": top["kind"],
                "topic": _latest_value(cevs, "topic"),
                "order_id": _latest_value(cevs, "order_id"),
                "agent": _latest_value(cevs, "agent"),
                "opened_at": _started(cevs, "OPENED"),
                "updated_at": top["occurred_at"],
                "notes": [{"at": s[0], "agent": a, "text": t} for s, a, t in kept_notes],
                "_resolved": max(resolved) if resolved else None,
            }
        )
    contacts = _keep(contacts, "contact_id", {"RESOLVED"}, limits.keep_closed)
    contacts.sort(key=lambda c: (c["opened_at"], c["contact_id"]))

    signals = _signals(orders, contacts, now_ms, windows)

    order_events = [e for k, e in evs if k == "order"]
    named = [e for k, e in evs if k == "contact" and e["customer_id"] == customer_id]
    emails = {_email(e["customer_email"]) for e in order_events} | {
        _email(e["email"]) for e in named
    }
    phones = {_phone(e["customer_phone"]) for e in order_events} | {
        _phone(e["phone"]) for e in named
    }
    last_event_at: dict[str, int] = {}
    for _, e in sorted(evs, key=lambda ke: ke[1]["occurred_at"]):
        last_event_at[e["source"]] = e["occurred_at"]
    public_orders = [{**o, "shipments": [_public(s) for s in o["shipments"]]} for o in orders]
    public_contacts = [_public(c) for c in contacts]
    return {
        "customer_id": customer_id,
        "name": _latest_value(order_events, "customer_name") if order_events else None,
        "emails": sorted(x for x in emails if x is not None),
        "phones": sorted(x for x in phones if x is not None),
        "orders": public_orders,
        "contacts": public_contacts,
        "signals": signals,
        "open_orders": sum(o["status"] in ("PLACED", "AMENDED") for o in orders),
        "open_contacts": sum(c["status"] == "OPEN" for c in contacts),
        "total_spent_cents": sum(o["total_cents"] for o in orders if o["status"] != "CANCELLED"),
        "last_event_at": last_event_at,
    }


def _public(entity: dict) -> dict:
    return {k: v for k, v in entity.items() if not k.startswith("_")}


# --- §6: the signals, rule by rule over pairs -----------------------------------------------


def _lines(order: dict) -> dict[str, int]:
    total: dict[str, int] = defaultdict(int)
    for line in order["items"]:
        total[line["sku"]] += line["quantity"]
    return dict(total)


def _signals(orders: list[dict], contacts: list[dict], now: int, w: Windows) -> list[dict]:
    found: dict[tuple, dict] = {}

    def raise_(type_: str, at: int, order: Any = None, shipment: Any = None, contact: Any = None):
        found[(type_, order, shipment, contact)] = {
            "type": type_,
            "order_id": order,
            "shipment_id": shipment,
            "contact_id": contact,
            "raised_at": at,
        }

    # DUPLICATE_ORDER: any two non-cancelled orders, same non-empty lines, placed within the
    # window; the signal is on the later one by (placed_at, order_id).
    live = [o for o in orders if o["status"] != "CANCELLED" and _lines(o)]
    for a in live:
        for b in live:
            earlier, later = sorted((a, b), key=lambda o: (o["placed_at"], o["order_id"]))
            if (
                a is not b
                and _lines(a) == _lines(b)
                and later["placed_at"] - earlier["placed_at"] <= w.duplicate_order_ms
            ):
                raise_("DUPLICATE_ORDER", later["placed_at"], order=later["order_id"])

    for o in orders:
        for s in o["shipments"]:
            # SHIPMENT_LATE: not DELIVERED/RETURNED and the clock is past its deadline.
            deadline = s["expected_by"] if s["expected_by"] is not None else o["promised_by"]
            arrived = s["status"] in ("DELIVERED", "RETURNED")
            if not arrived and deadline is not None and now > deadline:
                raise_("SHIPMENT_LATE", deadline, order=o["order_id"], shipment=s["shipment_id"])
            # LOST_SHIPMENT_DELIVERED: some DELIVERED later than some LOST; dated by the latest
            # DELIVERED; gone once a contact about the order is resolved after that.
            if any(d > lost for d in s["_delivered"] for lost in s["_lost"]):
                at = max(s["_delivered"])
                handled = any(
                    c["order_id"] == o["order_id"]
                    and c["status"] == "RESOLVED"
                    and c["_resolved"] > at
                    for c in contacts
                )
                if not handled:
                    raise_(
                        "LOST_SHIPMENT_DELIVERED",
                        at,
                        order=o["order_id"],
                        shipment=s["shipment_id"],
                    )

    # REPEAT_CONTACT: a later contact about the same order (contacts without an order: the
    # same topic) opened within the window of an earlier one; while any of them is open.
    def about(c: dict) -> tuple[str, str] | None:
        if c["order_id"] is not None:
            return ("order", c["order_id"])
        return ("topic", c["topic"]) if c["topic"] is not None else None

    for later in contacts:
        key = (later["opened_at"], later["contact_id"])
        firsts = [
            c
            for c in contacts
            if about(c) is not None
            and about(c) == about(later)
            and (c["opened_at"], c["contact_id"]) < key
            and later["opened_at"] - c["opened_at"] <= w.repeat_contact_ms
        ]
        if firsts and any(c["status"] == "OPEN" for c in [*firsts, later]):
            raise_(
                "REPEAT_CONTACT",
                later["opened_at"],
                order=later["order_id"],
                contact=later["contact_id"],
            )

    # COMPLAINT_UNRESOLVED: a complaint still open once the window after its opening passed.
    for c in contacts:
        due = c["opened_at"] + w.complaint_unresolved_ms
        if c["kind"] == "COMPLAINT" and c["status"] == "OPEN" and now > due:
            raise_("COMPLAINT_UNRESOLVED", due, order=c["order_id"], contact=c["contact_id"])

    def order_key(ident: tuple) -> tuple:
        return tuple((v is not None, v or "") for v in ident)

    return [found[k] for k in sorted(found, key=order_key)]
