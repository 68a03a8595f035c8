"""The HTTP ingest's OpenAPI 3.1 document, generated from the Avro schemas.

The ``.avsc`` files are the contract (STYLE.md), so the document is derived from them rather
than written by hand: a new optional field in a schema shows up in ``/openapi.json`` without a
code change. How Avro maps to JSON Schema is streams/encoding/jsonschema.py's.

    >>> doc = openapi_document([("orders", "OrderEvent", "orders.v1", "customer_id")])
    >>> doc["paths"]["/events/orders"]["post"]["operationId"]
    'postOrders'
"""

from __future__ import annotations

from typing import Any

from streams.encoding.codec import Codec, get_codec
from streams.encoding.jsonschema import Converter

__all__ = ["NDJSON", "openapi_document"]

NDJSON = "application/x-ndjson"


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
    converter = Converter()
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
