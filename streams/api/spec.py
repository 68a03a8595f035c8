"""How a worker route declares itself for the OpenAPI document (streams/api/openapi.py).

Every module of ``streams/api`` that registers routes lists them in ``OPERATIONS``, beside the
handlers, as :class:`Operation` values: the path as ``app.page`` has it, the method, what the
request may carry and every answer the handler gives. streams/api/openapi.py assembles the
document from them and adds what other code decides: the role a path needs
(``auth.worker_role``, the rule the middleware enforces), the 401/403 that follow from it, the
path parameters of the template. tests/unit/test_worker_openapi.py fails when a registered
route has no operation here, or an operation no route.

    >>> op = Operation("GET", "/voice", "getVoice", "the aggregates of a window",
    ...                {200: json_reply("the aggregates", {"type": "object"})},
    ...                query=(param("window", {"enum": ["1h", "7d"]}, "which window"),))
    >>> op.query[0]["in"], op.responses[200]["content"]["application/json"]["schema"]
    ('query', {'type': 'object'})
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Schema = dict[str, Any]

ERROR: Schema = {"$ref": "#/components/schemas/Error"}
"""keel's one error shape: ``{"error": "what is wrong, for a person", "field": "…"}``."""

BLANKS = "".join(f"\\u{ord(c):04x}" for c in map(chr, range(0x3001)) if c.isspace())
"""What Python's ``str.strip()`` removes, as a regex class body: JSON Schema's ``\\s`` differs
(it lacks U+001C..U+001F and U+0085, and has U+FEFF)."""

TEXT: Schema = {"type": "string", "pattern": f"[^{BLANKS}]"}
"""A string with a character that is not whitespace (what handlers strip and require)."""

NO_NUL_TEXT = f"^[^\\u0000]*[^\\u0000{BLANKS}][^\\u0000]*$"
"""The pattern of :data:`TEXT` without NUL anywhere (a command's fields)."""


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def text(limit: int) -> Schema:
    """:data:`TEXT` of at most ``limit`` characters."""
    return {**TEXT, "maxLength": limit}


def json_reply(
    description: str, schema: Schema, headers: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A response object with a JSON body."""
    reply: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        reply["headers"] = dict(headers)
    return reply


def error(description: str) -> dict[str, Any]:
    """A response with keel's JSON error; a 503 also says ``Retry-After``."""
    return json_reply(description, ERROR)


RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}


def unavailable(description: str) -> dict[str, Any]:
    """503 with keel's JSON error and ``Retry-After``: the caller retries."""
    return json_reply(description, ERROR, RETRY_AFTER)


def media_reply(description: str, media_type: str, schema: Schema | None = None) -> dict[str, Any]:
    """A response with a body of ``media_type`` (HTML, CSS, an event stream …)."""
    return {
        "description": description,
        "content": {media_type: {"schema": schema or {"type": "string"}}},
    }


def param(
    name: str, schema: Schema, description: str, *, where: str = "query", required: bool = False
) -> dict[str, Any]:
    """A query (or header) parameter."""
    return {
        "name": name,
        "in": where,
        "required": required,
        "description": description,
        "schema": schema,
    }


def body(schema: Schema, description: str, *, required: bool = True) -> dict[str, Any]:
    """A JSON request body."""
    return {
        "required": required,
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }


@dataclass(frozen=True)
class Operation:
    """One method on one route, as a client sees it."""

    method: str
    path: str
    operation_id: str
    summary: str
    responses: Mapping[int, dict[str, Any]]
    query: tuple[dict[str, Any], ...] = ()
    headers: tuple[dict[str, Any], ...] = ()
    request_body: dict[str, Any] | None = None
    description: str = ""
    path_schemas: Mapping[str, Schema] | None = None
    """The schema of a path parameter other than a non-blank string (the default)."""


def event(name: str, data: Schema, description: str, *, with_id: bool = False) -> Schema:
    """One kind of Server-Sent Event: its ``event`` name, its ``data`` a line of JSON whose
    schema is ``data`` (``contentSchema``), and an ``id`` if it has one."""
    properties: dict[str, Any] = {
        "event": {"const": name},
        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data},
    }
    if with_id:
        properties["id"] = {"type": "string", "pattern": "^[0-9]+$"}
    return {
        "type": "object",
        "description": description,
        "properties": properties,
        "required": ["event", "data", *(["id"] if with_id else [])],
    }


PING = event("ping", {"type": "object", "maxProperties": 0}, "nothing new: the stream is alive")
