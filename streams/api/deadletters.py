"""The dead-letter queue over HTTP, for the console's page (admin role: operators).

    GET  /deadletters?topic=&reason=&since=2h&status=open  the queue (streams/ops/deadletters.py)
    GET  /deadletters/{position}                 one letter (position: partition:offset): bytes
    POST /deadletters/{position}/replay          back to its source topic
    POST /deadletters/{position}/handled         {"note": "…"}: no replay needed
    GET  /desk/deadletters                                  the page (deadletters.html)

Every request reads the dead-letter and status topics afresh (an operator's tool, not a hot
path), in a thread so the worker's event loop never waits for Kafka. Who acted is the admin
token's holder (a personal token), else ``X-Keel-Agent``, else ``admin``.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import orjson
from aiohttp import web as aioweb
from faust.web import Request, Response, View

from streams import auth
from streams.api import spec
from streams.api.customers import _error, _json
from streams.api.desk import _file
from streams.app import app, auth_config, settings
from streams.ops import deadletters as dl

MAX_BODY = 16 * 1024


def _by(request: Request) -> str:
    token = cast(aioweb.Request, request).get(auth.TOKEN_KEY)
    return auth_config.personal_name(token) or request.headers.get("X-Keel-Agent") or "admin"


@app.page("/deadletters")
async def list_deadletters(web: View, request: Request) -> Response:
    query = request.query
    try:
        since = dl.parse_since(query["since"]) if query.get("since") else None
        wanted = dl.Filter(query.get("topic") or None, query.get("reason") or None, since,
                           query.get("status") or "open")  # fmt: skip
        found = await asyncio.to_thread(dl.queue, settings, wanted)
    except dl.DeadLetterError as exc:
        return _error(web, 400, str(exc))
    return _json(web, {"deadletters": [e.summary() for e in found],
                       "topic": settings.topics.deadletter})  # fmt: skip


@app.page("/deadletters/{position}")
async def show_deadletter(web: View, request: Request, position: str) -> Response:
    try:
        [letter] = await asyncio.to_thread(dl.find, settings, [position])
        statuses = await asyncio.to_thread(dl.read_statuses, settings)
    except dl.DeadLetterError as exc:
        return _error(web, 404 if "no dead letter" in str(exc) else 400, str(exc))
    [entry] = dl.entries([letter], statuses)
    return _json(web, {**entry.summary(), "headers": letter.headers, **letter.views()})


class _Action(View):
    """POST ``/deadletters/{position}/<action>``: replay a letter, or mark it handled."""

    action = ""

    async def post(self, request: Request, position: str) -> Response:
        raw = await request.read()  # type: ignore[attr-defined]  # aiohttp's Request
        if len(raw) > MAX_BODY:
            return _error(self, 413, f"the body is larger than {MAX_BODY} bytes")
        try:
            body: Any = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError as exc:
            return _error(self, 400, f"the body is not JSON: {exc}")
        if not isinstance(body, dict):
            return _error(self, 400, 'the body must be a JSON object, e.g. {"note": "…"}')
        by = _by(request)
        try:
            if self.action == "replay":
                [letter] = await asyncio.to_thread(dl.replay, settings, [position], by)
                return _json(self, {"replayed": letter.position, "to": letter.source_topic}, 202)
            note = str(body.get("note") or "")
            await asyncio.to_thread(dl.handle, settings, [position], by, note)
            return _json(self, {"handled": position}, 202)
        except dl.DeadLetterError as exc:
            return _error(self, 404 if "no dead letter" in str(exc) else 400, str(exc))


@app.page("/deadletters/{position}/replay")
class Replay(_Action):
    action = "replay"


@app.page("/deadletters/{position}/handled")
class Handled(_Action):
    action = "handled"


@app.page("/desk/deadletters")
async def deadletters_page(web: View, request: Request) -> Any:
    return _file("deadletters.html")


# -- the OpenAPI document's view of these routes (streams/api/spec.py) ----------------------

_POSITION = {"position": {"type": "string", "pattern": "^[0-9]+:[0-9]+$",
                          "description": "partition:offset in the dead-letter topic"}}  # fmt: skip
_SUMMARY = {
    "type": "object",
    "properties": {"position": {"type": "string"}, "status": {"enum": list(dl.STATUSES)}},
    "required": ["position", "status"],
}
_MISSING = spec.error("no dead letter at that position")
_ACTION_BODY = spec.body({"type": "object"}, "none needed", required=False)

OPERATIONS = (
    spec.Operation(
        "GET",
        "/deadletters",
        "listDeadLetters",
        "The dead-letter queue (docs/operations.md)",
        {
            200: spec.json_reply("the letters", {
                "type": "object",
                "properties": {"deadletters": {"type": "array", "items": _SUMMARY},
                               "topic": {"type": "string"}},
                "required": ["deadletters", "topic"],
            }),  # fmt: skip
            400: spec.error("an invalid since or status"),
        },
        query=(
            spec.param("topic", {"type": "string"}, "only letters from this source topic"),
            spec.param("reason", {"type": "string"}, "only letters whose reason has this"),
            spec.param("since", {"anyOf": [{"type": "string", "pattern": "^[0-9]+[smhd]$"},
                                           {"type": "string", "format": "date-time"},
                                           {"type": "string", "format": "date"},
                                           {"const": ""}]},
                       "failed since: 30m, 2h, 7d ago, or an ISO-8601 time"),  # fmt: skip
            spec.param("status", {"enum": [*dl.STATUSES, "all", ""]}, "default open"),
        ),
    ),
    spec.Operation(
        "GET",
        "/deadletters/{position}",
        "getDeadLetter",
        "One dead letter: its headers, its value as JSON and as a hex dump",
        {
            200: spec.json_reply("the letter", {**_SUMMARY, "required": [
                "position", "status", "headers", "json", "hex", "bytes"]}),  # fmt: skip
            400: spec.error("not partition:offset"),
            404: _MISSING,
        },
        path_schemas=_POSITION,
    ),
    spec.Operation(
        "POST",
        "/deadletters/{position}/replay",
        "replayDeadLetter",
        "Publish the letter to its source topic again",
        {
            202: spec.json_reply("replayed", {"type": "object", "required": ["replayed", "to"]}),
            400: spec.error("not partition:offset, or the body is not a JSON object"),
            404: _MISSING,
            413: spec.error("the body is larger than 16 KiB"),
        },
        request_body=_ACTION_BODY,
        path_schemas=_POSITION,
    ),
    spec.Operation(
        "POST",
        "/deadletters/{position}/handled",
        "markDeadLetterHandled",
        "Mark the letter handled: no replay needed, and why",
        {
            202: spec.json_reply("marked", {"type": "object", "required": ["handled"]}),
            400: spec.error("no note, not partition:offset, or the body is not a JSON object"),
            404: _MISSING,
            413: spec.error("the body is larger than 16 KiB"),
        },
        request_body=spec.body(
            {"type": "object", "properties": {"note": spec.TEXT}, "required": ["note"]},
            "why no replay is needed",
        ),
        path_schemas=_POSITION,
    ),
    spec.Operation(
        "GET",
        "/desk/deadletters",
        "deadLettersPage",
        "The console's dead-letter page (HTML)",
        {200: spec.media_reply("the page", "text/html")},
    ),
)
