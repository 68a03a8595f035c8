"""The HTTP ingest's OpenAPI 3.1 document, generated from the Avro schemas.

The ``.avsc`` files are the contract (STYLE.md), so the document is derived from them rather
than written by hand: a new optional field in a schema shows up in ``/openapi.json`` without a
code change. Avro maps to JSON Schema as keel's JSON form defines it
(``streams.encoding.jsonconv``):
``timestamp-millis`` is an ISO-8601 string or epoch milliseconds, ``int``/``long`` are integers
with their 32/64-bit range, a ``["null", T]`` union may be null or left out, records allow no
other fields. An id (``streams.domain.ids.ID_FIELDS``) is a string of ``minLength: 1`` with a
character that is not whitespace (``pattern``), the rule ``from_json`` applies.

    >>> doc = openapi_document([("orders", "OrderEvent", "orders.v1", "customer_id")])
    >>> doc["paths"]["/events/orders"]["post"]["operationId"]
    'postOrders'
"""

from __future__ import annotations

from typing import Any

from streams.domain.ids import ID_FIELDS, ID_PATTERN
from streams.encoding.codec import Codec, get_codec

__all__ = ["NDJSON", "openapi_document"]

NDJSON = "application/x-ndjson"
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


class _Converter:
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


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "error": {"type": "string", "description": "what is wrong, for a person"},
            "field": {
                "type": "string",
                "description": "dotted path of the first invalid field ('' for the event "
                "itself); NDJSON: prefixed by 'line N: ' in error",
            },
            "line": {"type": "integer", "description": "NDJSON: 1-based line of the event"},
        },
        "required": ["error"],
    }


def openapi_document(
    inputs: list[tuple[str, str, str, str]],
    codec: Codec | None = None,
    max_bytes: int | None = None,
    *,
    secured: bool = True,
    metrics_public: bool = False,
) -> dict[str, Any]:
    """The OpenAPI document for ``inputs``: (path, Avro record, topic, key field) each.

    ``secured`` (auth on, streams/auth.py): posting events needs a bearer token with the
    write role and ``/metrics`` one with the metrics role (unless ``metrics_public``); the
    document then declares the ``bearer`` scheme, the requirement and the 401/403 answers.
    """
    codec = codec or get_codec()
    converter = _Converter()
    paths: dict[str, Any] = {}
    error = {"$ref": "#/components/schemas/Error"}

    def reply(description: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    def guarded(operation: dict[str, Any], role: str) -> dict[str, Any]:
        if not secured:
            return operation
        operation["description"] = (
            f"{operation.get('description', operation['summary'])} Needs a bearer token with "
            f"the {role} role."
        )
        operation["security"] = [{"bearer": []}]
        operation["responses"]["401"] = reply("no token, or one keel does not know", error)
        operation["responses"]["403"] = reply(f"the token lacks the {role} role", error)
        return operation

    limit = f" at most {max_bytes} bytes" if max_bytes else ""
    for path, record, topic, key_field in inputs:
        event = converter.convert(codec.schema(record))
        paths[f"/events/{path}"] = {
            "post": guarded(
                {
                    "operationId": f"post{path.capitalize()}",
                    "summary": f"Publish {record}s to {topic} (keyed by {key_field})",
                    "description": (
                        f"One {record} as a JSON object, or many as NDJSON (one object per line, "
                        f"Content-Type {NDJSON}; detected without it). Body{limit}. 202 only once "
                        "Kafka acknowledged every event; 400 names the first invalid field and "
                        "then nothing of the request is published."
                    ),
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": event},
                            NDJSON: {
                                "schema": {
                                    "type": "array",
                                    "items": event,
                                    "minItems": 1,
                                    "description": f"the {record}s, one JSON object per line",
                                }
                            },
                        },
                    },
                    "responses": {
                        "202": reply(
                            "every event acknowledged by Kafka",
                            {
                                "type": "object",
                                "properties": {
                                    "accepted": {"type": "integer", "minimum": 1},
                                    "event_ids": {"type": "array", "items": {"type": "string"}},
                                },
                                "required": ["accepted", "event_ids"],
                            },
                        ),
                        "400": reply("an invalid event (nothing published)", error),
                        "413": reply(
                            "body or an encoded event too large (nothing published)", error
                        ),
                        "503": reply("Kafka did not acknowledge in time: retry the request", error),
                    },
                },
                "write",
            )
        }
    text = {"text/plain": {"schema": {"type": "string"}}}
    paths["/healthz"] = {
        "get": {
            "operationId": "healthz",
            "summary": "200 while the process lives",
            "responses": {"200": reply("alive", {"type": "object"})},
        }
    }
    metrics = {
        "operationId": "metrics",
        "summary": "Prometheus text exposition",
        "responses": {"200": {"description": "metrics", "content": text}},
    }
    paths["/metrics"] = {"get": metrics if metrics_public else guarded(metrics, "metrics")}
    components: dict[str, Any] = {"schemas": {**converter.components, "Error": _error_schema()}}
    if secured:
        components["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "a keel token (docs/security.md), e.g. $KEEL_WRITE_TOKEN from "
                ".run/tokens.env",
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "keel HTTP ingest",
            "version": "1",
            "description": "Department events into keel's input topics (docs/contract.md §8).",
        },
        "paths": paths,
        "components": components,
    }
