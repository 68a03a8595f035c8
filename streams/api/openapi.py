"""``GET /openapi.json``: the worker's HTTP API as an OpenAPI 3.1 document.

Assembled from what the code already says, so it cannot drift from it:

- the operations each API module lists beside its handlers (``OPERATIONS``, streams/api/spec.py);
  tests/unit/test_worker_openapi.py fails when a registered route has none, or one has no route;
- the role each path needs from ``auth.worker_role``, the rule the middleware enforces, with the
  401/403 it answers (as ``bearer`` requirements naming the role, OpenAPI 3.1's way to say
  which roles a non-OAuth scheme needs);
- ``CustomerState`` and ``ErasureRequest`` from their ``.avsc`` (streams/encoding/jsonschema.py).

schemathesis checks every answer against it in ``make test`` (tests/integration/test_openapi.py).

    >>> doc = document(auth.AuthConfig())
    >>> doc["paths"]["/customers/{customer_id}"]["delete"]["security"]
    [{'bearer': ['admin']}]
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson
from aiohttp import web as aioweb
from faust.web import Request, View

from streams import auth
from streams.api import commands, customers, deadletters, desk, directory, spec, unmatched, voice
from streams.app import app, auth_config
from streams.encoding.codec import get_codec
from streams.encoding.jsonschema import Converter

__all__ = ["OPERATIONS", "document", "operations"]

OPERATIONS = (
    spec.Operation(
        "GET",
        "/openapi.json",
        "openapi",
        "This document",
        {200: spec.json_reply("the OpenAPI 3.1 document", {"type": "object"})},
    ),
)


def operations() -> list[spec.Operation]:
    """Every documented operation of the worker, in the order of the modules."""
    modules = (customers, commands, unmatched, directory, voice, desk, deadletters)
    return [op for module in modules for op in module.OPERATIONS] + list(OPERATIONS)


_PARAM = re.compile(r"\{(\w+)\}")
_WWW_AUTHENTICATE = {
    "WWW-Authenticate": {
        "description": 'Bearer realm="keel" (with the role lacking: error="insufficient_scope")',
        "required": True,
        "schema": {"type": "string"},
    }
}


def _role(config: auth.AuthConfig, op: spec.Operation) -> str | None:
    role = auth.worker_role(op.method, _PARAM.sub("x", op.path))
    if not config.enabled or (role == auth.METRICS and config.metrics_public):
        return None
    return role


def _operation(config: auth.AuthConfig, op: spec.Operation) -> dict[str, Any]:
    params = [
        spec.param(
            name, (op.path_schemas or {}).get(name, spec.TEXT), name, where="path", required=True
        )  # fmt: skip
        for name in _PARAM.findall(op.path)
    ]
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "parameters": [*params, *op.query, *op.headers],
        "responses": {str(status): reply for status, reply in sorted(op.responses.items())},
    }
    if op.description:
        out["description"] = op.description
    if op.request_body is not None:
        out["requestBody"] = op.request_body
    role = _role(config, op)
    if role is not None:
        implied = [r for r, implies in auth.IMPLIED.items() if role in implies]
        roles = " or ".join([role, *implied])
        out["description"] = f"{op.description} Needs a bearer token with the {roles} role.".strip()
        out["security"] = [{"bearer": [role]}, *({"bearer": [r]} for r in implied)]
        out["responses"]["401"] = spec.json_reply(
            "no token, or one keel does not know", spec.ERROR, _WWW_AUTHENTICATE
        )
        out["responses"]["403"] = spec.json_reply(
            f"the token lacks the {roles} role", spec.ERROR, _WWW_AUTHENTICATE
        )
    return out


def _schemas() -> dict[str, Any]:
    converter = Converter()
    codec = get_codec()
    for record in ("CustomerState", "ErasureRequest"):
        converter.convert(codec.schema(record))
    state = converter.components["CustomerState"]
    tagged = {"type": "object", "properties": {"account": {"type": "string"}},
              "required": ["account"]}  # fmt: skip
    combined = {
        "type": "object",
        "description": "the orders, parcels, contacts and signals of the customer and every "
        "linked account, each tagged with its account; unavailable: linked accounts whose "
        "owner could not answer now",
        "properties": {
            "accounts": {"type": "array", "items": {"type": "string"}},
            **{k: {"type": "array", "items": tagged}
               for k in ("orders", "parcels", "contacts", "signals")},
            "unavailable": {"type": "array", "items": {
                "type": "object",
                "properties": {"customer_id": {"type": "string"}, "status": {"type": "integer"}},
                "required": ["customer_id", "status"]}},
        },
        "required": ["accounts", "orders", "parcels", "contacts", "signals", "unavailable"],
    }  # fmt: skip
    from_copy = {
        "stale": {"const": True, "description": "answered from a copy that may be behind: "
                  "the customer's owner could not answer (partitions moving, a worker gone)"},
        "as_of": {"type": "string", "format": "date-time", "description": "the copy holds "
                  "every change made up to this time; later ones may be missing"},
    }  # fmt: skip
    stale = {
        **state,
        "description": "CustomerState from a worker's copy while the owner cannot answer",
        "properties": {**state["properties"], **from_copy},
        "required": [*state["required"], "stale", "as_of"],
    }
    with_linked = {
        **state,
        "description": "CustomerState with the combined view of its linked accounts "
        "(stale and as_of when any part came from a copy)",
        "properties": {**state["properties"], "combined": combined, **from_copy},
        "required": [*state["required"], "combined"],
    }
    error = {
        "type": "object",
        "description": "keel's one error shape",
        "properties": {
            "error": {"type": "string", "description": "what is wrong, for a person"},
            "field": {"type": "string", "description": "the field to blame, if one is"},
        },
        "required": ["error"],
    }
    return {
        **converter.components,
        "CustomerFromCopy": stale,
        "CustomerWithLinked": with_linked,
        "Error": error,
    }


def document(config: auth.AuthConfig, ops: Iterable[spec.Operation] | None = None) -> dict:
    """The OpenAPI document of ``ops`` (default: every operation) under ``config``'s tokens."""
    paths: dict[str, dict[str, Any]] = {}
    for op in operations() if ops is None else ops:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(config, op)
    components: dict[str, Any] = {"schemas": _schemas()}
    if config.enabled:
        components["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "a keel token (docs/security.md): $KEEL_READ_TOKEN, "
                "$KEEL_AGENT_TOKEN … from .run/tokens.env; each operation names the roles "
                "it needs (read, agent, admin, metrics; an agent token also reads)",
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "keel worker API",
            "version": "1",
            "description": "The query API, commands, erasure, unmatched contacts, the Voice of "
            "the Customer and the desk console's routes (docs/api.md, docs/contract.md §7).",
        },
        "paths": paths,
        "components": components,
    }


_served: bytes | None = None


@app.page("/openapi.json")
async def openapi_json(web: View, request: Request) -> Any:
    global _served
    if _served is None:
        _served = orjson.dumps(document(auth_config))
    return aioweb.Response(body=_served, content_type="application/json")
