"""The join's internal protocol: every message the worker sends itself, one type per kind.

Messages travel packed on keel's internal topics (streams/worker/checkpoint.py ``Packer``):
keel-customer-events is keyed by customer id (and by ``voice.VOICE_KEY`` and
``unmatched.UNMATCHED_KEY`` for the two lists kept on one partition each), keel-{ns}-refs by
a reference (order id, case id, e-mail, phone). A message on customer-events is told apart
by its ``kind``, one on a reference topic by its ``op``; streams/worker/agent.py dispatches
each through a table keyed by it.

================== ====== ======================================= ===========================
kind / op          topic  sent by                                 handled by
================== ====== ======================================= ===========================
order, shipment,   events intake.first_hop (a known customer);    customers.on_event
contact, command,         references.forward (resolved);
outcome (*event*)         customers.apply_to_customer (a contact
                          that moved on), customers.move_contact
erasure (*event*)  events intake.first_hop                        customers.on_erasure
recheck            events timers.signal_clock                     customers.recheck
move               events references.send_move,                   customers.move_contact
                          unmatched.assign_case,
                          customers.move_contact (passed on)
identity           events references.bind_identity,               customers.update_identity
                          references.forget_identity
voice              voice  customers.apply_to_customer             voice.on_fact
voice_forget       voice  customers.erase_customer,               voice.forget
                          customers.update_identity
unmatched_add      list   unmatched.unmatched_at_case             unmatched.on_add
unmatched_placed   list   agent.handle_customer_message           unmatched.on_placed
unmatched_forget   list   customers.erase_customer                unmatched.on_forget
unmatched_identity list   references.tell_unmatched               unmatched.on_identity
assign             list   api/unmatched.py (an agent's            unmatched.on_assign
                          assign_contact)
lookup             refs   intake.first_hop (no customer yet);     references.lookup
                          references.lookup and pass_by (on
                          down the chain); customers.resolve_again
bind               refs   customers.apply_to_customer             references.on_bind
unhold             refs   customers.apply_to_customer,            references.on_unhold
                          references (its chain's other copies)
expire             refs   timers.held_clock                       references.on_expire
placed             refs   customers.apply_to_customer             references.placed
rebind             refs   customers.move_contact                  references.rebind
release            refs   customers.update_identity,              references.release
                          customers.apply_to_customer (refused)
erase              refs   customers.drop_erased,                  references.erase_ref
                          customers.erase_customer (``unbind``)
unmatched          refs   references.send_unmatched               unmatched.unmatched_at_case
assign (op)        refs   unmatched.assign_contact                unmatched.assign_case
================== ====== ======================================= ===========================

(events: keel-customer-events keyed by customer id; voice / list: the same topic keyed by
``VOICE_KEY`` / ``UNMATCHED_KEY``; refs: keel-{ns}-refs keyed by the reference; only the
contact-refs topic carries ``unmatched`` and ``assign``.)

The wire format is the dict each constructor returns, keys in that order, as orjson writes
it: a deployment's in-flight records were written by the literals these replaced, so a
constructor must return exactly what its literal did (tests/unit/test_messages.py). Keys
marked ``NotRequired`` are left out rather than sent empty, as before. A held table's rows
(streams/domain/join.py ``add_held``, ``mark_held``) are stored messages of the kinds above
with bookkeeping added (``held_at``, ``placed_on``…), not messages of their own.

    batch.internal.send(REF_TOPIC[ORDER], "o-1", messages.bind("c-1"))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NotRequired, TypedDict

#: the kinds of the departments' and the desk's events, as the intake names them
EventKind = Literal["order", "shipment", "contact", "command", "outcome", "erasure"]

#: a reference: (namespace, key); a list of them comes back from JSON as lists
RefPair = Sequence[str]


# ------------------------------------------------------------------ keel-customer-events


class Event(TypedDict):
    """An input event on its way to (or at) its customer."""

    kind: str  # an EventKind
    event: dict[str, Any]
    topic: str
    #: how a contact was joined (streams/domain/placement.py); only contacts carry it
    rank: NotRequired[int]
    #: it waited as unmatched: the customer takes it off the list
    unmatched: NotRequired[bool]
    #: resolved again after its customer gave it up: where it moved before counts no more
    fresh: NotRequired[bool]
    #: when Kafka appended the input record (ms): the apply-lag metric's start
    appended: NotRequired[int]


class Recheck(TypedDict):
    kind: Literal["recheck"]


class Move(TypedDict):
    """Give ``contact_id`` up to ``to``, which a reference of rank ``rank`` names."""

    kind: Literal["move"]
    contact_id: str
    to: str
    rank: int
    topic: str


class Identity(TypedDict):
    """The newest picture of an identifier's record (streams/domain/links.py)."""

    kind: Literal["identity"]
    ns: str
    value: str
    record: dict[str, Any]


class VoiceFact(TypedDict):
    kind: Literal["voice"]
    fact: dict[str, Any]


class VoiceForget(TypedDict):
    kind: Literal["voice_forget"]
    customer_id: str
    contact_ids: list[str]


class UnmatchedAdd(TypedDict):
    kind: Literal["unmatched_add"]
    event: dict[str, Any]
    why: list[dict[str, Any]]


class UnmatchedPlaced(TypedDict):
    kind: Literal["unmatched_placed"]
    contact_id: str


class UnmatchedForget(TypedDict):
    kind: Literal["unmatched_forget"]
    customer_id: str


class UnmatchedIdentity(TypedDict):
    kind: Literal["unmatched_identity"]
    ns: str
    value: str
    record: dict[str, Any]


class AssignCommand(TypedDict):
    """An agent's assign_contact command, to the list's partition."""

    kind: Literal["assign"]
    command: dict[str, Any]


# ------------------------------------------------------------------------ keel-{ns}-refs


class Lookup(TypedDict):
    """Resolve an event through this reference; ``refs``: the rest of its chain."""

    kind: str  # an EventKind
    event: dict[str, Any]
    topic: str
    op: Literal["lookup"]
    refs: Sequence[RefPair]
    fresh: NotRequired[bool]
    #: when Kafka appended the input record (ms), carried to the customer
    appended: NotRequired[int]
    #: why it passed identifiers on the way (shared, or linking several customers)
    ambiguous: NotRequired[list[dict[str, Any]]]


class Bind(TypedDict):
    op: Literal["bind"]
    customer_id: str
    #: an e-mail's or phone's: the customer's earliest event with it
    at: NotRequired[int]


class Unhold(TypedDict):
    op: Literal["unhold"]
    event_id: str
    at: int


class Expire(TypedDict):
    op: Literal["expire"]
    before: int
    wall_before: NotRequired[int]


class Placed(TypedDict):
    """A contact was applied to ``customer_id`` through a weaker reference than this one."""

    op: Literal["placed"]
    kind: str
    event: dict[str, Any]
    topic: str
    customer_id: str


#: a case moved from customer ``from`` to ``customer_id`` ("from" is a keyword: no class form)
Rebind = TypedDict("Rebind", {"op": Literal["rebind"], "from": str, "customer_id": str})

#: customer ``from`` gave the reference up
Release = TypedDict("Release", {"op": Literal["release"], "from": str})


class Erase(TypedDict):
    op: Literal["erase"]
    customer_id: str
    at: int
    #: sent by the erasure itself: forget that the reference was the customer's
    unbind: NotRequired[bool]


class Unmatched(TypedDict):
    """A contact passed only ambiguous identifiers: to its case, where it waits."""

    op: Literal["unmatched"]
    kind: str
    event: dict[str, Any]
    topic: str
    why: list[dict[str, Any]]


class AssignCase(TypedDict):
    """An agent assigned the contact of this case to ``customer_id``."""

    op: Literal["assign"]
    customer_id: str
    command_id: str


Message = (
    Event | Recheck | Move | Identity | VoiceFact | VoiceForget | UnmatchedAdd
    | UnmatchedPlaced | UnmatchedForget | UnmatchedIdentity | AssignCommand
    | Lookup | Bind | Unhold | Expire | Placed | Rebind | Release | Erase | Unmatched
    | AssignCase
)  # fmt: skip


# ---------------------------------------------------------------------------- constructors


def event(
    kind: str,
    body: dict[str, Any],
    topic: str,
    rank: int | None = None,
    unmatched: bool = False,
    fresh: bool = False,
    appended: int | None = None,
) -> Event:
    m: Event = {"kind": kind, "event": body, "topic": topic}
    if rank is not None:
        m["rank"] = rank
    if unmatched:
        m["unmatched"] = True
    if fresh:
        m["fresh"] = True
    if appended is not None:
        m["appended"] = appended
    return m


def recheck() -> Recheck:
    return {"kind": "recheck"}


def move(contact_id: str, to: str, rank: int, topic: str) -> Move:
    return {"kind": "move", "contact_id": contact_id, "to": to, "rank": rank, "topic": topic}


def identity(ns: str, value: str, record: dict[str, Any]) -> Identity:
    return {"kind": "identity", "ns": ns, "value": value, "record": record}


def voice_fact(fact: dict[str, Any]) -> VoiceFact:
    return {"kind": "voice", "fact": fact}


def voice_forget(customer_id: str, contact_ids: list[str]) -> VoiceForget:
    return {"kind": "voice_forget", "customer_id": customer_id, "contact_ids": contact_ids}


def unmatched_add(body: dict[str, Any], why: list[dict[str, Any]]) -> UnmatchedAdd:
    return {"kind": "unmatched_add", "event": body, "why": why}


def unmatched_placed(contact_id: str) -> UnmatchedPlaced:
    return {"kind": "unmatched_placed", "contact_id": contact_id}


def unmatched_forget(customer_id: str) -> UnmatchedForget:
    return {"kind": "unmatched_forget", "customer_id": customer_id}


def unmatched_identity(ns: str, value: str, record: dict[str, Any]) -> UnmatchedIdentity:
    return {"kind": "unmatched_identity", "ns": ns, "value": value, "record": record}


def assign_command(command: dict[str, Any]) -> AssignCommand:
    return {"kind": "assign", "command": command}


def lookup(
    kind: str, body: dict[str, Any], topic: str, refs: Sequence[RefPair], fresh: bool = False,
    appended: int | None = None,
) -> Lookup:
    m: Lookup = {"kind": kind, "event": body, "topic": topic, "op": "lookup", "refs": refs}
    if fresh:
        m["fresh"] = True
    if appended is not None:
        m["appended"] = appended
    return m


def onward(
    message: Lookup, refs: Sequence[RefPair], ambiguous: list[dict[str, Any]] | None = None
) -> Lookup:
    """``message`` passed on to the next reference of its chain (``refs``: the ones after
    it), with why it passed ambiguous identifiers so far if any."""
    m: Lookup = {**message, "op": "lookup", "refs": refs}
    if ambiguous is not None:
        m["ambiguous"] = ambiguous
    return m


def bind(customer_id: str, at: int | None = None) -> Bind:
    m: Bind = {"op": "bind", "customer_id": customer_id}
    if at is not None:
        m["at"] = at
    return m


def unhold(body: dict[str, Any]) -> Unhold:
    """Drop the copies of ``body`` (an event) held at this reference."""
    return {"op": "unhold", "event_id": body["event_id"], "at": body["occurred_at"]}


def expire(before: int, wall_before: int) -> Expire:
    return {"op": "expire", "before": before, "wall_before": wall_before}


def placed(kind: str, body: dict[str, Any], topic: str, customer_id: str) -> Placed:
    return {"op": "placed", "kind": kind, "event": body, "topic": topic,
            "customer_id": customer_id}  # fmt: skip


def rebind(old: str, new: str) -> Rebind:
    return {"op": "rebind", "from": old, "customer_id": new}


def release(old: str) -> Release:
    return {"op": "release", "from": old}


def erase(customer_id: str, at: int, unbind: bool = False) -> Erase:
    m: Erase = {"op": "erase", "customer_id": customer_id, "at": at}
    if unbind:
        m["unbind"] = True
    return m


def unmatched(kind: str, body: dict[str, Any], topic: str, why: list[dict[str, Any]]) -> Unmatched:
    return {"op": "unmatched", "kind": kind, "event": body, "topic": topic, "why": why}


def assign_case(customer_id: str, command_id: str) -> AssignCase:
    return {"op": "assign", "customer_id": customer_id, "command_id": command_id}
