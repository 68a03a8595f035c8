"""Schema-driven conversion between keel's internal dicts and their JSON form (docs/contract.md §2).

Inside keel a ``timestamp-millis`` value is an ``int`` of epoch milliseconds; in JSON (query API,
HTTP ingest, outbox payloads, Redis) it is an ISO-8601 UTC string with millisecond precision and
a ``Z`` suffix. Everything else already has the same shape in both worlds. The ``.avsc`` files say
which fields are timestamps, so the conversion is driven by them and a new timestamp field needs
no code change here.

``from_json`` is the gate for data from outside keel, so it validates strictly against the latest
schema and reports the first problem as a :class:`JsonFieldError` whose ``field`` is a dotted path
(``items[1].quantity``, ``last_event_at.webshop``) a sender can act on. Two rules go with the
schema: an ``int``/``long`` (timestamps too) may be written as a number with a zero fraction
(``2.0``, ``1e3``), which JSON Schema calls an integer, and an id
(:data:`streams.domain.ids.ID_FIELDS`)
must not be blank::

    >>> to_json("CustomerSignal", {"customer_id": "c-1", "status": "RAISED",
    ...     "type": "SHIPMENT_LATE", "order_id": "o-1", "shipment_id": None,
    ...     "contact_id": None, "at": 1795428180123, "detail": None})["at"]
    '2026-11-23T10:03:00.123Z'
    >>> parse_ts("2026-11-23T11:03:00.123+01:00")
    1795428180123
    >>> iso_ms(0)
    '1970-01-01T00:00:00.000Z'

The timestamps themselves are streams/encoding/timestamps.py's; the compiled converters,
one pair per record, streams/encoding/jsoncompile.py's.
"""

from __future__ import annotations

import functools
from typing import Any

import fastavro

from streams.encoding.codec import Codec, get_codec
from streams.encoding.jsoncompile import Conv, Invalid, compile_pair
from streams.encoding.timestamps import iso_ms, parse_ts
from streams.errors import KeelError

__all__ = [
    "JsonConverter",
    "JsonFieldError",
    "from_json",
    "iso_ms",
    "parse_ts",
    "to_json",
]


class JsonFieldError(KeelError, ValueError):
    """A JSON value does not fit the schema; ``field`` is the dotted path ("" for the root)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


class JsonConverter:
    """Converts records of one codec's schemas; compiled once per record name, then cached.

    The module functions use one over :func:`streams.encoding.codec.get_codec`; build your own to
    convert against another schema directory (e.g. in tests).
    """

    def __init__(self, codec: Codec | None = None) -> None:
        self._codec = codec if codec is not None else get_codec()
        self._compiled: dict[str, tuple[Conv, Conv]] = {}

    def to_json(self, name: str, record: dict[str, Any]) -> dict[str, Any]:
        """``record`` with timestamps as ISO strings; values without timestamps are shared.

        Fields that are not in the schema are left out; a missing field without a default or
        a timestamp that is not an int raises :class:`JsonFieldError` (a bug in keel, not input).
        """
        out, _ = self._converters(name)
        result: dict[str, Any] = _run(out, record)
        return result

    def from_json(self, name: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Validate ``obj`` against the latest schema of ``name`` and return keel's dict.

        Absent nullable fields become their default (None); integral floats (``2.0``) become
        ints; unknown fields, missing required fields, wrong types, out-of-range integers,
        unknown enum symbols and blank ids raise :class:`JsonFieldError`.
        """
        _, inp = self._converters(name)
        result: dict[str, Any] = _run(inp, obj)
        return result

    def _converters(self, name: str) -> tuple[Conv, Conv]:
        pair = self._compiled.get(name)
        if pair is None:
            named: dict[str, Any] = {}
            parsed = fastavro.parse_schema(self._codec.schema(name), named_schemas=named)
            pair = compile_pair(parsed, named)
            self._compiled[name] = pair
        return pair


@functools.cache
def _converter() -> JsonConverter:
    """The converter over the process-wide codec, built on first use."""
    return JsonConverter()


def to_json(name: str, record: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready copy of an internal ``name`` record (see :meth:`JsonConverter.to_json`)."""
    return _converter().to_json(name, record)


def from_json(name: str, obj: dict[str, Any]) -> dict[str, Any]:
    """Internal ``name`` record from parsed JSON (see :meth:`JsonConverter.from_json`)."""
    return _converter().from_json(name, obj)


def _run(conv: Conv, value: Any) -> Any:
    try:
        return conv(value)
    except Invalid as exc:
        raise JsonFieldError(exc.path(), exc.reason) from None
