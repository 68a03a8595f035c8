"""An Avro schema compiled into a pair of closures: keel's dict to JSON, and JSON to keel's dict.

streams/encoding/jsonconv.py compiles each record once and caches the pair; this module is the
compiler. ``to_json`` is None where a subtree holds neither a timestamp nor a record, so such
values pass through untouched. ``from_json`` validates strictly (types, ranges, enum symbols,
unknown and missing fields, blank ids) and raises :class:`Invalid`, whose path the enclosing
converters build on the way out, only when something fails.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable
from typing import Any

from streams.domain.ids import ID_FIELDS, ID_RULE, is_blank
from streams.encoding.codec import map_key_segment
from streams.encoding.timestamps import EXACT_FLOAT, describe, iso_ms, parse_ts
from streams.errors import KeelError

__all__ = ["Conv", "Invalid", "compile_pair"]

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1

#: one converter: a value in, the converted value out (or :class:`Invalid`)
Conv = Callable[[Any], Any]


def compile_pair(schema: Any, named: dict[str, Any]) -> tuple[Conv, Conv]:
    """``(to_json, from_json)`` of a fastavro-parsed ``schema`` (``named``: its named types)."""
    out, inp = _Compiler(named).compile(schema)
    return out or _identity, inp


class Invalid(KeelError):
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


def _identity(value: Any) -> Any:
    return value


class _Compiler:
    """Turns a fastavro-parsed schema into a pair of closures (to_json, from_json).

    ``to_json`` is None where a subtree holds neither a timestamp nor a record, so such values
    (strings, enums, arrays of strings...) pass through untouched instead of being walked.
    """

    def __init__(self, named: dict[str, Any]) -> None:
        self._named = named
        self._done: dict[str, tuple[Conv | None, Conv]] = {}
        self._in_progress: set[str] = set()

    def compile(self, schema: Any) -> tuple[Conv | None, Conv]:
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

    def _named_type(self, name: str, schema: Any = None) -> tuple[Conv | None, Conv]:
        if name in self._done:
            return self._done[name]
        if name in self._in_progress:  # a recursive type: look the converters up when called
            done = self._done
            return (lambda v: (done[name][0] or _identity)(v)), (lambda v: done[name][1](v))
        schema = schema if schema is not None else self._named[name]
        self._in_progress.add(name)
        if schema["type"] == "enum":
            pair: tuple[Conv | None, Conv] = (None, _enum_in(schema["symbols"]))
        elif schema["type"] == "fixed":
            pair = (_bytes_out, _bytes_in(schema["size"]))
        else:
            pair = self._record(name, schema["fields"])
        self._in_progress.discard(name)
        self._done[name] = pair
        return pair

    def _record(self, name: str, fields: list[dict[str, Any]]) -> tuple[Conv | None, Conv]:
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
                raise Invalid(f"expected a dict ({short}), got {type(value).__name__}")
            result = {}
            for fname, out, _, has_default, default in compiled:
                if fname in value:
                    if out is None:
                        result[fname] = value[fname]
                    else:
                        try:
                            result[fname] = out(value[fname])
                        except Invalid as exc:
                            exc.segments.append(fname)
                            raise
                elif has_default:
                    result[fname] = fresh(default)
                else:
                    raise Invalid("missing required field", fname)
            return result

        def rec_in(value: Any) -> Any:
            if not isinstance(value, dict):
                raise Invalid(f"expected an object ({short}), got {describe(value)}")
            if not known.issuperset(value):
                raise _unknown_field(value, order, short)
            result = {}
            for fname, _, inp, has_default, default in compiled:
                if fname in value:
                    try:
                        result[fname] = inp(value[fname])
                    except Invalid as exc:
                        exc.segments.append(fname)
                        raise
                elif has_default:
                    result[fname] = fresh(default)
                else:
                    raise Invalid("missing required field", fname)
            return result

        # Records are always rebuilt, so keys outside the schema never leak into JSON.
        return rec_out, rec_in

    def _array(self, items: Any) -> tuple[Conv | None, Conv]:
        item_out, item_in = self.compile(items)

        def arr_in(value: Any) -> Any:
            if not isinstance(value, list):
                raise Invalid(f"expected an array, got {describe(value)}")
            result = []
            for index, item in enumerate(value):
                try:
                    result.append(item_in(item))
                except Invalid as exc:
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
                except Invalid as exc:
                    exc.segments.append(f"[{index}]")
                    raise
            return result

        return arr_out, arr_in

    def _map(self, values: Any) -> tuple[Conv | None, Conv]:
        value_out, value_in = self.compile(values)

        def map_in(value: Any) -> Any:
            if not isinstance(value, dict):
                raise Invalid(f"expected an object, got {describe(value)}")
            result = {}
            for key, item in value.items():
                try:
                    result[key] = value_in(item)
                except Invalid as exc:
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
                except Invalid as exc:
                    exc.segments.append(map_key_segment(str(key)))
                    raise
            return result

        return map_out, map_in

    def _union(self, branches: list[Any]) -> tuple[Conv | None, Conv]:
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
                except Invalid:
                    continue
            allowed = ", ".join(kinds + (["null"] if nullable else []))
            raise Invalid(f"expected one of {allowed}, got {describe(value)}")

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
            raise Invalid(f"{type(value).__name__} value matches no branch of the union")

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
        raise Invalid(f"expected epoch milliseconds (int), got {type(value).__name__}")
    try:
        return iso_ms(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def _ts_in(value: Any) -> int:
    try:
        return parse_ts(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def _int_in(low: int, high: int, label: str) -> Conv:
    """An Avro int/long: a JSON integer, written as ``2`` or, as JSON Schema allows, ``2.0``."""

    def conv(value: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            if not low <= value <= high:
                raise Invalid(f"{value:.0f} is outside the {label} range {low}..{high}")
            if abs(value) > EXACT_FLOAT:
                raise Invalid(
                    f"{describe(value)} is too large to be read exactly when written with a "
                    "fraction or exponent; write it as a plain integer"
                )
            return int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise Invalid(f"expected an integer, got {describe(value)}")
        if not low <= value <= high:
            raise Invalid(f"{value} is outside the {label} range {low}..{high}")
        return value

    return conv


def _id_in(inner: Conv) -> Conv:
    """``inner`` (a string, or null where the field is nullable) that refuses blank ids."""

    def conv(value: Any) -> Any:
        result = inner(value)
        if isinstance(result, str) and is_blank(result):
            raise Invalid(ID_RULE)
        return result

    return conv


def _type_in(types: tuple[type, ...], expected: str) -> Conv:
    def conv(value: Any) -> Any:
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise Invalid(f"expected {expected}, got {describe(value)}")
        return value

    return conv


def _float_in(value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise Invalid(f"expected a number, got {describe(value)}")
    return float(value)


def _null_in(value: Any) -> None:
    if value is not None:
        raise Invalid(f"expected null, got {describe(value)}")


def _bytes_in(size: int | None) -> Conv:
    """Avro's JSON form of bytes/fixed: a string whose code points are the byte values."""

    def conv(value: Any) -> bytes:
        if not isinstance(value, str):
            raise Invalid(f"expected a string of bytes, got {describe(value)}")
        try:
            data = value.encode("latin-1")
        except UnicodeEncodeError:
            raise Invalid("bytes must be written as characters U+0000..U+00FF") from None
        if size is not None and len(data) != size:
            raise Invalid(f"expected exactly {size} bytes, got {len(data)}")
        return data

    return conv


def _bytes_out(value: Any) -> Any:
    """Avro's JSON form of bytes, so that to_json output is always serialisable."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("latin-1")
    raise Invalid(f"expected bytes, got {type(value).__name__}")


def _primitive(kind: str) -> tuple[Conv | None, Conv]:
    return (_bytes_out if kind == "bytes" else None), _primitive_in(kind)


def _primitive_in(kind: str) -> Conv:
    converters: dict[str, Conv] = {
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


def _enum_in(symbols: list[str]) -> Conv:
    allowed = frozenset(symbols)
    listing = ", ".join(symbols)

    def conv(value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid(f"expected one of {listing}, got {describe(value)}")
        if value not in allowed:
            raise Invalid(f"{describe(value)} is not one of {listing}")
        return value

    return conv


def _unknown_field(value: dict[Any, Any], known: list[str], record: str) -> Invalid:
    extra = sorted(str(key) for key in value.keys() - known)[0]
    absent = [k for k in known if k not in value]
    close = difflib.get_close_matches(extra, absent, n=1) or difflib.get_close_matches(
        extra, known, n=1
    )
    hint = f"; did you mean {close[0]!r}?" if close else f"; {record} has no such field"
    return Invalid(f"unknown field{hint}", extra)
