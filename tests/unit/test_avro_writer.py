"""The compiled Avro writers write fastavro's bytes, and hand back what they cannot write."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.encoding.avro_writer import Fallback, NotCompilable, compile_writer
from streams.encoding.codec import CodecError, get_codec

codec = get_codec()
SCHEMAS = {name: codec._get(name, None) for name in codec.names}
INT = (-(2**31), 2**31 - 1)
LONG = (-(2**63), 2**63 - 1)


def fastavro_bytes(parsed: dict[str, Any], value: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, value, strict_allow_default=True)
    return buf.getvalue()


def values(schema: Any, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Any valid value of ``schema``, boundaries included (long strings, extreme ints)."""
    if isinstance(schema, str):
        if schema in named:
            return values(named[schema], named)
        return {
            "null": st.none(),
            "boolean": st.booleans(),
            "int": st.one_of(st.integers(*INT), st.sampled_from(INT)),
            "long": st.one_of(st.integers(*LONG), st.sampled_from((*LONG, 2**41, -1, 63, 64))),
            "float": st.floats(width=32, allow_nan=False),
            "double": st.floats(allow_nan=False),
            "bytes": st.binary(max_size=200),
            "string": st.one_of(st.text(max_size=20), st.text(min_size=60, max_size=200)),
        }[schema]
    if isinstance(schema, list):
        return st.one_of(*(values(branch, named) for branch in schema))
    kind = schema["type"]
    if kind in ("record", "enum", "fixed"):
        named[schema["name"]] = schema
    if kind == "record":
        return st.fixed_dictionaries(
            {field["name"]: values(field["type"], named) for field in schema["fields"]}
        )
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        return st.lists(values(schema["items"], named), max_size=4)
    if kind == "map":
        return st.dictionaries(st.text(max_size=8), values(schema["values"], named), max_size=4)
    return values(kind, named)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_schema_of_keel_compiles(name: str) -> None:
    assert SCHEMAS[name].writer is not None, f"{name} would be written by fastavro's slow path"


@pytest.mark.parametrize("name", sorted(SCHEMAS))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_compiled_bytes_are_fastavros(name: str, data: st.DataObject) -> None:
    parsed = SCHEMAS[name].parsed
    value = data.draw(values(parsed, {}))
    assert SCHEMAS[name].writer(value) == fastavro_bytes(parsed, value)
    assert codec.decode(codec.encode(name, value, check=False), name) == value


SCHEMA: dict[str, Any] = fastavro.parse_schema(
    {
        "type": "record",
        "name": "T",
        "fields": [
            {"name": "n", "type": "int"},
            {"name": "tags", "type": {"type": "array", "items": "string"}},
            {"name": "note", "type": ["null", "string"], "default": None},
        ],
    }
)
WRITE = compile_writer(SCHEMA)


@pytest.mark.parametrize(
    "value",
    [
        {"n": 1, "tags": []},  # a missing field: fastavro fills in the default
        {"n": 1, "tags": [], "note": None, "extra": 1},  # a field the schema lacks
        {"n": 2**31, "tags": [], "note": None},  # out of range for int
        {"n": True, "tags": [], "note": None},  # a bool is not an int here
        {"n": 1.0, "tags": [], "note": None},
        {"n": 1, "tags": ("a",), "note": None},  # a tuple, not a list
        {"n": 1, "tags": [b"a"], "note": None},
        {"n": 1, "tags": [], "note": 5},
    ],
)
def test_what_it_cannot_write_exactly_goes_back_to_fastavro(value: dict[str, Any]) -> None:
    with pytest.raises(Fallback):
        WRITE(value)


@settings(max_examples=50, deadline=None)
@given(signal=values(SCHEMAS["CustomerSignal"].parsed, {}))  # valid, then spoilt
def test_codec_falls_back_to_fastavro_and_its_errors(signal: dict[str, Any]) -> None:
    for spoilt in (
        {**signal, "extra": 1},  # a field the schema lacks
        {k: v for k, v in signal.items() if k != "customer_id"},  # a required field missing
        {**signal, "customer_id": 7},
    ):
        with pytest.raises(CodecError, match="CustomerSignal"):
            codec.encode("CustomerSignal", spoilt, check=False)


def test_unions_of_more_than_null_and_one_type_are_not_compiled() -> None:
    schema = fastavro.parse_schema(
        {"type": "record", "name": "U", "fields": [{"name": "x", "type": ["int", "string"]}]}
    )
    with pytest.raises(NotCompilable):
        compile_writer(schema)
