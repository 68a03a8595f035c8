"""Avro schemas as JSON Schema: what keel's JSON form of a record may look like.

The ``.avsc`` files are the contract (STYLE.md), so the OpenAPI documents of the HTTP ingest
(connectors/openapi.py) and of the worker (streams/api/openapi.py) derive their schemas from
them rather than repeat them by hand. Avro maps to JSON Schema as keel's JSON form defines it
(``streams.encoding.jsonconv``): ``timestamp-millis`` is an ISO-8601 string or epoch
milliseconds, ``int``/``long`` are integers with their 32/64-bit range, a ``["null", T]``
union may be null or left out, records allow no other fields. An id
(``streams.domain.ids.ID_FIELDS``) is a string of ``minLength: 1`` with a character that is
not whitespace (``pattern``), the rule ``from_json`` applies.

    >>> from streams.encoding.codec import get_codec
    >>> converter = Converter()
    >>> converter.convert(get_codec().schema("ErasureRequest"))
    {'$ref': '#/components/schemas/ErasureRequest'}
    >>> converter.components["ErasureRequest"]["required"][:2]
    ['request_id', 'customer_id']
"""

from __future__ import annotations

from typing import Any

from streams.domain.ids import ID_FIELDS, ID_PATTERN

__all__ = ["Converter"]

_INT = (-(2**31), 2**31 - 1)
_LONG = (-(2**63), 2**63 - 1)
_TS = (-62_135_596_800_000, 253_402_300_799_999)  # what jsonconv accepts: years 1..9999
_PRIMITIVES: dict[str, dict[str, Any]] = {
    "null": {"type": "null"},
    "boolean": {"type": "boolean"},
    "int": {"type": "integer", "format": "int32", "minimum": _INT[0], "maximum": _INT[1]},
    "long": {"type": "integer", "format": "int64", "minimum": _LONG[0], "maximum": _LONG[1]},
    "float": {"type": "number"},
    "double": {"type": "number"},
    "string": {"type": "string"},
    "bytes": {"type": "string"},
}


class Converter:
    """Avro schema → JSON Schema, named types collected into ``components.schemas``."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def convert(self, node: Any) -> dict[str, Any]:
        if isinstance(node, list):
            return {"anyOf": [self.convert(branch) for branch in node]}
        if isinstance(node, str):
            if node in _PRIMITIVES:
                return dict(_PRIMITIVES[node])
            return {"$ref": f"#/components/schemas/{_short(node)}"}
        kind = node["type"]
        if isinstance(kind, dict | list):
            return self.convert(kind)
        if node.get("logicalType") == "timestamp-millis":
            return {
                "description": (
                    "ISO-8601 with Z or an offset, or epoch milliseconds (UTC); the instant "
                    "must lie in 0001-01-01T00:00:00Z..9999-12-31T23:59:59.999Z"
                ),
                "anyOf": [
                    {"type": "string", "format": "date-time", "example": "2026-11-23T10:03:00Z"},
                    {"type": "integer", "format": "int64", "minimum": _TS[0], "maximum": _TS[1]},
                ],
            }
        if kind in ("record", "enum", "fixed"):
            name = _short(node["name"])
            if name not in self.components:
                self.components[name] = {}  # reserve first: records may refer to themselves
                self.components[name] = self._named(node)
            return {"$ref": f"#/components/schemas/{name}"}
        if kind == "array":
            return {"type": "array", "items": self.convert(node["items"])}
        if kind == "map":
            return {"type": "object", "additionalProperties": self.convert(node["values"])}
        return self.convert(kind)

    def _named(self, node: dict[str, Any]) -> dict[str, Any]:
        doc = {"description": node["doc"]} if node.get("doc") else {}
        if node["type"] == "enum":
            return {"type": "string", "enum": list(node["symbols"]), **doc}
        if node["type"] == "fixed":
            size = node["size"]
            return {"type": "string", "minLength": size, "maxLength": size, **doc}
        properties: dict[str, Any] = {}
        required: list[str] = []
        for avro_field in node["fields"]:
            prop = self.convert(avro_field["type"])
            if avro_field["name"] in ID_FIELDS:
                prop = _as_id(prop)
            if avro_field.get("doc"):  # the field's doc first, then what its type adds
                detail = prop.get("description")
                text = f"{avro_field['doc']} {detail}" if detail else avro_field["doc"]
                prop = {**prop, "description": text}
            properties[avro_field["name"]] = prop
            if "default" not in avro_field:
                required.append(avro_field["name"])
        return {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
            **doc,
        }


def _as_id(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with the id rule on its string (or its union's string branch)."""
    if schema.get("type") == "string":
        return {**schema, "minLength": 1, "pattern": ID_PATTERN}
    if "anyOf" in schema:
        return {**schema, "anyOf": [_as_id(branch) for branch in schema["anyOf"]]}
    return schema


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]
