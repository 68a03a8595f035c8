"""Avro binary writers compiled from a schema: fastavro's bytes, several times cheaper.

fastavro's ``schemaless_writer`` walks the schema for every value it writes: a dispatch on the
type name per field and a match of every union's branches. keel writes one CustomerState per
changed customer per batch, so that walk was the worker's largest single cost (~80 µs of a
~550-byte state). :func:`compile_writer` walks the schema once and generates a Python function
that writes a value of exactly that shape::

    write = compile_writer(parsed_schema)     # NotCompilable if the schema has a union of
    body = write(record)                      # more than null and one type

The function takes only what it can write exactly as fastavro would and raises
:class:`Fallback` on anything else (a missing or extra field, a value of another type, an
out-of-range int, a tuple where a list was expected): the caller then lets fastavro write the
value, which gives the same bytes or the error that names the field. tests/unit/test_avro_writer.py
checks the bytes against fastavro's for generated values of every schema in schemas/.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from streams.errors import KeelError

__all__ = ["Fallback", "NotCompilable", "compile_writer"]

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_FLOAT = struct.Struct("<f").pack
_DOUBLE = struct.Struct("<d").pack


class Fallback(KeelError):  # noqa: N818 - a signal to the caller, not an error
    """This value is not one the compiled writer writes; let fastavro write it."""


class NotCompilable(KeelError):  # noqa: N818 - a signal to the caller, not an error
    """The schema uses something the compiler does not handle (fastavro writes it instead)."""


def _varint(out: bytearray, n: int) -> None:
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _string(out: bytearray, s: Any) -> None:
    if type(s) is not str:
        raise Fallback
    data = s.encode()  # a lone surrogate raises: fastavro then decides
    _varint(out, len(data) << 1)
    out += data


def _bytes(out: bytearray, b: Any) -> None:
    if type(b) is not bytes:
        raise Fallback
    _varint(out, len(b) << 1)
    out += b


def _boolean(out: bytearray, b: Any) -> None:
    if b is True:
        out.append(1)
    elif b is False:
        out.append(0)
    else:
        raise Fallback


def _float(out: bytearray, x: Any) -> None:
    if type(x) is not float:
        raise Fallback
    out += _FLOAT(x)


def _double(out: bytearray, x: Any) -> None:
    if type(x) is not float:
        raise Fallback
    out += _DOUBLE(x)


def _null(out: bytearray, x: Any) -> None:
    if x is not None:
        raise Fallback


#: primitives whose writing _Compiler.value inlines (the most common values of a state)
_INLINED = ("int", "long", "string")
#: the primitives written by a helper (string's also writes map keys)
_PRIMITIVES = {
    "null": "_null",
    "boolean": "_boolean",
    "float": "_float",
    "double": "_double",
    "bytes": "_bytes",
    "string": "_string",
}


class _Compiler:
    """Generates one function per named record; everything else is inlined into them."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, Any] = {
            "Fallback": Fallback,
            "_varint": _varint,
            **{helper: globals()[helper] for helper in _PRIMITIVES.values()},
        }
        self.functions: dict[str, str] = {}  # record full name -> generated function name
        self.pending: list[tuple[str, dict[str, Any]]] = []
        self.types: dict[str, Any] = {}  # full name -> schema of every named type
        self._n = 0

    def fresh(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def record_function(self, schema: dict[str, Any]) -> str:
        name = schema["name"]
        if name not in self.functions:
            self.functions[name] = self.fresh("_record")
            self.pending.append((self.functions[name], schema))
        return self.functions[name]

    def emit_record_function(self, function: str, schema: dict[str, Any]) -> None:
        fields = schema["fields"]
        body: list[str] = [
            f"def {function}(out, v):",
            f"    if type(v) is not dict or len(v) != {len(fields)}:",
            "        raise Fallback",
        ]
        for field in fields:
            value = self.fresh("f")
            body.append(f"    {value} = v[{field['name']!r}]")
            body.extend(self.value(field["type"], value, 1))
        self.lines.extend(body)
        self.lines.append("")

    def value(self, schema: Any, var: str, depth: int) -> list[str]:
        """Lines (indented ``depth`` levels) that write ``var``, a value of ``schema``."""
        pad = "    " * depth
        if isinstance(schema, str):
            if schema in ("int", "long"):  # inlined (_INLINED)
                low, high = (_INT_MIN, _INT_MAX) if schema == "int" else (_LONG_MIN, _LONG_MAX)
                return [
                    f"{pad}if type({var}) is not int or not {low} <= {var} <= {high}:",
                    f"{pad}    raise Fallback",
                    f"{pad}{var} = ({var} << 1) ^ ({var} >> 63)",
                    f"{pad}while {var} > 0x7F:",
                    f"{pad}    out.append(({var} & 0x7F) | 0x80)",
                    f"{pad}    {var} >>= 7",
                    f"{pad}out.append({var})",
                ]
            if schema == "string":
                data = self.fresh("s")
                return [
                    f"{pad}if type({var}) is not str:",
                    f"{pad}    raise Fallback",
                    f"{pad}{data} = {var}.encode()",
                    f"{pad}if len({data}) < 64:",
                    f"{pad}    out.append(len({data}) << 1)",
                    f"{pad}else:",
                    f"{pad}    _varint(out, len({data}) << 1)",
                    f"{pad}out += {data}",
                ]
            if schema in _PRIMITIVES:
                return [f"{pad}{_PRIMITIVES[schema]}(out, {var})"]
            if schema in self.types:
                return self.value(self.types[schema], var, depth)
            raise NotCompilable(f"unknown type {schema!r}")
        if isinstance(schema, list):
            return self.union(schema, var, depth)
        kind = schema["type"]
        if kind in _PRIMITIVES or kind in _INLINED:  # {"type": "long"}: a logical type kept
            return self.value(kind, var, depth)
        if kind == "record":
            return [f"{pad}{self.record_function(schema)}(out, {var})"]
        if kind == "enum":
            table = self.fresh("_enum")
            self.names[table] = {
                symbol: _zigzag_bytes(i) for i, symbol in enumerate(schema["symbols"])
            }
            return [
                f"{pad}if type({var}) is not str or {var} not in {table}:",
                f"{pad}    raise Fallback",
                f"{pad}out += {table}[{var}]",
            ]
        if kind == "fixed":
            return [
                f"{pad}if type({var}) is not bytes or len({var}) != {int(schema['size'])}:",
                f"{pad}    raise Fallback",
                f"{pad}out += {var}",
            ]
        if kind in ("array", "map"):
            item = self.fresh("i")
            if kind == "array":
                head = [f"{pad}if type({var}) is not list:", f"{pad}    raise Fallback"]
                loop = [f"{pad}    for {item} in {var}:"]
                inner = self.value(schema["items"], item, depth + 2)
            else:
                key = self.fresh("k")
                head = [f"{pad}if type({var}) is not dict:", f"{pad}    raise Fallback"]
                loop = [
                    f"{pad}    for {key}, {item} in {var}.items():",
                    f"{pad}        _string(out, {key})",
                ]
                inner = self.value(schema["values"], item, depth + 2)
            return [
                *head,
                f"{pad}if {var}:",
                f"{pad}    _varint(out, len({var}) << 1)",
                *loop,
                *inner,
                f"{pad}out.append(0)",
            ]
        raise NotCompilable(f"type {kind!r}")

    def union(self, branches: list[Any], var: str, depth: int) -> list[str]:
        pad = "    " * depth
        if len(branches) != 2 or branches.count("null") != 1:
            raise NotCompilable("only unions of null and one other type are compiled")
        null_at = branches.index("null")
        other = branches[1 - null_at]
        return [
            f"{pad}if {var} is None:",
            f"{pad}    out.append({null_at << 1})",
            f"{pad}else:",
            f"{pad}    out.append({(1 - null_at) << 1})",
            *self.value(other, var, depth + 1),
        ]


def _collect(node: Any, types: dict[str, Any]) -> None:
    """Every named type defined in ``node``, by full name (a later field may use the name)."""
    if isinstance(node, list):
        for branch in node:
            _collect(branch, types)
    elif isinstance(node, dict):
        if node.get("type") in ("record", "enum", "fixed"):
            types[node["name"]] = node
        for field in node.get("fields", ()):
            _collect(field["type"], types)
        for key in ("items", "values"):
            if key in node:
                _collect(node[key], types)


def _zigzag_bytes(n: int) -> bytes:
    out = bytearray()
    _varint(out, (n << 1) ^ (n >> 63))
    return bytes(out)


def compile_writer(schema: dict[str, Any]) -> Callable[[Any], bytes]:
    """A function writing values of ``schema`` (a record parsed by fastavro, logical types
    stripped) as Avro binary, byte for byte what ``fastavro.schemaless_writer`` writes.

    Raises :class:`NotCompilable` for schemas it does not handle; the function raises
    :class:`Fallback` for a value it does not write.
    """
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise NotCompilable("only record schemas are compiled")
    compiler = _Compiler()
    _collect(schema, compiler.types)
    top = compiler.record_function(schema)
    while compiler.pending:
        function, record = compiler.pending.pop()
        compiler.emit_record_function(function, record)
    source = "\n".join(
        [
            *compiler.lines,
            "def write(v):",
            "    out = bytearray()",
            f"    {top}(out, v)",
            "    return bytes(out)",
        ]
    )
    namespace = dict(compiler.names)
    exec(compile(source, f"<avro writer {schema['name']}>", "exec"), namespace)  # noqa: S102 - generated from a schema file, not from data
    writer: Callable[[Any], bytes] = namespace["write"]
    return writer
