"""``POST /customers/{customer_id}/commands``: a desk agent's command, published to commands.v1.

    curl -s -XPOST 127.0.0.1:6066/customers/c-dup/commands -H 'X-Keel-Agent: rep-7' \\
      -H "Authorization: Bearer $KEEL_AGENT_TOKEN" \\
      -d '{"command_id": "8c1d…", "type": "CANCEL_ORDER", "order_id": "o-dup-2",
           "reason": "duplicate of o-dup-1, customer confirmed"}'
    # 202 {"command_id": "8c1d…"}

Needs a token with the agent role (streams/auth.py); a forwarded command carries the
caller's token and the owner checks it again. Routed like the query API (streams/api/customers.py):
the worker owning the customer's partition answers, because only it has the customer's stored
state to check the command against (streams/domain/commands.py). It publishes the command as a
``DeskCommand`` (Avro single-object encoding) through the worker's one producer
(streams/worker/emit.py), keyed by its target, and answers 202 only after Kafka acknowledged it; a
refusal (4xx) publishes nothing.

Idempotent per worker: the last :data:`REMEMBERED` command ids published here are kept (and a
request for an id being published right now waits for that one), so a retried request is
answered 202 again without a second record. A restart or a rebalance forgets them, and Kafka
delivery to the departments is at-least-once anyway: departments deduplicate by
``command_id`` (the inbox table's primary key does it for them).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import aiohttp
import orjson
from aiohttp import web as aioweb
from faust.web import Request, Response, View
from yarl import URL

from streams import auth
from streams.api import spec
from streams.api.customers import (
    FORWARD_TIMEOUT,
    FORWARDED_HEADER,
    _error,
    _is_me,
    _json,
    _warn_unreachable,
    forward_headers,
    owner_url,
    passed_on,
)
from streams.app import app, auth_config, settings
from streams.domain.commands import (
    RecentCommands,
    Refused,
    build_command,
    check_against_state,
    target_key,
)
from streams.domain.state import view
from streams.encoding.codec import CodecError, get_codec
from streams.ops import metrics
from streams.worker.emit import EmitError, emitter
from streams.worker.monitoring import ready
from streams.worker.tables import customers

log = logging.getLogger(__name__)

AGENT_HEADER = "X-Keel-Agent"
"""Who sends the command when the token says only the role (see :func:`agent_of`)."""

REMEMBERED = 10_000
"""Command ids a worker remembers (oldest forgotten first) to answer a repeat without publishing."""

PUBLISH_TIMEOUT_S = 30.0
"""Kafka's acknowledgement not there by then: 503, the caller retries with the same id."""

MAX_BODY = 64 * 1024

recent = RecentCommands(REMEMBERED)
_in_flight: dict[str, asyncio.Future[None]] = {}


@app.page("/customers/{customer_id}/commands")
class CustomerCommands(View):
    async def post(self, request: Request, customer_id: str) -> Response:
        return await post_at_owner(
            self, request, customers, customer_id,
            lambda body, agent: handle(customer_id, body, agent),
        )  # fmt: skip


Handler = Callable[[bytes, str | None], Awaitable[tuple[int, dict[str, Any]]]]


async def post_at_owner(
    web: View, request: Request, table: Any, key: str, handler: Handler
) -> Response:
    """A POST handled on the worker owning ``key`` of ``table``: ``handler(body, agent)``
    there, the request forwarded to it from any other worker (once: a forwarded request that
    lands on a non-owner is a 503, never forwarded again); 503 while recovering or
    rebalancing."""
    if not ready():
        return _error(web, 503, "worker is recovering its tables; try again shortly")
    owner = owner_url(table, key)
    if owner is None:
        return _error(web, 503, "partition assignment in progress; try again shortly")
    body = await request.read()  # type: ignore[attr-defined]  # aiohttp's Request
    if not _is_me(owner):
        if FORWARDED_HEADER in request.headers:
            return _error(web, 503, "workers are rebalancing partitions; try again shortly")
        return await _forward_post(web, request, owner, body)
    status, answer = await handler(body, agent_of(request))
    return _json(web, answer, status, {"Retry-After": "1"} if status == 503 else None)


def agent_of(request: Request) -> str | None:
    """Who sends a command: the holder of a personal token (a tokens-file entry: its name), so
    a page cannot claim to be someone else; with a shared role token (``KEEL_AGENT_TOKEN``) or
    authentication off, the name the desk sends in ``X-Keel-Agent``."""
    token = cast(aioweb.Request, request).get(auth.TOKEN_KEY)
    return auth_config.personal_name(token) or request.headers.get(AGENT_HEADER)


async def handle(customer_id: str, raw: bytes, agent: str | None) -> tuple[int, dict[str, Any]]:
    """(status, JSON answer) for one command request on the customer's owning worker."""
    kind = "unknown"
    try:
        if len(raw) > MAX_BODY:
            raise Refused(413, f"the body is larger than {MAX_BODY} bytes")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise Refused(400, f"the body is not JSON: {exc}") from None
        command = build_command(customer_id, body, agent, int(time.time() * 1000))
        kind = command["type"]
        command_id = command["command_id"]
        while command_id in _in_flight:  # the same id being published right now: wait for it
            await asyncio.shield(_in_flight[command_id])
        if recent.seen(command):
            metrics.COMMANDS.labels(kind, "duplicate").inc()
            return 202, {"command_id": command_id, "agent": command["agent"], "duplicate": True}
        stored = customers.get(customer_id)
        check_against_state(command, None if stored is None else view(stored))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        _in_flight[command_id] = done
        try:
            await _publish(command)
            recent.remember(command)
        finally:
            del _in_flight[command_id]
            done.set_result(None)
    except Refused as exc:
        metrics.COMMANDS.labels(kind, "refused").inc()
        return exc.status, exc.body()
    except (EmitError, TimeoutError, CodecError) as exc:
        metrics.COMMANDS.labels(kind, "unavailable").inc()
        log.warning("a %s command was not published: %s", kind, exc)
        return 503, {"error": "Kafka did not acknowledge the command; send it again (same "
                     "command_id)"}  # fmt: skip
    metrics.COMMANDS.labels(kind, "published").inc()
    return 202, {"command_id": command_id, "agent": command["agent"]}


async def _publish(command: dict[str, Any]) -> None:
    value = get_codec().encode("DeskCommand", command)
    out = emitter.outbox()
    out.produce(settings.topics.commands, target_key(command), value)
    await asyncio.wait_for(out.confirmed(), PUBLISH_TIMEOUT_S)


async def _forward_post(web: View, request: Request, owner: URL, body: bytes) -> Response:
    """POST the request on to the customer's owner and pass its answer back; 503 if it is gone."""
    target = f"{str(owner).rstrip('/')}{request.rel_url}"
    headers = {**forward_headers(request), "Content-Type": "application/json"}
    agent = request.headers.get(AGENT_HEADER)
    if agent is not None:
        headers[AGENT_HEADER] = agent
    try:
        async with app.http_client.post(
            target, data=body, headers=headers, timeout=FORWARD_TIMEOUT_POST
        ) as resp:
            answer = await resp.read()
            return web.bytes(
                answer, content_type=resp.content_type, status=resp.status, headers=passed_on(resp)
            )
    except (TimeoutError, aiohttp.ClientError) as exc:
        _warn_unreachable(owner, exc)
        return _error(
            web,
            503,
            f"the worker owning this customer ({owner}) does not answer; send the command "
            "again (same command_id) shortly",
        )


FORWARD_TIMEOUT_POST = aiohttp.ClientTimeout(
    total=PUBLISH_TIMEOUT_S + (FORWARD_TIMEOUT.total or 5.0), connect=1.0
)
"""The owner may wait up to PUBLISH_TIMEOUT_S for Kafka before it answers."""


# -- the OpenAPI document's view of this route (streams/api/spec.py) ------------------------


def _field(limit: int, description: str) -> spec.Schema:
    return {"type": "string", "pattern": spec.NO_NUL_TEXT, "maxLength": limit,
            "description": description}  # fmt: skip


AGENT = spec.param(
    AGENT_HEADER,
    {"type": "string", "maxLength": 200, "pattern": spec.TEXT["pattern"]},
    "the agent's name; required with a shared role token (a personal token names its holder)",
    where="header",
    required=True,
)
_ORDER = _field(200, "the order acted on")
_CONTACT = _field(200, "the contact acted on")


def _command(
    title: str, kind: str, fields: dict[str, spec.Schema], required: list[str]
) -> spec.Schema:
    """One command type as a whole object: a generated client gets a class per type."""
    return {
        "title": title,
        "type": "object",
        "properties": {
            "command_id": _field(200, "the request's id: a retry sends the same"),
            "type": {"const": kind},
            "reason": _field(4000, "why, for the department and the audit trail"),
            **fields,
        },
        "required": ["command_id", "type", "reason", *required],
        "additionalProperties": False,
    }


COMMAND = {
    "description": "one desk command (docs/commands.md); the customer is the path's (a "
    "customer_id field, if sent, must be the same)",
    "oneOf": [
        _command("CancelOrder", "CANCEL_ORDER", {"order_id": _ORDER}, ["order_id"]),
        _command("ResolveContact", "RESOLVE_CONTACT", {"contact_id": _CONTACT}, ["contact_id"]),
        {
            **_command("AddNote", "ADD_NOTE", {
                "note": _field(4000, "the note"),
                "order_id": _field(200, "the order a new contact is about"),
                "contact_id": _field(200, "the contact the note is added to"),
            }, ["note"]),  # fmt: skip
            "not": {"required": ["order_id", "contact_id"]},
        },
    ],
}
ACCEPTED: spec.Schema = {
    "type": "object",
    "properties": {
        "command_id": {"type": "string"},
        "agent": {"type": "string"},
        "duplicate": {
            "type": "boolean",
            "description": "only there, and true, for the same command again (not published)",
        },
    },
    "required": ["command_id"],
}

OPERATIONS = (
    spec.Operation(
        "POST",
        "/customers/{customer_id}/commands",
        "postCommand",
        "A desk agent's command, published to the department (docs/commands.md)",
        {
            202: spec.json_reply("Kafka has the command (or had it: duplicate)", ACCEPTED),
            400: spec.error("an invalid command; field names the culprit"),
            404: spec.error("no such customer, or its state has no such order or contact"),
            409: spec.error("the order or contact is closed already, or the id was used"),
            413: spec.error("the body is larger than 64 KiB"),
            503: spec.unavailable("Kafka did not acknowledge, or the owner does not answer"),
        },
        headers=(AGENT,),
        request_body=spec.body(COMMAND, "the command"),
    ),
)
