"""``DELETE /customers/{customer_id}``: an erasure request, published to erasures.v1.

    curl -s -XDELETE 127.0.0.1:6066/customers/c-42 -H "Authorization: Bearer $KEEL_ADMIN_TOKEN" \\
      -d '{"reason": "data subject request DSR-2026-118"}'
    # 202 {"request_id": "0d4c…", "customer_id": "c-42", "requested_at": "2026-12-01T15:04:05.123Z"}

Needs the admin role (streams/auth.py). Who asked is the personal token's holder (a
tokens-file entry), else ``X-Keel-Agent``, else ``admin``. 202 only after Kafka acknowledged
the request; the worker owning the customer then erases it (streams/domain/erasure.py), also when
keel has no state for it yet (its events are suppressed when they come).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

import orjson
from aiohttp import web as aioweb
from faust.web import Request

from streams import auth
from streams.app import auth_config, settings
from streams.domain.erasure import BadErasureRequest, build_request
from streams.encoding.codec import CodecError, get_codec
from streams.encoding.jsonconv import to_json
from streams.worker.emit import EmitError, emitter

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 30.0
MAX_BODY = 16 * 1024


async def erase(request: Request, customer_id: str) -> tuple[int, dict[str, Any]]:
    """(status, JSON answer) of one erasure request."""
    raw = await request.read()  # type: ignore[attr-defined]  # aiohttp's Request
    if len(raw) > MAX_BODY:
        return 413, {"error": f"the body is larger than {MAX_BODY} bytes"}
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        return 400, {"error": f"the body is not JSON: {exc}"}
    if not isinstance(body, dict):
        return 400, {"error": 'the body must be a JSON object: {"reason": "..."}'}
    token = cast(aioweb.Request, request).get(auth.TOKEN_KEY)
    by = auth_config.personal_name(token) or request.headers.get("X-Keel-Agent") or "admin"
    try:
        record = build_request(
            customer_id, body.get("reason"), by, int(time.time() * 1000), body.get("request_id")
        )
        value = get_codec().encode("ErasureRequest", record)
        out = emitter.outbox()
        out.produce(settings.topics.erasures, customer_id.encode(), value)
        await asyncio.wait_for(out.confirmed(), PUBLISH_TIMEOUT_S)
    except BadErasureRequest as exc:
        return 400, {"error": str(exc)}
    except (EmitError, TimeoutError, CodecError) as exc:
        log.warning("an erasure request was not published: %s", exc)
        return 503, {"error": "Kafka did not acknowledge the request; send it again (same "
                     "request_id)"}  # fmt: skip
    log.info("erasure request %s published by %s", record["request_id"], by)
    return 202, to_json("ErasureRequest", record)
