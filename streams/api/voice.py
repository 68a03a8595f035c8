"""HTTP of the Voice of the Customer: the aggregates, the board, the announcements.

    GET  /voice?window=7d                      aggregates of the window (1h, 1d, 7d, 30d)
    GET  /voice/customers?topic=delivery&window=7d[&kind=COMPLAINT]
                                               the customers behind a topic, their words
    POST /voice/announcements                  one ANNOUNCE command per customer behind it
    GET  /desk/voice                           the board (streams/api/desk_assets/voice.html)
    GET  /desk/voice/events?window=7d          its live feed (text/event-stream)

The GETs need the read role, the announcement the agent role. The worker owning the voice
partition (streams/worker/voice.py) answers; any other forwards the request to it, like the
query API forwards a customer's.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any

import aiohttp
import orjson
from aiohttp import web as aioweb
from faust.web import Request, Response, View
from yarl import URL

from streams.api import spec
from streams.api.commands import AGENT, AGENT_HEADER, PUBLISH_TIMEOUT_S, post_at_owner
from streams.api.customers import (
    FORWARDED_HEADER,
    _error,
    _is_me,
    _json,
    _route,
    forward_headers,
    owner_url,
    passed_on,
)
from streams.api.desk import FORWARD_STREAM_TIMEOUT, _file, _gone, _open, _pipe, sse
from streams.app import app, settings
from streams.domain import voice
from streams.domain.commands import Refused
from streams.encoding.codec import get_codec
from streams.ops import metrics
from streams.worker import live
from streams.worker import voice as voice_worker
from streams.worker.emit import EmitError, emitter
from streams.worker.monitoring import ready
from streams.worker.tables import voice_facts

log = logging.getLogger(__name__)


def window_of(request: Request) -> tuple[str, int] | str:
    """(name, length in ms) of the ``window`` query parameter, or the error to answer."""
    name = request.query.get("window", "7d")
    length = voice.WINDOWS.get(name)
    if length is None:
        return f"window must be one of {', '.join(voice.WINDOWS)}, not {name!r}"
    return name, length


async def owned_facts(web: View, request: Request) -> tuple[Response | None, Any]:
    """(an answer to give instead, or None; the voice owner's facts)."""
    if not ready():
        return _error(web, 503, "worker is recovering its tables; try again shortly"), None
    routed = await _route(web, request, voice_facts, voice.VOICE_KEY)
    if routed is not None:
        return routed, None
    known = voice_worker.facts()
    if known is None:
        return _error(web, 503, "the voice partition is moving; try again shortly"), None
    return None, known


_bodies: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}


def voice_body(known: dict[str, dict[str, Any]], name: str, length: int) -> dict[str, Any]:
    """The body of GET /voice for one window; computed once per change of the facts and
    second, however many boards and requests ask for it."""
    now = voice_worker.now_ms()
    key = (voice_worker.index.revision, now // 1000)
    cached = _bodies.get(name)
    if cached is not None and cached[0] == key:
        return cached[1]
    body = {"window": name, **voice.aggregate(known.values(), now, length)}
    _bodies[name] = (key, body)
    return body


@app.page("/voice")
async def get_voice(web: View, request: Request) -> Response:
    window = window_of(request)
    if isinstance(window, str):
        return _error(web, 400, window)
    answer, known = await owned_facts(web, request)
    if answer is not None:
        return answer
    return _json(web, voice_body(known, *window))


@app.page("/voice/customers")
async def get_voice_customers(web: View, request: Request) -> Response:
    window = window_of(request)
    if isinstance(window, str):
        return _error(web, 400, window)
    topic = voice.normalize_topic(request.query.get("topic"))
    if topic is None:
        return _error(web, 400, "topic is required")
    kind = request.query.get("kind") or None
    if kind is not None and kind not in voice.KINDS:
        return _error(web, 400, f"kind must be one of {', '.join(voice.KINDS)}")
    answer, known = await owned_facts(web, request)
    if answer is not None:
        return answer
    name, length = window
    rows = voice.customers_behind(known.values(), topic, voice_worker.now_ms(), length, kind)
    return _json(web, {"topic": topic, "window": name, "kind": kind, "customers": rows})


# ------------------------------------------------------------------------ announcements

REMEMBERED = 1000
_announced: OrderedDict[str, tuple[tuple[Any, ...], dict[str, Any]]] = OrderedDict()


@app.page("/voice/announcements")
class Announcements(View):
    async def post(self, request: Request) -> Response:
        return await post_at_owner(self, request, voice_facts, voice.VOICE_KEY, announce)


async def announce(raw: bytes, agent: str | None) -> tuple[int, dict[str, Any]]:
    """(status, answer) of an announcement on the voice owner: one command per customer."""
    try:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise Refused(400, f"the body is not JSON: {exc}") from None
        request = voice.announcement_of(body)
        if not agent:
            raise Refused(400, f"who announces it: send {AGENT_HEADER} (or a personal token)")
        same = tuple(request[k] for k in sorted(voice.ANNOUNCEMENT_FIELDS))
        seen = _announced.get(request["announcement_id"])
        if seen is not None:
            if seen[0] != same:
                raise Refused(409, "this announcement_id was used for another announcement",
                              "announcement_id")  # fmt: skip
            return 202, {**seen[1], "duplicate": True}
        known = voice_worker.facts()
        if known is None:
            return 503, {"error": "the voice partition is moving; send it again shortly"}
        commands, skipped = voice.announce_commands(known.values(), request, agent,
                                              voice_worker.now_ms())  # fmt: skip
        out = emitter.outbox()
        codec = get_codec()
        for command in commands:
            out.produce(settings.topics.commands, command["customer_id"].encode(),
                        codec.encode("DeskCommand", command))  # fmt: skip
        await asyncio.wait_for(out.confirmed(), PUBLISH_TIMEOUT_S)
    except Refused as exc:
        return exc.status, exc.body()
    except (EmitError, TimeoutError) as exc:
        log.warning("an announcement was not published: %s", exc)
        return 503, {"error": "Kafka did not acknowledge every command; send it again (same "
                     "announcement_id: nobody is told twice)"}  # fmt: skip
    answer = {
        "announcement_id": request["announcement_id"],
        "topic": request["topic"],
        "window": request["window"],
        "kind": request["kind"],
        "sent": len(commands),
        "customers": [c["customer_id"] for c in commands],
        "command_ids": [c["command_id"] for c in commands],
        "skipped": skipped,
    }
    metrics.ANNOUNCED.inc(len(commands))
    _announced[request["announcement_id"]] = (same, answer)
    while len(_announced) > REMEMBERED:
        _announced.popitem(last=False)
    return 202, answer


# ------------------------------------------------------------------------------ the board

HEARTBEAT_S = 15.0


@app.page("/desk/voice")
async def board_page(web: View, request: Request) -> Any:
    return _file("voice.html")


async def _board_stream(web: View, request: Request, name: str, length: int) -> Any:
    try:
        sub = live.hub.subscribe(voice.VOICE_KEY)
    except live.TooManySubscribers as exc:
        return _error(web, 503, str(exc))
    resp: aioweb.StreamResponse | None = None
    with sub:
        try:
            resp = await _open(request)
            wake: live.Wake = "changed"
            while wake != "closed" and not _gone(request):
                if wake == "changed":
                    known = voice_worker.facts()
                    if known is None:
                        return resp  # the partition moved: the page reconnects
                    await resp.write(sse("voice", orjson.dumps(voice_body(known, name, length))))
                else:
                    await resp.write(sse("ping", b"{}"))
                wake = await sub.wait(HEARTBEAT_S)
        except ConnectionResetError:
            pass
    return resp if resp is not None else _error(web, 503, "the connection closed early")


async def _forward_board(web: View, request: Request, owner: URL) -> Any:
    target = f"{str(owner).rstrip('/')}{request.rel_url}"
    try:
        sub = live.hub.subscribe(voice.VOICE_KEY)  # only to be ended with the others
    except live.TooManySubscribers as exc:
        return _error(web, 503, str(exc))
    resp: aioweb.StreamResponse | None = None
    with sub:
        try:
            async with app.http_client.get(target, headers=forward_headers(request),
                                           timeout=FORWARD_STREAM_TIMEOUT) as upstream:
                if upstream.status != 200:
                    return web.bytes(await upstream.read(), content_type=upstream.content_type,
                                     status=upstream.status, headers=passed_on(upstream))
                resp = await _open(request)
                await _pipe(upstream, resp, sub)
        except (TimeoutError, aiohttp.ClientError):
            if resp is None:
                return _error(web, 503, f"the voice owner ({owner}) does not answer; try again")
        except ConnectionResetError:
            pass
    return resp if resp is not None else _error(web, 503, "the connection closed early")


@app.page("/desk/voice/events")
async def board_events(web: View, request: Request) -> Any:
    """The board's live feed: a ``voice`` event (the body of GET /voice) at connect and after
    every batch that changed a fact (and every 30 s, as the windows move), ``ping`` between."""
    window = window_of(request)
    if isinstance(window, str):
        return _error(web, 400, window)
    if not ready():
        return _error(web, 503, "worker is recovering its tables; try again shortly")
    owner = owner_url(voice_facts, voice.VOICE_KEY)
    if owner is None:
        return _error(web, 503, "partition assignment in progress; try again shortly")
    if not _is_me(owner):
        if FORWARDED_HEADER in request.headers:
            return _error(web, 503, "workers are rebalancing partitions; try again shortly")
        return await _forward_board(web, request, owner)
    if voice_worker.facts() is None:
        return _error(web, 503, "the voice partition is moving; try again shortly")
    return await _board_stream(web, request, *window)


# -- the OpenAPI document's view of these routes (streams/api/spec.py) ----------------------

_WINDOW = spec.param("window", {"enum": list(voice.WINDOWS)}, "the window (default 7d)")
_AGGREGATES = {
    "type": "object",
    "properties": {
        "window": {"enum": list(voice.WINDOWS)},
        "as_of": {"type": "integer", "description": "epoch ms the window ends at"},
        "window_ms": {"type": "integer"},
        "from": {"type": "integer"},
        "total": {"type": "object"},
        "topics": {"type": "array", "items": {"type": "object"}},
        "kinds": {"type": "object", "required": list(voice.KINDS)},
        "products": {"type": "array", "items": {"type": "object"}},
        "channels": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["window", "as_of", "window_ms", "from", "total", "topics", "kinds",
                 "products", "channels"],
}  # fmt: skip
_ANNOUNCEMENT = {
    "type": "object",
    "properties": {
        "announcement_id": {**spec.text(200), "description": "a retry sends the same"},
        "topic": {**spec.text(voice.MAX_TOPIC), "description": "the topic on the board"},
        "text": {**spec.text(voice.MAX_ANNOUNCEMENT), "description": "what customers are told"},
        "window": {"enum": list(voice.WINDOWS), "description": "default 7d"},
        "kind": {"enum": list(voice.KINDS), "description": "default COMPLAINT"},
    },
    "required": ["announcement_id", "topic", "text"],
    "additionalProperties": False,
}
_FEED_EVENT = {
    "oneOf": [spec.event("voice", _AGGREGATES, "the body of GET /voice, now"), spec.PING]
}
_BUSY = spec.unavailable("recovering, the voice partition is moving, or its owner is away")

OPERATIONS = (
    spec.Operation(
        "GET",
        "/voice",
        "getVoice",
        "What customers said within a window: by topic, kind, product, channel (docs/voice.md)",
        {
            200: spec.json_reply("the aggregates", _AGGREGATES),
            400: spec.error("an unknown window"),
            503: _BUSY,
        },
        query=(_WINDOW,),
    ),
    spec.Operation(
        "GET",
        "/voice/customers",
        "getVoiceCustomers",
        "The customers behind a topic, with their words",
        {
            200: spec.json_reply("the customers", {
                "type": "object",
                "properties": {"topic": {"type": "string"}, "window": {"type": "string"},
                               "kind": {"type": ["string", "null"]},
                               "customers": {"type": "array", "items": {"type": "object"}}},
                "required": ["topic", "window", "kind", "customers"],
            }),  # fmt: skip
            400: spec.error("no topic, an unknown window or kind"),
            503: _BUSY,
        },
        query=(
            _WINDOW,
            spec.param("topic", spec.TEXT, "the topic", required=True),
            spec.param("kind", {"enum": ["", *voice.KINDS]}, "only this kind"),
        ),
    ),
    spec.Operation(
        "POST",
        "/voice/announcements",
        "postAnnouncement",
        "Tell every customer behind a topic: one ANNOUNCE command each",
        {
            202: spec.json_reply("Kafka has every command (or had: duplicate)", {
                "type": "object",
                "properties": {"announcement_id": {"type": "string"},
                               "sent": {"type": "integer", "minimum": 0},
                               "customers": {"type": "array", "items": {"type": "string"}},
                               "command_ids": {"type": "array", "items": {"type": "string"}},
                               "skipped": {"type": "object"}},
                "required": ["announcement_id", "topic", "window", "kind", "sent", "customers",
                             "command_ids", "skipped"],
            }),  # fmt: skip
            400: spec.error("an invalid announcement, or no agent"),
            409: spec.error("the announcement_id was used for another announcement"),
            503: _BUSY,
        },
        headers=(AGENT,),
        request_body=spec.body(_ANNOUNCEMENT, "the announcement"),
    ),
    spec.Operation(
        "GET",
        "/desk/voice",
        "voiceBoard",
        "The Voice of the Customer board (HTML)",
        {200: spec.media_reply("the page", "text/html")},
    ),
    spec.Operation(
        "GET",
        "/desk/voice/events",
        "voiceFeed",
        "The board's live feed: a voice event at once and after every change, ping between",
        {
            200: spec.media_reply("the stream (it does not end)", "text/event-stream",
                                  _FEED_EVENT),  # fmt: skip
            400: spec.error("an unknown window"),
            503: _BUSY,
        },
        query=(_WINDOW,),
    ),
)
