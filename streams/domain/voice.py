"""Voice of the Customer: every contact, counted once, aggregated by topic, kind, product, channel.

Pure: no faust, no I/O, no clock (callers pass ``now_ms``), so every rule is a unit test
(tests/unit/test_voice.py). streams/api/voice.py is the worker side: the table of facts,
voice.v1, ``GET /voice``, the gauges, the board's live stream and the announcements.

How a contact reaches the aggregates::

    state changed (streams/worker/customers.py) ─► facts_to_send(before, after, kind, event)
        one *fact* per contact the change touched: kind, topic (or the tagged one), channel,
        opened/resolved, the SKUs of its order, the customer's first words, its stamp
    ─► keel-customer-events, key VOICE_KEY (one partition: the *voice owner*)
    ─► merge_fact(stored, fact): the voice-facts table, keyed by contact_id
    ─► aggregate(facts, now_ms, window_ms): counts of the window and the one before it

A fact is the contact as the join sees it, keyed by ``contact_id``, so a contact counts once
whatever happened to it: a re-sent or replayed event changes no fact (``merge_fact`` finds
nothing new), a note or a resolution replaces the fact rather than adding one, and a contact
that moves to another customer is still one contact (the newest fact wins, with its customer).
Facts are sent as outputs of the batch that changed the customer's state, so they are in
Kafka before that state is stored (streams/worker/checkpoint.py); a crash re-sends them, which
``merge_fact`` absorbs.

Announcements (``announce_commands``): one ANNOUNCE command (DeskCommand v2) per customer who
made a contact of a kind about a topic in a window, with an id derived from the announcement
and the customer, so sending an announcement again is the same commands; customers without
an e-mail or phone are skipped and counted. streams/domain/signals.py shows them as CUSTOMER_TOLD.

Windows are by event time: a contact belongs to the window its ``opened_at`` (the earliest
``occurred_at`` seen until its OPENED arrives, then the OPENED's) falls into, so a late
contact lands where it belongs, and a window's count is recomputed from the facts whenever it
is asked for, never incremented. A window of length W "now" is ``(now - W, now]``; its previous
window is ``(now - 2W, now - W]``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from statistics import median
from typing import Any

from streams.domain.commands import ANNOUNCE, Refused
from streams.domain.state import CLOSED_CONTACT_TYPES, field, opened_at

VOICE_KEY = "~voice"
"""The key every fact travels under on keel-customer-events: all facts meet on its partition."""

KINDS = ("COMPLAINT", "IDEA", "COMPLIMENT", "QUESTION", "REQUEST")
HOUR_MS = 3600 * 1000
WINDOWS: dict[str, int] = {
    "1h": HOUR_MS,
    "1d": 24 * HOUR_MS,
    "7d": 7 * 24 * HOUR_MS,
    "30d": 30 * 24 * HOUR_MS,
}
"""The windows ``GET /voice?window=`` and voice.v1 know."""

KEEP_MS = 2 * WINDOWS["30d"]
"""Facts opened longer ago than this are in no window (nor a previous one)."""

OTHER = "other"
MAX_WORDS = 280
MAX_TOPIC = 60

DEFAULT_KEYWORDS: dict[str, tuple[str, ...]] = {
    "delivery": ("delivery", "deliver", "delivered", "parcel", "package", "courier", "shipping",
                 "shipment", "arrived", "late", "tracking", "carrier"),
    "billing": ("invoice", "bill", "billing", "charged", "charge", "payment", "refund",
                "price", "overcharged", "receipt"),
    "returns": ("return", "returns", "returned", "exchange", "send back", "label"),
    "quality": ("broken", "damaged", "defect", "defective", "faulty", "quality", "stopped working",
                "scratched", "cracked"),
    "website": ("website", "site", "app", "checkout", "login", "password", "page", "search"),
    "staff": ("staff", "rude", "helpful", "friendly", "agent", "employee", "service", "thank"),
}  # fmt: skip
"""Keyword -> topic defaults for contacts that come without a ``topic`` (KEEL_VOICE_KEYWORDS
replaces them with a JSON file ``{"topic": ["keyword", ...]}``)."""


def normalize_topic(topic: str | None) -> str | None:
    """A department's topic as the board shows it: trimmed, lower case, at most 60 characters."""
    if topic is None:
        return None
    text = " ".join(topic.split()).lower()[:MAX_TOPIC]
    return text or None


def compile_keywords(keywords: Mapping[str, Iterable[str]]) -> list[tuple[str, re.Pattern[str]]]:
    """One whole-word pattern per topic, in the map's order (the first best match wins)."""
    out = []
    for topic, words in keywords.items():
        alternatives = sorted({w.strip().lower() for w in words if w.strip()}, key=len,
                              reverse=True)  # fmt: skip
        if alternatives:
            pattern = r"\b(?:" + "|".join(re.escape(w) for w in alternatives) + r")\b"
            out.append((normalize_topic(topic) or OTHER, re.compile(pattern)))
    return out


DEFAULT_TAGGER = compile_keywords(DEFAULT_KEYWORDS)


def tag(text: str | None, tagger: list[tuple[str, re.Pattern[str]]] = DEFAULT_TAGGER) -> str:
    """The topic of a contact that has none, from its words: the topic with the most keyword
    hits (the first in the map on a tie), else ``other``.

    >>> tag("The parcel arrived two weeks late"), tag("I was charged twice"), tag("hello")
    ('delivery', 'billing', 'other')
    """
    if not text:
        return OTHER
    lowered = text.lower()
    best, hits = OTHER, 0
    for topic, pattern in tagger:
        n = len(pattern.findall(lowered))
        if n > hits:
            best, hits = topic, n
    return best


# --------------------------------------------------------------------------------- facts


def contact_fact(
    state: Mapping[str, Any], contact_id: str, tagger: list[tuple[str, re.Pattern[str]]]
) -> dict[str, Any] | None:
    """The fact of one contact of a stored customer state, or None if the state lacks it."""
    c = state["_contacts"].get(contact_id)
    if c is None:
        return None
    notes = c.get("notes") or []
    words = notes[0][3][:MAX_WORDS] if notes else ""
    topic = normalize_topic(field(c, "topic"))
    tagged = topic is None
    if tagged:
        topic = tag(" ".join(n[3] for n in notes), tagger)
    order_id = field(c, "order_id")
    order = state["_orders"].get(order_id) if order_id else None
    skus = sorted({line[0] for line in order["items"]}) if order else []
    closed = c["type"] in CLOSED_CONTACT_TYPES
    return {
        "contact_id": contact_id,
        "customer_id": state["customer_id"],
        "kind": c["kind"],
        "topic": topic,
        "tagged": tagged,
        "channel": c["channel"],
        "opened_at": opened_at(c),
        "resolved_at": c.get("resolved") if closed else None,
        "open": not closed,
        "order_id": order_id,
        "skus": skus,
        "words": words,
        "reachable": bool(state.get("emails") or state.get("phones")),
        "at": list(c["at"]),
    }


def facts_to_send(
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any],
    kind: str,
    event: Mapping[str, Any],
    tagger: list[tuple[str, re.Pattern[str]]] = DEFAULT_TAGGER,
) -> list[dict[str, Any]]:
    """The facts a change of a customer's state makes new: the contact a contact event
    touched, or the contacts about the order an order event touched (their SKUs)."""
    if kind == "contact":
        touched = [event["contact_id"]]
    elif kind == "order":
        order_id = event["order_id"]
        touched = [k for k, c in after["_contacts"].items() if field(c, "order_id") == order_id]
    else:
        return []
    out = []
    for contact_id in touched:
        fact = contact_fact(after, contact_id, tagger)
        if fact is None:
            continue
        if before is None or contact_fact(before, contact_id, tagger) != fact:
            out.append(fact)
    return out


def contacts_of(state: Mapping[str, Any]) -> list[str]:
    """What an erasure sends to the voice partition: the customer's contacts (kept and
    retired), whose facts go if they are still this customer's."""
    retired = (state.get("_retired") or {}).get("contact") or {}
    return sorted({*state["_contacts"], *retired})


def _rank(fact: Mapping[str, Any]) -> tuple[int, str, int]:
    at = fact["at"]
    return int(at[0]), str(at[1]), len(fact["skus"])


def merge_fact(stored: Mapping[str, Any] | None, fact: Mapping[str, Any]) -> dict[str, Any] | None:
    """The fact to store for a contact, or None when ``fact`` adds nothing to ``stored``.

    The newer stamp wins (then the one that knows the order's SKUs); at the same rank the
    one that arrived last wins, which is how a contact that moved to another customer takes
    its new customer along. The same fact again changes nothing.

    >>> a = {"at": [5, "e-1"], "skus": [], "customer_id": "c-1"}
    >>> merge_fact(None, a) == a, merge_fact(a, dict(a)), merge_fact({**a, "at": [6, "e-2"]}, a)
    (True, None, None)
    """
    if stored is not None and (_rank(fact) < _rank(stored) or dict(stored) == dict(fact)):
        return None
    return dict(fact)


# ----------------------------------------------------------------------------- aggregates


def _in(fact: Mapping[str, Any], start: int, end: int) -> bool:
    return bool(start < fact["opened_at"] <= end)


def _count(facts: list[Mapping[str, Any]], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in facts:
        out[f[key]] = out.get(f[key], 0) + 1
    return out


def change(count: int, previous: int) -> float | None:
    """Relative change against the previous window (None when there was nothing before)."""
    return None if previous == 0 else round((count - previous) / previous, 4)


def trend(count: int, previous: int) -> str:
    """``up``, ``down`` or ``flat``: the board's arrow."""
    return "up" if count > previous else "down" if count < previous else "flat"


def summary(now_facts: list[Mapping[str, Any]], before: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts of one group (a topic, a kind, a SKU, a channel) in a window and the one before."""
    kinds = _count(now_facts, "kind")
    resolved = [(f["resolved_at"] - f["opened_at"]) / 1000 for f in now_facts
                if f["resolved_at"] is not None and f["resolved_at"] >= f["opened_at"]]  # fmt: skip
    n, p = len(now_facts), len(before)
    return {
        "count": n,
        "previous": p,
        "change": change(n, p),
        "trend": trend(n, p),
        "kinds": {k: kinds.get(k, 0) for k in KINDS},
        "previous_kinds": {k: v for k, v in _count(before, "kind").items()},
        "open_complaints": sum(f["kind"] == "COMPLAINT" and f["open"] for f in now_facts),
        "median_resolve_s": round(median(resolved), 1) if resolved else None,
        "resolved": len(resolved),
    }


def aggregate(
    facts: Iterable[Mapping[str, Any]], now_ms: int, window_ms: int, top: int | None = None
) -> dict[str, Any]:
    """Everything the board and ``GET /voice`` show for one window ending at ``now_ms``.

    ``topics``, ``products`` and ``channels`` are sorted by count (then name); ``kinds`` has
    every kind. ``top`` cuts the topics (the rest are summed into ``other topics``)."""
    current: list[Mapping[str, Any]] = []
    previous: list[Mapping[str, Any]] = []
    for f in facts:
        if _in(f, now_ms - window_ms, now_ms):
            current.append(f)
        elif _in(f, now_ms - 2 * window_ms, now_ms - window_ms):
            previous.append(f)

    def grouped(key: str, many: bool = False) -> list[dict[str, Any]]:
        groups: dict[str, tuple[list, list]] = {}
        for bucket, facts_ in ((0, current), (1, previous)):
            for f in facts_:
                for name in (f[key] if many else [f[key]]):
                    groups.setdefault(name, ([], []))[bucket].append(f)
        rows = [{"name": name, **summary(now_f, before_f)}
                for name, (now_f, before_f) in groups.items()]  # fmt: skip
        rows.sort(key=lambda r: (-r["count"], -r["previous"], r["name"]))
        return rows

    topics = grouped("topic")
    for row in topics:
        row["topic"] = row.pop("name")
        row["kind"] = max(KINDS, key=lambda k: (row["kinds"][k], -KINDS.index(k)))
    if top is not None and len(topics) > top:
        topics = topics[:top]
    by_kind = {k: summary([f for f in current if f["kind"] == k],
                          [f for f in previous if f["kind"] == k]) for k in KINDS}  # fmt: skip
    return {
        "as_of": now_ms,
        "window_ms": window_ms,
        "from": now_ms - window_ms,
        "total": summary(current, previous),
        "topics": topics,
        "kinds": by_kind,
        "products": grouped("skus", many=True),
        "channels": grouped("channel"),
    }


def topic_record(facts: Iterable[Mapping[str, Any]], topic: str, now_ms: int) -> dict[str, Any]:
    """The voice.v1 value of one topic (schema VoiceTopic): every window of ``WINDOWS``."""
    mine = [f for f in facts if f["topic"] == topic]
    windows = []
    for name, length in WINDOWS.items():
        now_f = [f for f in mine if _in(f, now_ms - length, now_ms)]
        before = [f for f in mine if _in(f, now_ms - 2 * length, now_ms - length)]
        s = summary(now_f, before)
        windows.append({
            "window": name,
            "count": s["count"],
            "previous": s["previous"],
            "kinds": s["kinds"],
            "open_complaints": s["open_complaints"],
            "median_resolve_s": s["median_resolve_s"],
            "products": _count([{"sku": sku} for f in now_f for sku in f["skus"]], "sku"),
            "channels": _count(now_f, "channel"),
        })  # fmt: skip
    return {"topic": topic, "as_of": now_ms, "windows": windows}


def customers_behind(
    facts: Iterable[Mapping[str, Any]],
    topic: str,
    now_ms: int,
    window_ms: int,
    kind: str | None = None,
) -> list[dict[str, Any]]:
    """The customers behind a topic in a window, newest contact first, each with their own
    words (one entry per customer, their contacts listed)."""
    by_customer: dict[str, dict[str, Any]] = {}
    for f in sorted(facts, key=lambda f: (-f["opened_at"], f["contact_id"])):
        if f["topic"] != topic or not _in(f, now_ms - window_ms, now_ms):
            continue
        if kind is not None and f["kind"] != kind:
            continue
        entry = by_customer.setdefault(f["customer_id"], {
            "customer_id": f["customer_id"], "reachable": f["reachable"], "contacts": []})
        entry["reachable"] = entry["reachable"] or f["reachable"]
        entry["contacts"].append({k: f[k] for k in (
            "contact_id", "kind", "channel", "opened_at", "open", "words", "order_id", "skus",
            "tagged")})  # fmt: skip
    return list(by_customer.values())


# ---------------------------------------------------------------------------- announcements

ANNOUNCEMENT_FIELDS = frozenset({"announcement_id", "topic", "window", "kind", "text"})
MAX_ANNOUNCEMENT = 2000
def command_id_of(announcement_id: str, customer_id: str) -> str:
    """One command per announcement and customer, the same id however often it is sent."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"keel:announcement:{announcement_id}:{customer_id}"))


def announcement_of(body: Any) -> dict[str, Any]:
    """The checked request of ``POST /voice/announcements``, or :class:`Refused` (400)."""
    if not isinstance(body, dict):
        raise Refused(400, "the body must be one JSON object")
    unknown = sorted(str(k) for k in body.keys() - ANNOUNCEMENT_FIELDS)
    if unknown:
        raise Refused(400, f"unknown field {unknown[0]!r}; fields: "
                      f"{', '.join(sorted(ANNOUNCEMENT_FIELDS))}", unknown[0])  # fmt: skip
    out: dict[str, Any] = {}
    for name, limit in (("announcement_id", 200), ("topic", MAX_TOPIC), ("text", MAX_ANNOUNCEMENT)):
        value = body.get(name)
        if not isinstance(value, str) or not value.strip():
            raise Refused(400, f"{name} is required (a non-empty string)", name)
        if len(value) > limit:
            raise Refused(400, f"{name} is longer than {limit} characters", name)
        out[name] = value.strip()
    out["topic"] = normalize_topic(out["topic"])
    out["window"] = body.get("window", "7d")
    if not isinstance(out["window"], str) or out["window"] not in WINDOWS:  # {} is unhashable
        raise Refused(400, f"window must be one of {', '.join(WINDOWS)}", "window")
    out["kind"] = body.get("kind", "COMPLAINT")
    if not isinstance(out["kind"], str) or out["kind"] not in KINDS:
        raise Refused(400, f"kind must be one of {', '.join(KINDS)}", "kind")
    return out


def announce_commands(
    known: Any, request: dict[str, Any], agent: str, now_ms: int
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(one ANNOUNCE command per customer behind the topic, what was skipped and why)."""
    rows = customers_behind(known, request["topic"], now_ms,
                                  WINDOWS[request["window"]], request["kind"])  # fmt: skip
    commands, skipped = [], {"no_contact_identifier": 0}
    for row in rows:
        if not row["reachable"]:
            skipped["no_contact_identifier"] += 1
            continue
        customer_id = row["customer_id"]
        commands.append({
            "command_id": command_id_of(request["announcement_id"], customer_id),
            "type": ANNOUNCE,
            "customer_id": customer_id,
            "order_id": None,
            "contact_id": None,
            "agent": agent,
            "reason": f"announcement {request['announcement_id']} about {request['topic']}",
            "note": request["text"],
            "requested_at": now_ms,
        })  # fmt: skip
    return commands, skipped
