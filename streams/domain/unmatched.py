"""Unmatched contacts (issue #14 §1): those an ambiguous identifier would have guessed onto someone.

A contact event that does not name its customer resolves through its references in the
contract's order (streams/domain/join.py). An e-mail or phone whose identity record
(streams/domain/links.py) is *shared* (seen with more than KEEL_IDENTITY_SHARED_AFTER customers) or
*links* several customers resolves nothing: the lookup passes it by, noting why, and goes on
down the chain. A contact none of whose references resolve, but that passed such an
identifier, is *unmatched*:

- its copy at its case reference (``contact-held``, where its chain starts) is marked
  ``unmatched``: it never expires to the dead letters, and it is what the case's bind
  releases (an order or a case of a known customer that becomes known later, or an agent's
  ``assign_contact``);
- a row in the ``unmatched`` table says so for the list (``GET /unmatched``). Every row lives
  in the partition of :data:`UNMATCHED_KEY` (like the voice facts), so one worker answers the
  list and one partition orders every change of it::

      "k:k-7" -> {"contact_id": "k-7", "channel": "PHONE", "opened_at": 1767225600000,
                  "since": 1767225600000, "events": {"e-1": 1767225600000},
                  "why": [{"type": "PHONE", "value": "+4930123", "guard": "SHARED",
                           "candidates": []}]}
      "c:c-1" -> ["k-7", ...]          # the rows naming c-1 (as candidate or assignee)
      "i:phone:+4930123" -> {"v": 4, "shared": 3}   # the newest picture of an identifier

  The identifier's partition sends every change of an ambiguous identity record here (and
  every change an erasure makes to one), so the list shows each identifier as it is now
  (:func:`listing`): the candidates and SHARED/LINKED depend only on the set of events, not
  on when the contact passed the identifier.

  A contact placed on a customer leaves the list (the customer reports it, only for events
  that carried the ``unmatched`` mark); one an agent assigned stays as the audit record
  (``assigned``: command id, customer, agent, reason, when) and is no longer listed.

Nothing here touches Faust or Kafka.

    >>> why = ambiguity("phone", "+4930123", {"v": 4, "shared": 3})
    >>> row = add_event(None, {"contact_id": "k-7", "event_id": "e-1", "occurred_at": 5,
    ...                        "type": "OPENED", "channel": "PHONE"}, [why])
    >>> listing(row)["why"][0]["guard"], listing(row)["opened_at"]
    ('SHARED', 5)
"""

from __future__ import annotations

from typing import Any

from streams.domain.links import TYPE_NAME

#: every row of the unmatched table lives in this key's partition (customer-events)
UNMATCHED_KEY = "~unmatched"
SHARED, LINKED = "SHARED", "LINKED"

Row = dict[str, Any]


def row_key(contact_id: str) -> str:
    return f"k:{contact_id}"


def index_key(customer_id: str) -> str:
    return f"c:{customer_id}"


def picture_key(ns: str, value: str) -> str:
    return f"i:{ns}:{value}"


NS_OF_TYPE = {name: ns for ns, name in TYPE_NAME.items()}


def newer_picture(old: dict[str, Any] | None, record: dict[str, Any]) -> bool:
    """Whether ``record`` is a newer picture of an identifier than ``old``."""
    return old is None or record["v"] > old["v"]


def ambiguity(ns: str, value: str, record: dict[str, Any] | None) -> dict[str, Any] | None:
    """Why an identifier with this identity record resolves no one (None: it resolves).

    >>> ambiguity("email", "a@x", {"v": 2, "m": {"c-1": 1, "c-2": 3}})["candidates"]
    ['c-1', 'c-2']
    >>> ambiguity("email", "a@x", {"v": 1, "m": {"c-1": 1}}) is None
    True
    """
    if record is None or record.get("blocked"):
        return None
    via = {"type": TYPE_NAME[ns], "value": value}
    if "shared" in record:
        return {**via, "guard": SHARED, "candidates": []}
    if len(record["m"]) > 1:
        return {**via, "guard": LINKED, "candidates": sorted(record["m"])}
    return None


def _merge_why(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per identifier: SHARED over LINKED, the candidates of every sighting."""
    by: dict[tuple[str, str], dict[str, Any]] = {(w["type"], w["value"]): w for w in old}
    for w in new:
        key = (w["type"], w["value"])
        seen = by.get(key)
        if seen is None:
            by[key] = w
        elif SHARED in (seen["guard"], w["guard"]):
            by[key] = {**seen, "guard": SHARED, "candidates": []}
        else:
            both = sorted(set(seen["candidates"]) | set(w["candidates"]))
            by[key] = {**seen, "candidates": both}
    return [by[k] for k in sorted(by)]


def add_event(row: Row | None, event: dict[str, Any], why: list[dict[str, Any]]) -> Row:
    """The row of ``event``'s contact after the event went unmatched for ``why``."""
    events = dict((row or {}).get("events") or {})
    event_id, at = event["event_id"], int(event["occurred_at"])
    newest = max(events.items(), key=lambda kv: (kv[1], kv[0]), default=None)
    events[event_id] = max(at, events.get(event_id, at))
    new: Row = {**(row or {}), "contact_id": event["contact_id"], "events": events}
    if newest is None or (at, event_id) >= (newest[1], newest[0]) or not new.get("channel"):
        new["channel"] = event.get("channel") or new.get("channel")
    if event.get("type") == "OPENED":
        opened = new.get("opened_at")
        new["opened_at"] = at if opened is None else min(opened, at)
    new["since"] = min(events.values())
    new["why"] = _merge_why(new.get("why") or [], why)
    return new


def named(row: Row) -> list[str]:
    """The customer ids a row names (its candidates, its assignee): what the index keeps."""
    ids = {c for w in row.get("why") or () for c in w["candidates"]}
    assigned = row.get("assigned")
    if assigned:
        ids.add(assigned["customer_id"])
    return sorted(ids)


def forget(row: Row, customer_id: str) -> Row | None:
    """The row without an erased customer (None: an audit record about them, delete it)."""
    assigned = row.get("assigned")
    if assigned and assigned["customer_id"] == customer_id:
        return None
    why = [{**w, "candidates": [c for c in w["candidates"] if c != customer_id]}
           for w in row.get("why") or ()]  # fmt: skip
    return {**row, "why": why}


def current_why(row: Row, pictures: dict[str, Any]) -> list[dict[str, Any]]:
    """The row's identifiers as their newest pictures show them (else as when it passed)."""
    out = []
    for w in row.get("why") or ():
        record = pictures.get(picture_key(NS_OF_TYPE[w["type"]], w["value"]))
        if record is None:
            out.append(w)
        elif "shared" in record:
            out.append({**w, "guard": SHARED, "candidates": []})
        else:
            out.append({**w, "guard": LINKED, "candidates": sorted(record["m"])})
    return out


def listing(row: Row, pictures: dict[str, Any] | None = None) -> dict[str, Any]:
    """One entry of ``GET /unmatched``; ``pictures``: the newest identity records by
    :func:`picture_key` (those of the row's identifiers suffice)."""
    why = current_why(row, pictures or {})
    return {
        "contact_id": row["contact_id"],
        "channel": row.get("channel"),
        "opened_at": row.get("opened_at"),
        "since": row["since"],
        "why": why,
        "candidates": sorted({c for w in why for c in w["candidates"]}),
    }


def page(
    rows: list[Row], after: str | None, limit: int, pictures: dict[str, Any] | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """Open (not assigned) rows by contact id after ``after``: one page and the next cursor.

    >>> rows = [{"contact_id": k, "since": 1} for k in ("k-2", "k-1", "k-3")]
    >>> [x["contact_id"] for x in page(rows, None, 2)[0]], page(rows, None, 2)[1]
    (['k-1', 'k-2'], 'k-2')
    >>> page(rows, "k-2", 2)[1] is None
    True
    """
    open_ = sorted((r for r in rows if not r.get("assigned")), key=lambda r: r["contact_id"])
    if after is not None:
        open_ = [r for r in open_ if r["contact_id"] > after]
    chosen = open_[:limit]
    more = len(open_) > limit
    return [listing(r, pictures) for r in chosen], (chosen[-1]["contact_id"] if more else None)


ASSIGN_FIELDS = frozenset({"command_id", "customer_id", "reason"})
MAX_ID, MAX_TEXT = 200, 4000


def assign_command(contact_id: str, body: Any, agent: str | None, now_ms: int) -> dict[str, Any]:
    """The ``assign_contact`` command of a request body, or
    :class:`streams.domain.commands.Refused`.

    >>> assign_command("k-1", {"command_id": "x-1", "customer_id": "c-2", "reason": "called"},
    ...                "rep-7", 5)["customer_id"]
    'c-2'
    """
    from streams.domain.commands import Refused

    if not isinstance(body, dict):
        raise Refused(400, "the body must be one JSON object")
    unknown = sorted(str(k) for k in body.keys() - ASSIGN_FIELDS)
    if unknown:
        raise Refused(400, f"unknown field {unknown[0]!r}; fields: "
                      f"{', '.join(sorted(ASSIGN_FIELDS))}", unknown[0])  # fmt: skip
    out: dict[str, Any] = {"contact_id": contact_id}
    for name, limit in (("command_id", MAX_ID), ("customer_id", MAX_ID), ("reason", MAX_TEXT)):
        value = body.get(name)
        if not isinstance(value, str) or not value.strip():
            raise Refused(400, f"{name} is required (a non-empty string)", name)
        value = value.strip()
        if len(value) > limit or "\x00" in value:
            raise Refused(400, f"{name} is longer than {limit} characters or has NUL", name)
        out[name] = value
    who = (agent or "").strip()
    if not who or len(who) > MAX_ID:
        raise Refused(400, "the agent is missing: send the agent's name in X-Keel-Agent", "agent")
    return {**out, "agent": who, "requested_at": now_ms}


def check_assign(command: dict[str, Any], row: Row | None) -> bool:
    """Whether to publish an assignment (False: it is this one again), against the contact's
    row; :class:`streams.domain.commands.Refused` 404 (not unmatched) or 409 (assigned
    otherwise)."""
    from streams.domain.commands import Refused

    if row is None:
        raise Refused(404, f"contact {command['contact_id']!r} is not unmatched", "contact_id")
    done = row.get("assigned")
    if done is None:
        return True
    if done["command_id"] == command["command_id"] and done["customer_id"] == command[
        "customer_id"
    ]:
        return False
    raise Refused(409, f"contact {command['contact_id']!r} was already assigned (command "
                  f"{done['command_id']!r})", "contact_id")  # fmt: skip
