"""HTTP of the Voice of the Customer: the aggregates, the customers behind a topic.

    GET  /voice?window=7d                      aggregates of the window (1h, 1d, 7d, 30d)
    GET  /voice/customers?topic=delivery&window=7d[&kind=COMPLAINT]
                                               the customers behind a topic, their words

Both need the read role. The worker owning the voice partition (streams/voice_worker.py)
answers; any other forwards the request to it, like the query API forwards a customer's.
"""

from __future__ import annotations

from typing import Any

from faust.web import Request, Response, View

from streams import voice, voice_worker
from streams.app import app
from streams.monitoring import ready
from streams.tables import voice_facts
from streams.views import _error, _json, _route


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


def voice_body(known: dict[str, dict[str, Any]], name: str, length: int) -> dict[str, Any]:
    return {"window": name, **voice.aggregate(known.values(), voice_worker.now_ms(), length)}


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

