"""Identity resolution (issue #14 §1): which customer ids share an e-mail or phone, and the guards.

Per identifier (a normalised e-mail or phone) keel keeps an *identity record* in the
identifier's own partition (the ``{ns}-identities`` tables, next to ``{ns}-owners``): each
customer id that made it known, with that customer's earliest event time with it ::

    {"v": 3, "m": {"c-1": 1767225600000, "c-2": 1767229200000}}   # links c-1 and c-2
    {"v": 4, "shared": 3}                                           # more than 3 customers

Customers bind an identifier with the ``occurred_at`` of every event that carries it earlier
than the state knew (``_since`` in the state), and the record keeps the minimum, so its
content depends only on the set of events. It is bounded: once more than
``KEEL_IDENTITY_SHARED_AFTER`` customer ids were seen with it, it is *shared* for good and
keeps no member list (a shop's phone, a family inbox): it links no one. A value matching a
``KEEL_IDENTITY_BLOCKLIST`` pattern (``noreply@*``) is never bound at all: it neither links
nor joins, and the state says why.

Every change of a record sends each member (a shared record: each customer that binds it)
an *identity message* with the full, current picture and the record's version; a state keeps
the newest version per identifier (``_ids``), so re-sent or reordered messages change
nothing and the final links depend only on the set of events. :func:`links_view` turns what
a state keeps into the public ``linked`` and ``identity_guards`` fields.

Nothing here touches Faust or Kafka.

    >>> r, changed = bind_record(None, "c-1", 5, shared_after=3)
    >>> r, _ = bind_record(r, "c-2", 9, shared_after=3)
    >>> r
    {'v': 2, 'm': {'c-1': 5, 'c-2': 9}}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from streams.domain.identity import normalize_email, normalize_phone
from streams.domain.join import EMAIL, PHONE

#: the namespaces whose references are identifiers of a person (they link customers)
IDENTIFIERS = (EMAIL, PHONE)
#: an identifier's type in the public state
TYPE_NAME = {EMAIL: "EMAIL", PHONE: "PHONE"}

Record = dict[str, Any]
State = dict[str, Any]


@dataclass(frozen=True)
class Guards:
    """When an identifier stops linking: ``Guards(shared_after=3, blocklist=("noreply@*",))``."""

    shared_after: int = 3  # KEEL_IDENTITY_SHARED_AFTER
    blocklist: tuple[str, ...] = ("noreply@*", "no-reply@*", "+0000*")  # KEEL_IDENTITY_BLOCKLIST

    def __post_init__(self) -> None:
        if self.shared_after < 1:
            raise ValueError(f"shared_after must be at least 1: {self}")


DEFAULT_GUARDS = Guards()


def blocked_by(value: str, patterns: tuple[str, ...]) -> str | None:
    """The block-list pattern ``value`` matches (case-sensitive on the normalised value), or None.

    >>> blocked_by("noreply@shop.example", ("noreply@*", "+0000*"))
    'noreply@*'
    """
    return next((p for p in patterns if fnmatchcase(value, p)), None)


def event_identifiers(customer_id: str, kind: str, event: dict) -> list[tuple[str, str, int]]:
    """``(ns, value, occurred_at)`` of the identifiers an event makes known for its customer:
    an order's ``customer_email``/``customer_phone``, a contact's e-mail/phone when it names
    the customer (the same ones streams/domain/state.py adds to ``emails``/``phones``)."""
    if kind == "order":
        email, phone = event.get("customer_email"), event.get("customer_phone")
    elif kind == "contact" and event.get("customer_id") == customer_id:
        email, phone = event.get("email"), event.get("phone")
    else:
        return []
    at = int(event["occurred_at"])
    out = []
    e, p = normalize_email(email), normalize_phone(phone)
    if e:
        out.append((EMAIL, e, at))
    if p:
        out.append((PHONE, p, at))
    return out


def note_identifiers(
    state: State, found: list[tuple[str, str, int]], blocklist: tuple[str, ...]
) -> tuple[State, list[tuple[str, str, int]]]:
    """``state`` with the identifiers' earliest times, and the binds to send.

    A bind goes out for an identifier the state did not know, or knew only from later: that
    makes the record's minimum the minimum over every event. A blocked identifier sends no
    bind; the state notes it as blocked (with the pattern) instead.
    """
    since = state.get("_since") or {}
    ids = state.get("_ids") or {}
    binds: list[tuple[str, str, int]] = []
    new_since, new_ids = None, None
    for ns, value, at in found:
        key = f"{ns}:{value}"
        if key in since and since[key] <= at:
            continue
        new_since = dict(new_since or since)
        new_since[key] = at
        pattern = blocked_by(value, blocklist)
        if pattern is None:
            binds.append((ns, value, at))
        elif key not in ids:
            new_ids = dict(new_ids or ids)
            new_ids[key] = {"v": 0, "blocked": pattern}
    if new_since is None:
        return state, binds
    new = {**state, "_since": new_since}
    if new_ids is not None:
        new["_ids"] = new_ids
    return new, binds


def bind_record(
    record: Record | None, customer_id: str, at: int, shared_after: int
) -> tuple[Record, bool]:
    """The record after ``customer_id`` bound it at ``at``; and whether it changed.

    >>> r = {"v": 1, "m": {"a": 1, "b": 1, "c": 1}}
    >>> bind_record(r, "d", 1, shared_after=3)
    ({'v': 2, 'shared': 3}, True)
    >>> bind_record({"v": 2, "shared": 3}, "e", 1, shared_after=3)
    ({'v': 2, 'shared': 3}, False)
    """
    if record is None:
        return {"v": 1, "m": {customer_id: at}}, True
    if "shared" in record:
        return record, False
    members = record["m"]
    if customer_id in members and members[customer_id] <= at:
        return record, False
    members = {**members, customer_id: at}
    if len(members) > shared_after:
        return {"v": record["v"] + 1, "shared": shared_after}, True
    return {"v": record["v"] + 1, "m": dict(sorted(members.items()))}, True


def forget_member(record: Record | None, customer_id: str) -> tuple[Record | None, bool]:
    """The record without an erased customer (None: nothing left, delete it); changed?

    A shared record keeps no members and stays shared (it did see that many people).
    """
    if record is None or "shared" in record or customer_id not in record["m"]:
        return record, False
    members = {k: v for k, v in record["m"].items() if k != customer_id}
    if not members:
        return None, True
    return {"v": record["v"] + 1, "m": members}, True


def recipients(before: Record | None, after: Record, binder: str) -> list[str]:
    """Who must hear of a bind's outcome: every member of the record (a record that just
    became shared: every member it had), and the binder."""
    members = set(after.get("m") or ())
    if "shared" in after and before is not None:
        members.update(before.get("m") or ())
    members.add(binder)
    return sorted(members)


def apply_identity(state: State, m: Mapping[str, Any], now_ms: int) -> tuple[State, bool]:
    """``state`` with the picture of one identifier, if newer than what it keeps.

    A picture naming no one else (the common case: an e-mail only this customer has) is not
    kept while nothing is: it would show nothing, and keeping it would change and publish
    the state once more for every new identifier.
    """
    key = f"{m['ns']}:{m['value']}"
    ids = state.get("_ids") or {}
    record = m["record"]
    old = ids.get(key)
    if old is not None and (old.get("blocked") or old["v"] >= record["v"]):
        return state, False
    if old is None and "shared" not in record and set(record["m"]) <= {state["customer_id"]}:
        return state, False
    new = {**state, "_ids": {**ids, key: record}, "version": state["version"] + 1,
           "updated_at": now_ms}  # fmt: skip
    return new, True


def links_view(state: State) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(linked, identity_guards)`` of the public CustomerState.

    ``linked``: one entry per other customer and identifier they share, ``since`` the later
    of the two customers' first events with it. ``identity_guards``: identifiers of this
    customer that link no one, and why.
    """
    me = state["customer_id"]
    linked: list[dict[str, Any]] = []
    guards: list[dict[str, Any]] = []
    for key, record in (state.get("_ids") or {}).items():
        ns, value = key.split(":", 1)
        via = {"type": TYPE_NAME[ns], "value": value}
        if record.get("blocked"):
            why = f"matches the block list pattern {record['blocked']!r} (KEEL_IDENTITY_BLOCKLIST)"
            guards.append({"via": via, "guard": "BLOCKED", "why": why})
        elif "shared" in record:
            why = (f"seen with more than {record['shared']} customers "
                   "(KEEL_IDENTITY_SHARED_AFTER): it links no one")  # fmt: skip
            guards.append({"via": via, "guard": "SHARED", "why": why})
        else:
            members = record["m"]
            mine = members.get(me)
            for other, at in members.items():
                if other == me:
                    continue
                since = at if mine is None else max(at, mine)
                linked.append({"customer_id": other, "via": via, "since": since})
    linked.sort(key=lambda x: (x["customer_id"], x["via"]["type"], x["via"]["value"]))
    guards.sort(key=lambda x: (x["via"]["type"], x["via"]["value"]))
    return linked, guards
