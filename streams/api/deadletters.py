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

    async def get(self, request: Request, position: str) -> Response:
        return _json(self, {"error": f"{self.action} is sent with POST"}, 405, {"Allow": "POST"})

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
