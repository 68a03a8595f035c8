"""Which fields are ids, and what an id must look like: one rule for every way into keel.

HTTP ingest and the PostgreSQL outbox (through :func:`streams.encoding.jsonconv.from_json`), the
worker's intake (``streams.worker.intake.decode_input``) and the generated OpenAPI document
(``connectors.openapi``) all read this module, so they cannot disagree.

An id must contain at least one character that is not whitespace. ``""`` or ``"  "`` as a
``customer_id`` would not name a customer but join every such order into one; as an
``event_id`` it would make every such event a duplicate of the first. Ids are otherwise taken
as sent (not trimmed: ``" c-1"`` and ``"c-1"`` are two ids, as they are two Kafka keys).

"Whitespace" is Unicode's White_Space property, spelled out as code points in
:data:`ID_PATTERN` so that Python, JavaScript (ECMA-262) and Rust regular expressions, which
each read ``\\s`` differently, all agree with keel's check::

    >>> blank_id({"event_id": "e-1", "order_id": " ", "customer_id": None})
    'order_id'
    >>> blank_id({"event_id": "e-1", "customer_id": "c-1"}) is None
    True
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["ID_FIELDS", "ID_PATTERN", "ID_RULE", "blank_id", "is_blank"]

ID_FIELDS: tuple[str, ...] = ("event_id", "order_id", "customer_id", "contact_id", "shipment_id")
"""Fields, in any record, that hold an id; where one is nullable, null stays allowed."""

_WHITESPACE = r"\u0009-\u000d\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
ID_PATTERN = f"[^{_WHITESPACE}]"
"""JSON Schema ``pattern`` (a search, not a full match): a character that is not whitespace."""

ID_RULE = "an id must contain a character other than whitespace"
"""The reason given to a sender, after the field's path."""

_NOT_BLANK = re.compile(ID_PATTERN)


def is_blank(value: str) -> bool:
    """True for ``""`` and for strings of nothing but whitespace (which no id may be)."""
    return _NOT_BLANK.search(value) is None


def blank_id(record: Mapping[str, Any]) -> str | None:
    """The first of :data:`ID_FIELDS` that ``record`` holds as a blank string, else None."""
    for field in ID_FIELDS:
        value = record.get(field)
        if isinstance(value, str) and is_blank(value):
            return field
    return None
