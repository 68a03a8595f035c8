"""Desk commands: what an agent may ask a department to do, checked against the stored state.

Pure: no Faust, no I/O, no clock (the caller passes ``now_ms``), so every refusal is a unit test
(tests/unit/test_commands.py). streams/api/commands.py is the HTTP side that calls it and
publishes what it returns to ``commands.v1`` (schema ``DeskCommand``)::

    >>> state = {"customer_id": "c-1", "orders": [{"order_id": "o-1", "status": "PLACED"}],
    ...          "contacts": []}
    >>> cmd = build_command("c-1", {"command_id": "x-1", "type": "CANCEL_ORDER",
    ...     "order_id": "o-1", "reason": "duplicate"}, agent="rep-7", now_ms=0)
    >>> check_against_state(cmd, state)
    >>> target_key(cmd)
    b'o-1'

Refusals are :class:`Refused` with the HTTP status the caller answers with (400 a request that
makes no sense by itself, 404 a target the customer does not have, 409 a target whose state
forbids it) and, when one field is to blame, its name.

Commands keel knows (contract-level decisions, documented in docs/commands.md):

- ``CANCEL_ORDER``: ``order_id`` of an order of this customer that is PLACED or AMENDED.
- ``RESOLVE_CONTACT``: ``contact_id`` of an OPEN contact of this customer.
- ``ADD_NOTE``: ``note`` on the ``contact_id`` of a contact of this customer (open or resolved:
  the contact centre decides whether a note reopens it); **without** ``contact_id`` it asks the
  contact centre to open a new contact for this customer with that note (optionally about one of
  the customer's orders, ``order_id``). keel never invents a contact id for a department: the
  contact centre opens the case under its own id and its OPENED event joins as usual.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from streams.errors import KeelError

__all__ = [
    "ADD_NOTE",
    "ANNOUNCE",
    "CANCEL_ORDER",
    "COMMAND_TYPES",
    "DELIVERED",
    "REJECTED",
    "RESOLVE_CONTACT",
    "RecentCommands",
    "Refused",
    "build_command",
    "check_against_state",
    "target_key",
]

CANCEL_ORDER = "CANCEL_ORDER"
ADD_NOTE = "ADD_NOTE"
RESOLVE_CONTACT = "RESOLVE_CONTACT"
COMMAND_TYPES = (CANCEL_ORDER, ADD_NOTE, RESOLVE_CONTACT)
#: an announcement to a customer from the Voice of the Customer board (streams/api/voice.py,
#: POST /voice/announcements); not a type POST /customers/{id}/commands takes
ANNOUNCE = "ANNOUNCE"
DELIVERED = "DELIVERED"  # CommandOutcome.outcome: the department took it
REJECTED = "REJECTED"  # ... refused it for good

CLOSED_ORDER = frozenset({"CANCELLED", "COMPLETED"})
BODY_FIELDS = frozenset({"command_id", "type", "customer_id", "order_id", "contact_id", "reason",
                         "note"})  # fmt: skip
MAX_ID = 200
MAX_TEXT = 4000


class Refused(KeelError):
    """A command keel will not publish; ``status`` is the HTTP answer, ``field`` who is to blame."""

    def __init__(self, status: int, error: str, field: str | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.field = field

    def body(self) -> dict[str, Any]:
        return {"error": self.error, **({"field": self.field} if self.field else {})}


def _text(body: Mapping[str, Any], name: str, limit: int, required: bool) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise Refused(400, f"{name} is required", name)
        return None
    if not isinstance(value, str):
        raise Refused(400, f"{name} must be a string, got {type(value).__name__}", name)
    value = value.strip()
    if "\x00" in value:
        raise Refused(400, f"{name} must not contain NUL characters", name)
    if not value:
        if required:
            raise Refused(400, f"{name} must not be empty", name)
        return None
    if len(value) > limit:
        raise Refused(400, f"{name} is longer than {limit} characters", name)
    return value


def build_command(customer_id: str, body: Any, agent: str | None, now_ms: int) -> dict[str, Any]:
    """The DeskCommand record for a request body, or :class:`Refused` (400) saying what is wrong.

    ``agent`` is who sent it (today the ``X-Keel-Agent`` header; with authentication, the
    caller's identity), never a field of the body.
    """
    if not isinstance(body, dict):
        raise Refused(400, "the body must be one JSON object")
    if "agent" in body:
        raise Refused(
            400, "agent is not a body field: keel takes it from the caller (X-Keel-Agent)", "agent"
        )
    unknown = sorted(str(k) for k in body.keys() - BODY_FIELDS)
    if unknown:
        known = ", ".join(sorted(BODY_FIELDS))
        raise Refused(400, f"unknown field {unknown[0]!r}; fields: {known}", unknown[0])
    command_id = _text(body, "command_id", MAX_ID, required=True)
    kind = body.get("type")
    if kind not in COMMAND_TYPES:
        raise Refused(400, f"unknown command type {kind!r}; one of {', '.join(COMMAND_TYPES)}",
                      "type")  # fmt: skip
    given_customer = _text(body, "customer_id", MAX_ID, required=False)
    if given_customer is not None and given_customer != customer_id:
        raise Refused(400, f"customer_id {given_customer!r} differs from the path's "
                      f"{customer_id!r}", "customer_id")  # fmt: skip
    who = (agent or "").strip()
    if not who:
        raise Refused(400, "the agent is missing: send the agent's name in X-Keel-Agent", "agent")
    if len(who) > MAX_ID:
        raise Refused(400, f"the agent's name is longer than {MAX_ID} characters", "agent")
    reason = _text(body, "reason", MAX_TEXT, required=True)
    order_id = _text(body, "order_id", MAX_ID, required=kind == CANCEL_ORDER)
    contact_id = _text(body, "contact_id", MAX_ID, required=kind == RESOLVE_CONTACT)
    note = _text(body, "note", MAX_TEXT, required=kind == ADD_NOTE)
    if kind == CANCEL_ORDER and contact_id is not None:
        raise Refused(400, "CANCEL_ORDER takes an order_id, not a contact_id", "contact_id")
    if kind != CANCEL_ORDER and contact_id is not None and order_id is not None:
        raise Refused(400, f"{kind} on an existing contact takes no order_id", "order_id")
    if kind == RESOLVE_CONTACT and order_id is not None:
        raise Refused(400, "RESOLVE_CONTACT takes a contact_id, not an order_id", "order_id")
    if kind != ADD_NOTE and note is not None:
        raise Refused(400, "note is only for ADD_NOTE (say why in reason)", "note")
    return {
        "command_id": command_id,
        "type": kind,
        "customer_id": customer_id,
        "order_id": order_id,
        "contact_id": contact_id,
        "agent": who,
        "reason": reason,
        "note": note,
        "requested_at": now_ms,
    }


def check_against_state(command: Mapping[str, Any], state: Mapping[str, Any] | None) -> None:
    """Refuse (404/409) a command its customer's stored state says makes no sense.

    ``state`` is the public CustomerState (streams/domain/state.py ``view``), or None when keel does
    not know the customer.
    """
    customer_id = command["customer_id"]
    if state is None:
        raise Refused(404, f"no customer {customer_id!r}")
    orders = {o["order_id"]: o for o in state["orders"]}
    contacts = {c["contact_id"]: c for c in state["contacts"]}
    order_id, contact_id = command["order_id"], command["contact_id"]
    if order_id is not None:
        order = orders.get(order_id)
        if order is None:
            raise Refused(404, f"customer {customer_id!r} has no order {order_id!r}", "order_id")
        if command["type"] == CANCEL_ORDER and order["status"] in CLOSED_ORDER:
            raise Refused(409, f"order {order_id!r} is already {order['status']}", "order_id")
    if contact_id is not None:
        contact = contacts.get(contact_id)
        if contact is None:
            raise Refused(
                404, f"customer {customer_id!r} has no contact {contact_id!r}", "contact_id"
            )
        if command["type"] == RESOLVE_CONTACT and contact["status"] == "RESOLVED":
            raise Refused(409, f"contact {contact_id!r} is already RESOLVED", "contact_id")


def target_key(command: Mapping[str, Any]) -> bytes:
    """The Kafka key: the thing acted on, so one order's (one contact's) commands stay in order.

    A note that opens a new contact has no target yet: it is keyed by its customer.
    """
    if command["type"] == CANCEL_ORDER:
        return str(command["order_id"]).encode()
    return str(command["contact_id"] or command["customer_id"]).encode()


def _same(command: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes two requests with one command_id the same command (not when they came)."""
    return tuple(command[k] for k in ("type", "customer_id", "order_id", "contact_id", "agent",
                                      "reason", "note"))  # fmt: skip


class RecentCommands:
    """The command ids this worker published lately, oldest forgotten first (bounded).

    ``seen`` answers a repeat: True for the same command again (answer 202, publish nothing),
    :class:`Refused` 409 for another command under an id already used.

        >>> recent = RecentCommands(maximum=2)
        >>> cmd = {"command_id": "a", "type": "ADD_NOTE", "customer_id": "c", "order_id": None,
        ...        "contact_id": "k", "agent": "jo", "reason": "r", "note": "n"}
        >>> recent.seen(cmd)
        False
        >>> recent.remember(cmd); recent.seen(cmd)
        True
    """

    def __init__(self, maximum: int = 10_000) -> None:
        self.maximum = maximum
        self._ids: OrderedDict[str, tuple[Any, ...]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def seen(self, command: Mapping[str, Any]) -> bool:
        known = self._ids.get(command["command_id"])
        if known is None:
            return False
        if known != _same(command):
            raise Refused(
                409,
                f"command_id {command['command_id']!r} was already used for another command",
                "command_id",
            )
        return True

    def remember(self, command: Mapping[str, Any]) -> None:
        self._ids[command["command_id"]] = _same(command)
        self._ids.move_to_end(command["command_id"])
        while len(self._ids) > self.maximum:
            self._ids.popitem(last=False)


# ------------------------------------------------------------ commands in the customer state

#: commands one state remembers, the most recently requested: what a desk acted on lately
KEPT_COMMANDS = 20
_STORED = ("type", "order_id", "contact_id", "agent", "reason", "note", "requested_at")


def apply_command(
    state: dict[str, Any], command: Mapping[str, Any], now_ms: int
) -> tuple[dict[str, Any], bool]:
    """Remember a published command in its customer's state, for its lifecycle signals.

    Stored as ``state["_commands"][command_id]`` (streams/domain/signals.py derives COMMAND_PENDING
    and COMMAND_FAILED from them and the departments' events). The same id again changes
    nothing (the first one stays: the desk refuses another command under a used id); only
    the ``KEPT_COMMANDS`` most recently requested are kept, so the result depends only on the
    set of commands. Returns ``(state, changed)`` like streams.domain.state.apply_event; ``state``
    is never mutated.

        >>> cmd = build_command("c-1", {"command_id": "x-1", "type": "RESOLVE_CONTACT",
        ...     "contact_id": "k-1", "reason": "done"}, agent="rep-7", now_ms=5)
        >>> state = {"customer_id": "c-1", "version": 1, "updated_at": 0}
        >>> new, changed = apply_command(state, cmd, now_ms=9)
        >>> changed, new["version"], new["_commands"]["x-1"]["agent"]
        (True, 2, 'rep-7')
        >>> apply_command(new, cmd, now_ms=10) == (new, False)
        True
    """
    kept: dict[str, Any] = state.get("_commands") or {}
    command_id = command["command_id"]
    if command_id in kept:
        return state, False
    commands = {**kept, command_id: {k: command.get(k) for k in _STORED}}
    if len(commands) > KEPT_COMMANDS:
        newest = sorted(commands, key=lambda k: (commands[k]["requested_at"], k))
        commands = {k: commands[k] for k in newest[-KEPT_COMMANDS:]}
        if command_id not in commands:  # older than every command kept
            return state, False
    new = {**state, "_commands": commands}
    new["version"] = state["version"] + 1
    new["updated_at"] = now_ms
    return new, True


# ------------------------------------------------------------- the departments' answers to them

#: answers one state remembers (one per command and connector), the most recent by ``at``:
#: two per kept command (e.g. the inbox's DELIVERED and the webhook's REJECTED)
KEPT_OUTCOMES = 2 * KEPT_COMMANDS
#: characters of a department's reason kept (the connectors send at most 300)
MAX_REASON = 300

Answer = tuple[str, int, str, str | None]  # (outcome, at, connector, reason)


def _answer_key(entry: list[Any]) -> tuple[int, str, str]:
    """The total order answers are merged by: latest ``at``, then outcome, then reason."""
    at, outcome, reason = entry
    return at, outcome, reason or ""


def apply_outcome(
    state: dict[str, Any], outcome: Mapping[str, Any], now_ms: int
) -> tuple[dict[str, Any], bool]:
    """Remember a department's answer to a command (a CommandOutcome record) in the state.

    Stored as ``state["_outcomes"][command_id][connector] = [at, outcome, reason]``, next to
    ``state["_commands"]`` but apart from it, so an answer that arrives before its command
    waits there for it. Each connector's latest answer counts (the largest by ``at``, then
    outcome and reason: the same answer again, or an older one, changes nothing), and only
    the ``KEPT_OUTCOMES`` latest answers are kept. Both are maxima of one total order, so the
    result depends only on the set of answers, never on their order or on duplicates.
    Returns ``(state, changed)``; ``state`` is never mutated.

        >>> state = {"customer_id": "c-1", "version": 1, "updated_at": 0}
        >>> refused = {"command_id": "x-1", "customer_id": "c-1", "outcome": "REJECTED",
        ...            "reason": "already shipped", "connector": "webhook", "at": 7}
        >>> new, changed = apply_outcome(state, refused, now_ms=9)
        >>> changed, command_answer(new, "x-1")
        (True, ('REJECTED', 7, 'webhook', 'already shipped'))
        >>> apply_outcome(new, refused, now_ms=10) == (new, False)
        True
    """
    command_id, connector = outcome["command_id"], outcome["connector"]
    reason = outcome.get("reason")
    entry = [outcome["at"], outcome["outcome"], reason[:MAX_REASON] if reason else None]
    kept: dict[str, dict[str, list[Any]]] = state.get("_outcomes") or {}
    old = kept.get(command_id, {}).get(connector)
    if old is not None and _answer_key(old) >= _answer_key(entry):
        return state, False
    answers = {**kept, command_id: {**kept.get(command_id, {}), connector: entry}}
    every = [(_answer_key(e), c, k) for c, by in answers.items() for k, e in by.items()]
    if len(every) > KEPT_OUTCOMES:
        every.sort()
        dropped = every[: len(every) - KEPT_OUTCOMES]
        if any(c == command_id and k == connector for _, c, k in dropped):
            return state, False  # older than every answer kept
        for _, c, k in dropped:
            rest = {name: e for name, e in answers[c].items() if name != k}
            if rest:
                answers[c] = rest
            else:
                del answers[c]
    new = {**state, "_outcomes": answers}
    new["version"] = state["version"] + 1
    new["updated_at"] = now_ms
    return new, True


def command_answer(state: Mapping[str, Any], command_id: str) -> Answer | None:
    """What the departments answered to a command: ``(outcome, at, connector, reason)``.

    A refusal through any connector is the answer (the latest, if several refused); else the
    first delivery; None while no connector has reported either.
    """
    by_connector = (state.get("_outcomes") or {}).get(command_id) or {}
    answers = [(e[1], e[0], connector, e[2]) for connector, e in by_connector.items()]
    refused = [a for a in answers if a[0] == REJECTED]
    if refused:
        return max(refused, key=lambda a: (a[1], a[2], a[3] or ""))
    delivered = [a for a in answers if a[0] == DELIVERED]
    return min(delivered, key=lambda a: (a[1], a[2])) if delivered else None
