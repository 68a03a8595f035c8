"""The service-desk console: one page served by every worker, fed live by Server-Sent Events.

    GET /desk/                               the page (plain HTML/CSS/JS in
    streams/api/desk_assets/)
    GET /desk/static/{name}                  its script and style sheet
    GET /desk/config.json                    staleness threshold and the signals' explanations
    GET /desk/customers/{customer_id}/events the customer's state as a text/event-stream

The page finds a customer through the query API (streams/api/customers.py: ``/customers/{id}``,
``/customers?email=…|phone=…|order_id=…``) and then opens the event stream, which sends

    retry: 1000                       reconnect after 1 s when the stream ends
    event: state / id: <version> / data: <CustomerState JSON, as GET /customers/{id}>
    event: absent / data: {"customer_id": …}     not (or no longer) known
    event: ping / data: {}                       every HEARTBEAT_S, so a dead stream is noticed

once at connect and then after every change, within a batch of being stored
(streams/worker/live.py). A slow client gets the latest state, not a backlog.

Tokens (streams/auth.py): the page, its static files and config.json are open (they say
nothing about a customer); the console asks for a token once (a login field, or
``/desk/#token=…``: a URL fragment never reaches a server or its logs), keeps it in
sessionStorage and sends it as ``Authorization: Bearer`` on every lookup and command. An
EventSource cannot send headers, so the console also sets it as the cookie ``keel_token``
(``Path=/desk/customers/; SameSite=Strict``), which only the live stream accepts: it is a
GET that changes nothing, and a cross-site page can neither send the cookie (SameSite) nor
read a stream it opens (no CORS). A forwarded stream carries the token as a header.

Several workers: the stream is served by the worker owning the customer's partition, because
only it sees the changes. Another worker asked for it forwards the request there and passes
the bytes on, like the query API does (streams/api/customers.py); a forwarded request is never
forwarded again (503 while workers disagree about the assignment). On a rebalance every worker
ends its streams (``on_partitions_revoked``): the page reconnects, through whichever worker it
reaches, to the customer's new owner.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp import web as aioweb
from faust.web import Request, View
from yarl import URL

from streams.api import spec
from streams.api.customers import (
    FORWARDED_HEADER,
    _error,
    _is_me,
    forward_headers,
    owner_url,
    passed_on,
)
from streams.app import app, settings
from streams.domain.signals import (
    COMMAND_FAILED,
    COMMAND_PENDING,
    COMPLAINT_UNRESOLVED,
    CUSTOMER_TOLD,
    DUPLICATE_ORDER,
    LOST_SHIPMENT_DELIVERED,
    REPEAT_CONTACT,
    SHIPMENT_LATE,
    STATE_BOUNDED,
)
from streams.domain.state import view
from streams.encoding.jsonconv import to_json
from streams.worker import live
from streams.worker.monitoring import ready
from streams.worker.tables import customers

log = logging.getLogger(__name__)

ASSETS = Path(__file__).with_name("desk_assets")
CONTENT_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript"}
# Read once at import: a handful of small files, and no file I/O inside a request.
FILES = {p.name: p.read_bytes() for p in sorted(ASSETS.iterdir()) if p.suffix in CONTENT_TYPES}

HEARTBEAT_S = 15.0
"""A ``ping`` event this often: the page reconnects when it hears nothing for 3 of them."""

FORWARD_STREAM_TIMEOUT = aiohttp.ClientTimeout(
    total=None, sock_connect=1.0, sock_read=3 * HEARTBEAT_S
)


def _duration(seconds: int) -> str:
    """``1800`` → ``30 min``: the windows of docs/contract.md §6 as a desk agent reads them."""
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


SIGNAL_HELP = {
    DUPLICATE_ORDER: (
        "The same basket was ordered twice within "
        f"{_duration(settings.duplicate_order_window_s)}, probably by mistake: ask the "
        "customer which order they want and have the other one cancelled."
    ),
    SHIPMENT_LATE: (
        "A parcel is past its expected (or promised) delivery date and has not arrived: check "
        "the tracking with the carrier and give the customer a new date or a replacement."
    ),
    LOST_SHIPMENT_DELIVERED: (
        "A parcel marked lost has been delivered after all, so a replacement may be on its way "
        "too: tell the customer, and stop the replacement or arrange its return."
    ),
    REPEAT_CONTACT: (
        "The customer has got in touch again about the same order or topic within "
        f"{_duration(settings.repeat_contact_window_s)}: read the earlier notes before "
        "answering, and do not repeat an answer that did not help."
    ),
    COMPLAINT_UNRESOLVED: (
        "A complaint has been open for more than "
        f"{_duration(settings.complaint_unresolved_s)}: take it over or escalate it, and "
        "tell the customer what happens next."
    ),
    COMMAND_PENDING: (
        "A colleague asked a department to act (cancel, resolve, add a note) and its answer has "
        "not arrived yet: tell the customer it is requested, and do not ask again."
    ),
    COMMAND_FAILED: (
        "A department refused what the desk asked (its reason is below), could not do it (the "
        "order was already completed) or did not do it within "
        f"{_duration(settings.command_timeout_s)}: tell the customer what can be done instead, "
        "or call the department."
    ),
    CUSTOMER_TOLD: (
        "The customer was told what is being done about what they complained of (an "
        "announcement from the Voice of the Customer board, below): refer to it rather than "
        "explain it again."
    ),
    STATE_BOUNDED: (
        "This customer's history is longer than keel keeps for one customer, so its oldest "
        "parts (closed orders, old notes) are no longer shown: ask the department's own "
        "system for anything older."
    ),
}
"""One plain sentence per signal type: what it means, then what the agent can do."""


def desk_config() -> dict[str, Any]:
    """What the page needs to know from the worker's settings."""
    return {
        "stale_after_s": settings.desk_stale_s,
        "heartbeat_s": HEARTBEAT_S,
        "signals": SIGNAL_HELP,
    }


def _file(name: str) -> aioweb.Response:
    body = FILES.get(name)
    if body is None:
        return aioweb.json_response({"error": f"no file {name!r}"}, status=404)
    return aioweb.Response(
        body=body,
        content_type=CONTENT_TYPES[Path(name).suffix],
        charset="utf-8",
        headers={"Cache-Control": "no-cache"},
    )


@app.page("/desk")
async def desk_redirect(web: View, request: Request) -> Any:
    return aioweb.Response(status=302, headers={"Location": "/desk/"})


@app.page("/desk/")
async def desk_page(web: View, request: Request) -> Any:
    return _file("index.html")


@app.page("/desk/static/{name}")
async def desk_static(web: View, request: Request, name: str) -> Any:
    return _file(name)


@app.page("/desk/config.json")
async def desk_config_page(web: View, request: Request) -> Any:
    return aioweb.json_response(desk_config(), dumps=lambda o: orjson.dumps(o).decode())


# -- the live stream --------------------------------------------------------------------------


def sse(event: str, data: bytes, event_id: str | None = None) -> bytes:
    """One Server-Sent Event; ``data`` must be a single line (orjson output is)."""
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return head.encode() + b"data: " + data + b"\n\n"


def state_event(customer_id: str) -> tuple[Any, bytes]:
    """(what identifies this version, the event to send) for the stored state of a customer."""
    stored = customers.get(customer_id)
    if stored is None:
        return None, sse("absent", orjson.dumps({"customer_id": customer_id}))
    version = stored["version"]
    body = orjson.dumps(to_json("CustomerState", view(stored)))
    return version, sse("state", body, str(version))


async def _open(request: Request) -> aioweb.StreamResponse:
    resp = aioweb.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx and friends: do not buffer the stream
        }
    )
    await resp.prepare(cast(aioweb.Request, request))
    await resp.write(b"retry: 1000\n\n")
    return resp


def _gone(request: Request) -> bool:
    transport = cast(aioweb.Request, request).transport
    return transport is None or transport.is_closing()


@app.page("/desk/customers/{customer_id}/events")
async def customer_events(web: View, request: Request, customer_id: str) -> Any:
    if not ready():
        return _error(web, 503, "worker is recovering its tables; try again shortly")
    owner = owner_url(customers, customer_id)
    if owner is None:
        return _error(web, 503, "partition assignment in progress; try again shortly")
    if not _is_me(owner):
        if FORWARDED_HEADER in request.headers:
            return _error(web, 503, "workers are rebalancing partitions; try again shortly")
        return await _forward_stream(web, request, owner, customer_id)
    try:
        sub = live.hub.subscribe(customer_id)  # before reading: no change can slip between
    except live.TooManySubscribers as exc:
        return _error(web, 503, str(exc))
    resp: aioweb.StreamResponse | None = None
    with sub:
        sent: Any = object()
        try:
            resp = await _open(request)
            wake: live.Wake = "changed"
            while wake != "closed" and not _gone(request):
                if wake == "changed":
                    version, event = state_event(customer_id)
                    if version is None or version != sent:
                        await resp.write(event)
                        sent = version
                else:
                    await resp.write(sse("ping", b"{}"))
                wake = await sub.wait(HEARTBEAT_S)
        except ConnectionResetError:
            pass  # the page went away
    return resp if resp is not None else _error(web, 503, "the connection closed early")


async def _forward_stream(web: View, request: Request, owner: URL, customer_id: str) -> Any:
    """Pass the owner's stream for ``customer_id`` through, until it or the client ends."""
    target = f"{str(owner).rstrip('/')}/desk/customers/{quote(customer_id, safe='')}/events"
    headers = forward_headers(request)  # the caller's token too, from its cookie or header
    try:
        sub = live.hub.subscribe(customer_id)  # only to be ended with the others
    except live.TooManySubscribers as exc:
        return _error(web, 503, str(exc))
    resp: aioweb.StreamResponse | None = None
    with sub:
        try:
            async with app.http_client.get(
                target, headers=headers, timeout=FORWARD_STREAM_TIMEOUT
            ) as upstream:
                if upstream.status != 200:
                    return web.bytes(
                        await upstream.read(),
                        content_type=upstream.content_type,
                        status=upstream.status,
                        headers=passed_on(upstream),
                    )
                resp = await _open(request)
                await _pipe(upstream, resp, sub)
        except (TimeoutError, aiohttp.ClientError) as exc:
            if resp is None:
                log.info("forwarding a desk stream to %s failed: %s", owner, type(exc).__name__)
                return _error(
                    web,
                    503,
                    f"the worker owning this customer ({owner}) does not answer; try again shortly",
                )
        except ConnectionResetError:
            pass  # the page went away
    return resp if resp is not None else _error(web, 503, "the connection closed early")


async def _pipe(
    upstream: aiohttp.ClientResponse, resp: aioweb.StreamResponse, sub: live.Subscription
) -> None:
    closed = asyncio.ensure_future(sub.wait_closed())
    try:
        while True:
            read = asyncio.ensure_future(upstream.content.readany())
            await asyncio.wait({read, closed}, return_when=asyncio.FIRST_COMPLETED)
            if not read.done():
                read.cancel()
                return
            chunk = read.result()
            if not chunk:
                return
            await resp.write(chunk)
    finally:
        closed.cancel()


@app.on_partitions_revoked.connect
def _end_streams_on_rebalance(_app: Any, /, *_args: Any, **_kwargs: Any) -> None:
    """Partitions may move: end every stream, the pages reconnect to the new owners."""
    if len(live.hub):
        log.info("rebalance: ending %d desk live stream(s); the pages reconnect", len(live.hub))
    live.hub.close_all()


@app.on_before_shutdown.connect
def _end_streams_on_shutdown(_app: Any, /, *_args: Any, **_kwargs: Any) -> None:
    """Open streams would hold up the web server's shutdown for a minute."""
    live.hub.close_all()


# -- the OpenAPI document's view of these routes (streams/api/spec.py) ----------------------

_STATE_EVENT = {
    "oneOf": [
        spec.event("state", spec.ref("CustomerState"), "the state (as GET /customers/{id}); "
                   "id: its version", with_id=True),  # fmt: skip
        spec.event("absent", {"type": "object", "properties": {"customer_id": {"type": "string"}},
                              "required": ["customer_id"]},
                   "keel does not know the customer (now)"),  # fmt: skip
        spec.PING,
    ]
}


OPERATIONS = (
    spec.Operation(
        "GET",
        "/desk",
        "deskRedirect",
        "To the console",
        {302: {"description": "to /desk/", "headers": {"Location": {
            "required": True, "schema": {"const": "/desk/"}}}}},  # fmt: skip
    ),
    spec.Operation(
        "GET",
        "/desk/",
        "desk",
        "The service-desk console (HTML)",
        {200: spec.media_reply("the page", "text/html")},
    ),
    spec.Operation(
        "GET",
        "/desk/static/{name}",
        "deskStatic",
        "The console's scripts and style sheets",
        {
            200: {
                "description": "the file",
                "content": {t: {"schema": {"type": "string"}} for t in CONTENT_TYPES.values()},
            },
            404: spec.error("no such file"),
        },
        path_schemas={"name": {"enum": sorted(FILES)}},
    ),
    spec.Operation(
        "GET",
        "/desk/config.json",
        "deskConfig",
        "What the console needs of the worker's settings",
        {
            200: spec.json_reply("the settings", {
                "type": "object",
                "properties": {"stale_after_s": {"type": "number"},
                               "heartbeat_s": {"type": "number"},
                               "signals": {"type": "object",
                                           "additionalProperties": {"type": "string"}}},
                "required": ["stale_after_s", "heartbeat_s", "signals"],
            })  # fmt: skip
        },
    ),
    spec.Operation(
        "GET",
        "/desk/customers/{customer_id}/events",
        "customerEvents",
        "The customer's state, live: an event at once and after every change, ping between",
        {
            200: spec.media_reply("the stream (it does not end)", "text/event-stream",
                                  _STATE_EVENT),  # fmt: skip
            503: spec.unavailable("recovering, rebalancing, or the owner does not answer"),
        },
        description="Takes the token as Authorization: Bearer or as the cookie keel_token "
        "(an EventSource sends no headers).",
    ),
)
