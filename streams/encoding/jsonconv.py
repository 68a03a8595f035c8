"""Schema-driven conversion between keel's internal dicts and their JSON form (CONTRACT.md §2).

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
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import fastavro

from streams.domain.ids import ID_FIELDS, ID_RULE, is_blank
from streams.encoding.codec import Codec, get_codec, map_key_segment
from streams.errors import KeelError

__all__ = [
    "JsonConverter",
    "JsonFieldError",
    "from_json",
    "iso_ms",
    "parse_ts",
    "to_json",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = _EPOCH.toordinal()
_ONE_MS = timedelta(milliseconds=1)
_MS_PER_DAY = 86_400_000
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_TS_MIN = -62_135_596_800_000  # 0001-01-01T00:00:00.000Z
_TS_MAX = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_TS_HINT = "an ISO-8601 timestamp like 2026-11-23T10:03:00.123Z or epoch milliseconds"
_EXACT_FLOAT = 2**53  # beyond it a number with a fraction or exponent may not be the one written

_Conv = Callable[[Any], Any]


class JsonFieldError(KeelError, ValueError):
    """A JSON value does not fit the schema; ``field`` is the dotted path ("" for the root)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC, always with milliseconds and ``Z``.

    >>> iso_ms(0)
    '1970-01-01T00:00:00.000Z'
    """
    if not isinstance(ms, int) or isinstance(ms, bool):
        raise TypeError(f"expected epoch milliseconds (int), got {type(ms).__name__}")
    days, ms_of_day = divmod(ms, _MS_PER_DAY)
    seconds, millis = divmod(ms_of_day, 1000)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    return f"{_iso_day(days)}T{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}Z"


@functools.lru_cache(maxsize=4096)
def _iso_day(days: int) -> str:
    """The date part for a day since the epoch; cached because a state's timestamps cluster."""
    try:
        day = date.fromordinal(_EPOCH_ORDINAL + days)
    except (ValueError, OverflowError):
        raise ValueError(f"day {days} since 1970 is outside the years 1..9999") from None
    return f"{day.year:04d}-{day.month:02d}-{day.day:02d}"


def parse_ts(value: object) -> int:
    """Epoch milliseconds from an ISO-8601 string with ``Z`` or an offset, or from an integer.

    An integer may be a float with a zero fraction (JSON's ``1795428180123.0``), as JSON Schema
    counts it an integer.

    A string without a UTC offset is rejected rather than guessed: a department's local time
    silently read as UTC would shift every event by hours. Sub-millisecond digits are truncated.
    The instant must lie in the years 0001..9999 (UTC) so that :func:`iso_ms` can show it again.
    Raises :class:`ValueError` with a reason a sender can act on.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected {_TS_HINT}, got {_describe(value)}")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT_FLOAT:
        ms = int(value)
    elif isinstance(value, str):
        if value.lstrip("-").isdigit() and len(value) > 8:  # not a basic-format ISO date
            raise ValueError(
                f"{_describe(value)}: send epoch milliseconds as a JSON number, not a string"
            )
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{_describe(value)} is not {_TS_HINT}") from None
        if parsed.tzinfo is None:
            raise ValueError(
                f"{_describe(value)} has no UTC offset; add Z for UTC or an offset like +01:00"
            )
        ms = (parsed - _EPOCH) // _ONE_MS
    elif isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime: attach a timezone so the instant is unambiguous")
        ms = (value - _EPOCH) // _ONE_MS
    else:
        raise ValueError(f"expected {_TS_HINT}, got {_describe(value)}")
    if not _TS_MIN <= ms <= _TS_MAX:
        hint = " (micro- or nanoseconds instead of milliseconds?)" if isinstance(value, int) else ""
        raise ValueError(f"{_describe(value)} lies outside the years 0001..9999 UTC{hint}")
    return ms


class JsonConverter:
    """Converts records of one codec's schemas; compiled once per record name, then cached.

    The module functions use one over :func:`streams.encoding.codec.get_codec`; build your own to
    convert against another schema directory (e.g. in tests).
    """

    def __init__(self, codec: Codec | None = None) -> None:
        self._codec = codec if codec is not None else get_codec()
        self._compiled: dict[str, tuple[_Conv, _Conv]] = {}

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

    def _converters(self, name: str) -> tuple[_Conv, _Conv]:
        pair = self._compiled.get(name)
        if pair is None:
            named: dict[str, Any] = {}
            parsed = fastavro.parse_schema(self._codec.schema(name), named_schemas=named)
            out, inp = _Compiler(named).compile(parsed)
            pair = (out or _identity, inp)
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


# --- compiled converters ----------------------------------------------------------------------


class _Invalid(KeelError):
    """A value failed to convert; enclosing converters add their path segment on the way out.

    Building the path only when something fails keeps the valid path free of string work.
    """

    def __init__(self, reason: str, segment: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.segments: list[str] = [] if segment is None else [segment]

    def path(self) -> str:
        path = ""
        for segment in reversed(self.segments):
            if not path or segment.startswith("["):
                path += segment
            else:
                path += "." + segment
        return path


def _run(conv: _Conv, value: Any) -> Any:
    try:
        return conv(value)
    except _Invalid as exc:
        raise JsonFieldError(exc.path(), exc.reason) from None


def _identity(value: Any) -> Any:
    return value


class _Compiler:
    """Turns a fastavro-parsed schema into a pair of closures (to_json, from_json).

    ``to_json`` is None where a subtree holds neither a timestamp nor a record, so such values
    (strings, enums, arrays of strings...) pass through untouched instead of being walked.
    """

    def __init__(self, named: dict[str, Any]) -> None:
        self._named = named
        self._done: dict[str, tuple[_Conv | None, _Conv]] = {}
        self._in_progress: set[str] = set()

    def compile(self, schema: Any) -> tuple[_Conv | None, _Conv]:
        if isinstance(schema, list):
            return self._union(schema)
        if isinstance(schema, str):
            if schema in self._named:
                return self._named_type(schema)
            return _primitive(schema)
        kind = schema["type"]
        if kind in ("record", "enum", "fixed"):
            return self._named_type(schema["name"], schema)
        if kind == "array":
            return self._array(schema["items"])
        if kind == "map":
            return self._map(schema["values"])
        if isinstance(kind, dict | list):
            return self.compile(kind)
        if kind == "long" and schema.get("logicalType") == "timestamp-millis":
            return _ts_out, _ts_in
        return _primitive(kind)

    def _named_type(self, name: str, schema: Any = None) -> tuple[_Conv | None, _Conv]:
        if name in self._done:
            return self._done[name]
        if name in self._in_progress:  # a recursive type: look the converters up when called
            done = self._done
            return (lambda v: (done[name][0] or _identity)(v)), (lambda v: done[name][1](v))
        schema = schema if schema is not None else self._named[name]
        self._in_progress.add(name)
        if schema["type"] == "enum":
            pair: tuple[_Conv | None, _Conv] = (None, _enum_in(schema["symbols"]))
        elif schema["type"] == "fixed":
            pair = (_bytes_out, _bytes_in(schema["size"]))
        else:
            pair = self._record(name, schema["fields"])
        self._in_progress.discard(name)
        self._done[name] = pair
        return pair

    def _record(self, name: str, fields: list[dict[str, Any]]) -> tuple[_Conv | None, _Conv]:
        compiled = []
        for field in fields:
            out, inp = self.compile(field["type"])
            if field["name"] in ID_FIELDS:
                inp = _id_in(inp)
            compiled.append((field["name"], out, inp, "default" in field, field.get("default")))
        mutable_defaults = any(isinstance(c[4], dict | list) for c in compiled)
        fresh: Callable[[Any], Any] = copy.deepcopy if mutable_defaults else _identity
        order = [f[0] for f in compiled]
        known = frozenset(order)
        short = name.rsplit(".", 1)[-1]

        def rec_out(value: Any) -> Any:
            if not isinstance(value, dict):
                raise _Invalid(f"expected a dict ({short}), got {type(value).__name__}")
            result = {}
            for fname, out, _, has_default, default in compiled:
                if fname in value:
                    if out is None:
                        result[fname] = value[fname]
                    else:
                        try:
                            result[fname] = out(value[fname])
                        except _Invalid as exc:
                            exc.segments.append(fname)
                            raise
                elif has_default:
                    result[fname] = fresh(default)
                else:
                    raise _Invalid("missing required field", fname)
            return result

        def rec_in(value: Any) -> Any:
            if not isinstance(value, dict):
                raise _Invalid(f"expected an object ({short}), got {_describe(value)}")
            if not known.issuperset(value):
                raise _unknown_field(value, order, short)
            result = {}
            for fname, _, inp, has_default, default in compiled:
                if fname in value:
                    try:
                        result[fname] = inp(value[fname])
                    except _Invalid as exc:
                        exc.segments.append(fname)
                        raise
                elif has_default:
                    result[fname] = fresh(default)
                else:
                    raise _Invalid("missing required field", fname)
            return result

        # Records are always rebuilt, so keys outside the schema never leak into JSON.
        return rec_out, rec_in

    def _array(self, items: Any) -> tuple[_Conv | None, _Conv]:
        item_out, item_in = self.compile(items)

        def arr_in(value: Any) -> Any:
            if not isinstance(value, list):
                raise _Invalid(f"expected an array, got {_describe(value)}")
            result = []
            for index, item in enumerate(value):
                try:
                    result.append(item_in(item))
                except _Invalid as exc:
                    exc.segments.append(f"[{index}]")
                    raise
            return result

        if item_out is None:
            return None, arr_in
        convert = item_out

        def arr_out(value: Any) -> Any:
            result = []
            for index, item in enumerate(value):
                try:
                    result.append(convert(item))
                except _Invalid as exc:
                    exc.segments.append(f"[{index}]")
                    raise
            return result

        return arr_out, arr_in

    def _map(self, values: Any) -> tuple[_Conv | None, _Conv]:
        value_out, value_in = self.compile(values)

        def map_in(value: Any) -> Any:
            if not isinstance(value, dict):
                raise _Invalid(f"expected an object, got {_describe(value)}")
            result = {}
            for key, item in value.items():
                try:
                    result[key] = value_in(item)
                except _Invalid as exc:
                    exc.segments.append(map_key_segment(str(key)))
                    raise
            return result

        if value_out is None:
            return None, map_in
        convert = value_out

        def map_out(value: Any) -> Any:
            result = {}
            for key, item in value.items():
                try:
                    result[key] = convert(item)
                except _Invalid as exc:
                    exc.segments.append(map_key_segment(str(key)))
                    raise
            return result

        return map_out, map_in

    def _union(self, branches: list[Any]) -> tuple[_Conv | None, _Conv]:
        nullable = "null" in branches
        others = [b for b in branches if b != "null"]
        compiled = [self.compile(b) for b in others]
        if len(compiled) == 1:
            out, inp = compiled[0]

            def one_in(value: Any) -> Any:
                return None if value is None and nullable else inp(value)

            if out is None:
                return None, one_in
            convert = out

            def one_out(value: Any) -> Any:
                return None if value is None else convert(value)

            return one_out, one_in

        kinds = [self._kind(b) for b in others]

        def many_in(value: Any) -> Any:
            if value is None and nullable:
                return None
            for _, inp in compiled:
                try:
                    return inp(value)
                except _Invalid:
                    continue
            allowed = ", ".join(kinds + (["null"] if nullable else []))
            raise _Invalid(f"expected one of {allowed}, got {_describe(value)}")

        if all(out is None for out, _ in compiled):
            return None, many_in
        accepts = [
            (_python_types(self._kind(b)), out or _identity)
            for b, (out, _) in zip(others, compiled, strict=True)
        ]

        def many_out(value: Any) -> Any:
            if value is None:
                return None
            for types, out in accepts:
                if isinstance(value, types) and not (isinstance(value, bool) and bool not in types):
                    return out(value)
            raise _Invalid(f"{type(value).__name__} value matches no branch of the union")

        return many_out, many_in

    def _kind(self, schema: Any) -> str:
        if isinstance(schema, str):
            return self._named[schema]["type"] if schema in self._named else schema
        kind = schema["type"]
        return kind if isinstance(kind, str) else self._kind(kind)


def _python_types(kind: str) -> tuple[type, ...]:
    return {
        "boolean": (bool,),
        "int": (int,),
        "long": (int,),
        "float": (float, int),
        "double": (float, int),
        "string": (str,),
        "enum": (str,),
        "bytes": (bytes,),
        "fixed": (bytes,),
        "array": (list,),
        "map": (dict,),
        "record": (dict,),
    }.get(kind, ())


def _ts_out(value: Any) -> str:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Invalid(f"expected epoch milliseconds (int), got {type(value).__name__}")
    try:
        return iso_ms(value)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _ts_in(value: Any) -> int:
    try:
        return parse_ts(value)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _int_in(low: int, high: int, label: str) -> _Conv:
    """An Avro int/long: a JSON integer, written as ``2`` or, as JSON Schema allows, ``2.0``."""

    def conv(value: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            if not low <= value <= high:
                raise _Invalid(f"{value:.0f} is outside the {label} range {low}..{high}")
            if abs(value) > _EXACT_FLOAT:
                raise _Invalid(
                    f"{_describe(value)} is too large to be read exactly when written with a "
                    "fraction or exponent; write it as a plain integer"
                )
            return int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Invalid(f"expected an integer, got {_describe(value)}")
        if not low <= value <= high:
            raise _Invalid(f"{value} is outside the {label} range {low}..{high}")
        return value

    return conv


def _id_in(inner: _Conv) -> _Conv:
    """``inner`` (a string, or null where the field is nullable) that refuses blank ids."""

    def conv(value: Any) -> Any:
        result = inner(value)
        if isinstance(result, str) and is_blank(result):
            raise _Invalid(ID_RULE)
        return result

    return conv


def _type_in(types: tuple[type, ...], expected: str) -> _Conv:
    def conv(value: Any) -> Any:
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise _Invalid(f"expected {expected}, got {_describe(value)}")
        return value

    return conv


def _float_in(value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _Invalid(f"expected a number, got {_describe(value)}")
    return float(value)


def _null_in(value: Any) -> None:
    if value is not None:
        raise _Invalid(f"expected null, got {_describe(value)}")


def _bytes_in(size: int | None) -> _Conv:
    """Avro's JSON form of bytes/fixed: a string whose code points are the byte values."""

    def conv(value: Any) -> bytes:
        if not isinstance(value, str):
            raise _Invalid(f"expected a string of bytes, got {_describe(value)}")
        try:
            data = value.encode("latin-1")
        except UnicodeEncodeError:
            raise _Invalid("bytes must be written as characters U+0000..U+00FF") from None
        if size is not None and len(data) != size:
            raise _Invalid(f"expected exactly {size} bytes, got {len(data)}")
        return data

    return conv


def _bytes_out(value: Any) -> Any:
    """Avro's JSON form of bytes, so that to_json output is always serialisable."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("latin-1")
    raise _Invalid(f"expected bytes, got {type(value).__name__}")


def _primitive(kind: str) -> tuple[_Conv | None, _Conv]:
    return (_bytes_out if kind == "bytes" else None), _primitive_in(kind)


def _primitive_in(kind: str) -> _Conv:
    converters: dict[str, _Conv] = {
        "null": _null_in,
        "boolean": _type_in((bool,), "true or false"),
        "int": _int_in(_INT_MIN, _INT_MAX, "32-bit int"),
        "long": _int_in(_LONG_MIN, _LONG_MAX, "64-bit long"),
        "float": _float_in,
        "double": _float_in,
        "string": _type_in((str,), "a string"),
        "bytes": _bytes_in(None),
    }
    if kind not in converters:
        raise ValueError(f"unsupported Avro type {kind!r}")
    return converters[kind]


def _enum_in(symbols: list[str]) -> _Conv:
    allowed = frozenset(symbols)
    listing = ", ".join(symbols)

    def conv(value: Any) -> str:
        if not isinstance(value, str):
            raise _Invalid(f"expected one of {listing}, got {_describe(value)}")
        if value not in allowed:
            raise _Invalid(f"{_describe(value)} is not one of {listing}")
        return value

    return conv


def _unknown_field(value: dict[Any, Any], known: list[str], record: str) -> _Invalid:
    extra = sorted(str(key) for key in value.keys() - known)[0]
    absent = [k for k in known if k not in value]
    close = difflib.get_close_matches(extra, absent, n=1) or difflib.get_close_matches(
        extra, known, n=1
    )
    hint = f"; did you mean {close[0]!r}?" if close else f"; {record} has no such field"
    return _Invalid(f"unknown field{hint}", extra)


def _describe(value: Any) -> str:
    """A JSON-flavoured description of a value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return f"string {text if len(text) <= 60 else text[:57] + '…'}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
