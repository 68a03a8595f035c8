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

__all__ = ["NDJSON", "openapi_document", "status_document"]

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
    error = _ERROR

    limit = f" at most {max_bytes} bytes" if max_bytes else ""
    for path, record, topic, key_field in inputs:
        event = converter.convert(codec.schema(record))
        paths[f"/events/{path}"] = {
            "post": _guarded(
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
                        "202": _reply(
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
                        "400": _reply("an invalid event (nothing published)", error),
                        "413": _reply(
                            "body or an encoded event too large (nothing published)", error
                        ),
                        "503": _reply(
                            "Kafka did not acknowledge in time: retry the request", error
                        ),
                    },
                },
                "write",
                secured,
            )
        }
    paths.update(_status_paths({"type": "object"}, secured, metrics_public))
    return _document(
        "keel HTTP ingest",
        "Department events into keel's input topics (docs/contract.md §8).",
        paths,
        {**converter.components, "Error": _error_schema()},
        secured,
        "$KEEL_WRITE_TOKEN",
    )


def status_document(
    name: str, *, secured: bool = True, metrics_public: bool = False
) -> dict[str, Any]:
    """The OpenAPI document of connector ``name``'s status port (connectors/status.py).

    >>> sorted(status_document("redis-sink")["paths"])
    ['/healthz', '/metrics', '/openapi.json']
    """
    health = {
        "type": "object",
        "description": "ok, and what the connector reports of itself (e.g. whether this "
        "outbox instance is the leader)",
        "properties": {"status": {"const": "ok"}},
        "required": ["status"],
    }
    paths = _status_paths(health, secured, metrics_public)
    paths["/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "responses": {"200": _reply("the OpenAPI 3.1 document", {"type": "object"})},
        }
    }
    return _document(
        f"keel {name} status",
        f"The status port of the {name} connector: liveness and metrics (docs/contract.md §8).",
        paths,
        {"Error": _error_schema()},
        secured,
        "$KEEL_METRICS_TOKEN",
    )


_ERROR = {"$ref": "#/components/schemas/Error"}


def _reply(
    description: str, schema: dict[str, Any], headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    reply = {"description": description, "content": {"application/json": {"schema": schema}}}
    return {**reply, "headers": headers} if headers else reply


def _guarded(operation: dict[str, Any], role: str, secured: bool) -> dict[str, Any]:
    """``operation`` with the bearer requirement and the 401/403 of ``role`` (if ``secured``)."""
    if not secured:
        return operation
    operation["description"] = (
        f"{operation.get('description', operation['summary'])} Needs a bearer token with "
        f"the {role} role."
    )
    operation["security"] = [{"bearer": [role]}]  # OpenAPI 3.1: a bearer scheme's roles
    operation["responses"]["401"] = _reply("no token, or one keel does not know", _ERROR)
    operation["responses"]["403"] = _reply(f"the token lacks the {role} role", _ERROR)
    return operation


def _status_paths(health: dict[str, Any], secured: bool, metrics_public: bool) -> dict[str, Any]:
    """``/healthz`` (open, its body ``health``) and ``/metrics`` (the metrics role)."""
    metrics = {
        "operationId": "metrics",
        "summary": "Prometheus text exposition",
        "responses": {
            "200": {
                "description": "metrics",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    }
    return {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "200 while the process lives",
                "responses": {"200": _reply("alive", health)},
            }
        },
        "/metrics": {"get": metrics if metrics_public else _guarded(metrics, "metrics", secured)},
    }


def _document(
    title: str,
    description: str,
    paths: dict[str, Any],
    schemas: dict[str, Any],
    secured: bool,
    example_token: str,
) -> dict[str, Any]:
    components: dict[str, Any] = {"schemas": schemas}
    if secured:
        components["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": f"a keel token (docs/security.md), e.g. {example_token} from "
                ".run/tokens.env",
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1", "description": description},
        "paths": paths,
        "components": components,
    }
