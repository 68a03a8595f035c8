"""The one Avro single-object codec for every keel topic value (docs/contract.md §2).

A value is ``C3 01`` + the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's
Parsing Canonical Form + the Avro binary body. The fingerprint names the writer schema among the
``schemas/*.avsc`` files (every released version stays there), and the body is resolved from that
writer schema to the latest version of the record the caller asked for, so old and new producers
can share a topic.

Representation inside keel: ``timestamp-millis`` values are plain ``int`` epoch milliseconds
(never ``datetime``), enums are ``str``, nullable fields are ``None`` or the value. The logical
type annotation is stripped before fastavro sees a schema, so fastavro neither converts on read
nor insists on ``datetime`` on write; the fingerprint is unaffected because the Parsing Canonical
Form drops ``logicalType`` and ``doc`` anyway.

Values are written by a writer compiled from each schema (streams/encoding/avro_writer.py, the same
bytes as fastavro's, ~2x cheaper); a value it does not take goes to fastavro's writer.

Errors, all rooted at :class:`CodecError` so a caller needs one ``except``::

    CodecError              .reason: what went wrong and what to check (a dead letter's x-error)
    ├── UnknownSchemaError  the fingerprint (or record name/version) is not among schemas/
    └── DecodeError         bad magic, truncated or garbage body, writer/reader incompatibility

Example::

    codec = get_codec()
    data = codec.encode("CustomerSignal", signal)
    assert codec.decode(data, "CustomerSignal") == signal
"""

from __future__ import annotations

import functools
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint as _avro_fingerprint
from fastavro.schema import to_parsing_canonical_form
from fastavro.validation import validate as _validate

from streams.encoding.avro_writer import NotCompilable, compile_writer
from streams.errors import KeelError

__all__ = [
    "MAGIC",
    "SCHEMA_DIR",
    "Codec",
    "CodecError",
    "DecodeError",
    "UnknownSchemaError",
    "get_codec",
]

SCHEMA_DIR: Path = Path(__file__).resolve().parents[2] / "schemas"
"""Where the released schemas live: ``<repo>/schemas``."""

MAGIC = b"\xc3\x01"
"""The two marker bytes that start every Avro single-object encoded value."""

_HEADER_LEN = len(MAGIC) + 8
_FILE_NAME = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.v(?P<version>[0-9]+)\.avsc$")
# Logical types whose Avro base type is already keel's internal representation.
_RAW_LOGICAL_TYPES = frozenset({"timestamp-millis"})
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_\-]+")
_MAX_DETAIL = 300  # characters of a library message quoted in a reason
_INT_RANGE = (-(2**31), 2**31 - 1)
_LONG_RANGE = (-(2**63), 2**63 - 1)


class CodecError(KeelError):
    """Root of every codec error; ``reason`` is a human-readable, actionable explanation."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownSchemaError(CodecError):
    """The value names a schema (by fingerprint, record name or version) that schemas/ lacks."""


class DecodeError(CodecError):
    """The bytes are not a value this codec can read as the requested record."""


@dataclass(frozen=True, slots=True)
class _Schema:
    """One released schema version, loaded once."""

    name: str
    version: int
    path: Path
    raw: dict[str, Any]  # exactly as in the .avsc file
    parsed: dict[str, Any]  # fastavro-parsed, with _RAW_LOGICAL_TYPES stripped
    fingerprint: bytes  # 8 bytes, little-endian CRC-64-AVRO of the Parsing Canonical Form
    #: the body writer compiled from ``parsed`` (streams/encoding/avro_writer.py), None: fastavro's
    writer: Callable[[Any], bytes] | None = None

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"


@dataclass(frozen=True, slots=True)
class _ReadPlan:
    """How to read values of one writer schema as one reader record (cached per pair)."""

    writer: dict[str, Any]
    reader: dict[str, Any] | None  # None when writer and reader are the same schema
    writer_label: str
    reader_label: str


class Codec:
    """Encodes and decodes keel records by record name, e.g. ``"OrderEvent"``.

    Loading every ``*.avsc`` happens here and only here; a malformed or misnamed schema file is
    a :class:`CodecError` at construction rather than a surprise on the first message. Files are
    named ``<RecordName>.v<version>.avsc`` and the record's ``name`` must match the file name.
    """

    def __init__(self, schema_dir: Path = SCHEMA_DIR) -> None:
        self._by_fingerprint: dict[bytes, _Schema] = {}
        self._versions: dict[str, dict[int, _Schema]] = {}
        self._latest: dict[str, _Schema] = {}
        self._plans: dict[tuple[bytes, str], _ReadPlan] = {}
        paths = sorted(Path(schema_dir).glob("*.avsc"))
        if not paths:
            raise CodecError(f"no *.avsc schema files in {schema_dir}")
        for path in paths:
            schema = _load(path)
            versions = self._versions.setdefault(schema.name, {})
            if schema.version in versions:
                raise CodecError(f"{path}: {schema.label} is defined twice")
            versions[schema.version] = schema
        for name, versions in self._versions.items():
            self._latest[name] = versions[max(versions)]
            # Versions differing only in docs share a fingerprint; the newest one wins, so such
            # values decode without any resolution step.
            for version in sorted(versions):
                self._by_fingerprint[versions[version].fingerprint] = versions[version]

    @property
    def names(self) -> list[str]:
        """The record names this codec knows, sorted."""
        return sorted(self._latest)

    def versions(self, name: str) -> list[int]:
        """The released versions of record ``name``, oldest first."""
        return sorted(self._versions_of(name))

    def schema(self, name: str, version: int | None = None) -> dict[str, Any]:
        """The schema of ``name`` exactly as written in its .avsc file (latest by default).

        Shared, not copied: treat it as read-only. jsonconv uses it to find timestamp fields.
        """
        return self._get(name, version).raw

    def fingerprint(self, name: str, version: int | None = None) -> bytes:
        """The 8 fingerprint bytes written after ``C3 01`` for ``name`` (latest by default)."""
        return self._get(name, version).fingerprint

    def name_of(self, data: bytes) -> str | None:
        """The record name the fingerprint of a single-object value names, if it is one of
        schemas/ (e.g. ``OrderEvent``); None for anything else."""
        if len(data) < _HEADER_LEN or data[:2] != MAGIC:
            return None
        schema = self._by_fingerprint.get(bytes(data[2:_HEADER_LEN]))
        return None if schema is None else schema.name

    def encode(self, name: str, record: dict[str, Any], check: bool = True) -> bytes:
        """Encode ``record`` with the latest version of ``name``.

        Nullable fields may be left out (they take their default); fields the schema lacks,
        missing required fields and values of the wrong type or range raise :class:`CodecError`
        naming the field, e.g. ``items[1].quantity``. ``check=False`` skips the range check
        for records built from decoded, already checked values (the worker's outputs): it
        costs about as much as the encoding itself.
        """
        schema = self._get(name, None)
        # fastavro's writer silently accepts out-of-range ints, bools and floats for int/long
        # fields; its (C-speed) validator catches those before bad bytes reach a topic.
        if check and not _validate(record, schema.parsed, raise_errors=False):
            problem = _explain(schema.parsed, record)
            if problem is not None:
                raise CodecError(f"cannot encode {schema.label}: {problem}")
        if schema.writer is not None:
            try:
                return MAGIC + schema.fingerprint + schema.writer(record)
            except Exception:  # noqa: BLE001, S110 - fastavro below writes it or names the problem
                pass
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(schema.fingerprint)
        try:
            fastavro.schemaless_writer(buf, schema.parsed, record, strict_allow_default=True)
        except Exception as exc:  # noqa: BLE001 - any writer failure is a bad record
            problem = _explain(schema.parsed, record) or _short(exc)
            raise CodecError(f"cannot encode {schema.label}: {problem}") from exc
        return buf.getvalue()

    def decode(self, data: bytes | bytearray | memoryview, name: str) -> dict[str, Any]:
        """Decode a single-object encoded value as the latest version of ``name``.

        The writer schema is whichever schema the fingerprint names. Any input that cannot be
        read raises a :class:`CodecError` subclass (never anything else), so a stream loop can
        turn it into a dead letter with ``exc.reason`` as ``x-error``.
        """
        if not isinstance(data, bytes):
            if not isinstance(data, bytearray | memoryview):
                kind = "no value (a tombstone)" if data is None else type(data).__name__
                raise DecodeError(f"expected bytes to decode as {name}, got {kind}")
            data = bytes(data)
        if len(data) < _HEADER_LEN or data[:2] != MAGIC:
            raise DecodeError(_bad_header(data))
        fp = data[2:_HEADER_LEN]
        plan = self._plans.get((fp, name))
        if plan is None:
            plan = self._plan(fp, self._get(name, None))
        buf = io.BytesIO(data)
        buf.seek(_HEADER_LEN)
        try:
            record = fastavro.schemaless_reader(buf, plan.writer, plan.reader)
        except Exception as exc:  # noqa: BLE001 - the contract: garbage is a dead letter
            raise DecodeError(_read_failure(exc, plan.writer_label, plan.reader_label)) from exc
        if buf.tell() != len(data):
            raise DecodeError(
                f"{len(data) - buf.tell()} unexpected bytes after the {plan.writer_label} body:"
                " the value is corrupt or was not written with the schema its fingerprint names"
            )
        if not isinstance(record, dict):  # cannot happen for record schemas; keeps mypy honest
            raise DecodeError(f"{plan.writer_label} body is not a record")
        return record

    def _plan(self, fp: bytes, reader: _Schema) -> _ReadPlan:
        writer = self._by_fingerprint.get(fp)
        if writer is None:
            raise UnknownSchemaError(
                f"unknown writer schema fingerprint {fp.hex()} (expected {reader.label} = "
                f"{reader.fingerprint.hex()}): the producer uses a schema that is not in "
                "schemas/; add the released .avsc there"
            )
        plan = _ReadPlan(
            writer=writer.parsed,
            reader=None if writer is reader else reader.parsed,
            writer_label=writer.label,
            reader_label=reader.label,
        )
        self._plans[(fp, reader.name)] = plan
        return plan

    def _versions_of(self, name: str) -> dict[int, _Schema]:
        versions = self._versions.get(name)
        if versions is None:
            raise UnknownSchemaError(
                f"unknown record name {name!r}; schemas/ has {', '.join(self.names)}"
            )
        return versions

    def _get(self, name: str, version: int | None) -> _Schema:
        if version is None:
            self._versions_of(name)
            return self._latest[name]
        schema = self._versions_of(name).get(version)
        if schema is None:
            raise UnknownSchemaError(
                f"{name} has no version {version}; released: {self.versions(name)}"
            )
        return schema


@functools.cache
def get_codec() -> Codec:
    """The process-wide codec over ``SCHEMA_DIR``, loaded on first use."""
    return Codec()


def _load(path: Path) -> _Schema:
    match = _FILE_NAME.match(path.name)
    if match is None:
        raise CodecError(f"{path}: schema files must be named <RecordName>.v<version>.avsc")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CodecError(f"{path}: cannot read schema: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("type") != "record":
        raise CodecError(f"{path}: top-level schema must be a record")
    name = str(raw.get("name", "")).rsplit(".", 1)[-1]
    if name != match["name"]:
        raise CodecError(f"{path}: record name {name!r} does not match the file name")
    try:
        parsed = fastavro.parse_schema(_strip_logical_types(raw))
        canonical = to_parsing_canonical_form(raw)
    except Exception as exc:  # noqa: BLE001 - fastavro raises several types for bad schemas
        raise CodecError(f"{path}: invalid Avro schema: {_short(exc)}") from exc
    if not isinstance(parsed, dict):  # a record schema always parses to a dict
        raise CodecError(f"{path}: top-level schema must be a record")
    try:
        writer: Callable[[Any], bytes] | None = compile_writer(parsed)
    except NotCompilable:
        writer = None
    return _Schema(
        name=name,
        version=int(match["version"]),
        path=path,
        raw=raw,
        parsed=parsed,
        fingerprint=bytes.fromhex(_avro_fingerprint(canonical, "CRC-64-AVRO")),
        writer=writer,
    )


def _strip_logical_types(node: Any) -> Any:
    """Copy of a schema without the logical types whose base type keel uses as is."""
    if isinstance(node, list):
        return [_strip_logical_types(item) for item in node]
    if isinstance(node, dict):
        return {
            key: _strip_logical_types(value)
            for key, value in node.items()
            if not (key == "logicalType" and value in _RAW_LOGICAL_TYPES)
        }
    return node


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL] + "…"


def _bad_header(data: bytes) -> str:
    if not data:
        return "empty value: expected an Avro single-object encoded record"
    if data[:2] != MAGIC:
        hint = " (looks like JSON)" if data[:1] in (b"{", b"[") else ""
        return (
            f"not Avro single-object encoding: starts with {data[:2].hex(' ')}{hint},"
            f" expected {MAGIC.hex(' ')}"
        )
    return f"value of {len(data)} bytes is shorter than the {_HEADER_LEN}-byte header"


def _read_failure(exc: Exception, writer: str, reader: str) -> str:
    if isinstance(exc, EOFError):
        detail = "the body is truncated"
    elif isinstance(exc, UnicodeDecodeError):
        detail = "a string is not valid UTF-8"
    elif isinstance(exc, IndexError):
        detail = "the body is corrupt (an enum, union or length points outside its range)"
    elif type(exc).__name__ == "SchemaResolutionError":
        detail = f"incompatible with the reader schema: {_short(exc)}"
    else:
        detail = f"{type(exc).__name__}: {_short(exc)}"
    return f"cannot read a {writer} body as {reader}: {detail}"


# --- diagnosing records that do not fit (only runs after encode failed) ----------------------


def _explain(schema: Any, value: Any, names: dict[str, Any] | None = None) -> str | None:
    """First mismatch between ``value`` and a fastavro-parsed ``schema``, as ``path: reason``."""
    if names is None:
        names = {}
        _collect_names(schema, names)
    found = _mismatch(schema, value, names)
    if found is None:
        return None
    path, reason = found
    return f"{path}: {reason}" if path else reason


def _collect_names(node: Any, names: dict[str, Any]) -> None:
    if isinstance(node, list):
        for item in node:
            _collect_names(item, names)
    elif isinstance(node, dict):
        if node.get("type") in ("record", "enum", "fixed") and "name" in node:
            names[node["name"]] = node
        for key in ("fields", "items", "values", "type"):
            if key in node:
                _collect_names(node[key], names)


def map_key_segment(key: str) -> str:
    """How a map key appears in an error path: ``.webshop``, or ``["a.b"]`` when ambiguous."""
    if _PLAIN_KEY.fullmatch(key):
        return key
    return f"[{json.dumps(key, ensure_ascii=False)}]"


def _join(head: str, tail: str) -> str:
    if not tail:
        return head
    return head + tail if tail.startswith("[") else f"{head}.{tail}"


def _mismatch(schema: Any, value: Any, names: dict[str, Any]) -> tuple[str, str] | None:
    """``(path, reason)`` of the first part of ``value`` that ``schema`` rejects, else None."""
    if isinstance(schema, str) and schema in names:
        schema = names[schema]
    if isinstance(schema, list):
        if value is None and "null" in schema:
            return None
        branches = [b for b in schema if b != "null"]
        if value is None:
            return "", "must not be null"
        results = [_mismatch(branch, value, names) for branch in branches]
        if any(r is None for r in results):
            return None
        return results[0] if len(results) == 1 else ("", f"{value!r} matches no union branch")
    kind = schema["type"] if isinstance(schema, dict) else schema
    if isinstance(kind, dict | list):
        return _mismatch(kind, value, names)
    if kind == "record":
        if not isinstance(value, dict):
            return "", f"expected a record (dict), got {type(value).__name__}"
        fields = {f["name"]: f for f in schema["fields"]}
        extras = sorted(str(key) for key in value.keys() - fields.keys())
        if extras:
            return extras[0], "field is not in the schema"
        for fname, field in fields.items():
            if fname not in value:
                if "default" in field:
                    continue
                return fname, "missing required field"
            found = _mismatch(field["type"], value[fname], names)
            if found is not None:
                return _join(fname, found[0]), found[1]
        return None
    if kind == "array":
        if not isinstance(value, list | tuple):
            return "", f"expected a list, got {type(value).__name__}"
        for index, item in enumerate(value):
            found = _mismatch(schema["items"], item, names)
            if found is not None:
                return _join(f"[{index}]", found[0]), found[1]
        return None
    if kind == "map":
        if not isinstance(value, dict):
            return "", f"expected a dict, got {type(value).__name__}"
        for key, item in value.items():
            if not isinstance(key, str):
                return "", f"map key {key!r} is not a string"
            found = _mismatch(schema["values"], item, names)
            if found is not None:
                return _join(map_key_segment(key), found[0]), found[1]
        return None
    if kind == "enum":
        if value not in schema["symbols"]:
            return "", f"{value!r} is not one of {', '.join(schema['symbols'])}"
        return None
    return _primitive_mismatch(kind, value)


def _primitive_mismatch(kind: str, value: Any) -> tuple[str, str] | None:
    if kind in ("int", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            return "", f"expected an integer ({kind}), got {type(value).__name__} {value!r}"
        low, high = _INT_RANGE if kind == "int" else _LONG_RANGE
        if not low <= value <= high:
            return "", f"{value} is outside the {kind} range {low}..{high}"
        return None
    expected: dict[str, tuple[type, ...]] = {
        "null": (type(None),),
        "boolean": (bool,),
        "float": (float, int),
        "double": (float, int),
        "string": (str,),
        "bytes": (bytes, bytearray),
        "fixed": (bytes, bytearray),
    }
    types = expected.get(kind)
    if types is not None and not isinstance(value, types):
        return "", f"expected {kind}, got {type(value).__name__} {value!r}"
    return None
