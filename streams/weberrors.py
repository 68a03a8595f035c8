"""aiohttp's own answers (404, 405, a malformed request's 400) as keel's JSON error.

Every aiohttp server of keel (the worker, the HTTP ingest) answers ``{"error": …}`` with a JSON
content type, whatever refused the request: a handler, the token check, or aiohttp's router,
which otherwise answers in plain text. A 405 keeps its ``Allow`` header. An exception a handler
did not expect is logged as the bug it is and answered 500, without a stack trace to the
caller.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

__all__ = ["json_errors"]


def json_errors(hint: str) -> Any:
    """The middleware; ``hint`` ends a 404's message (where the routes are listed)."""

    @web.middleware
    async def answer_json(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            message = {
                404: f"no such resource {request.path}; {hint}",
                405: f"{request.method} is not allowed on {request.path}",
            }.get(exc.status, exc.text or exc.reason)
            return web.json_response({"error": message}, status=exc.status, headers=headers)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unexpected error handling %s %s", request.method, request.path)
            return web.json_response({"error": "internal error; it is logged"}, status=500)

    return answer_json
