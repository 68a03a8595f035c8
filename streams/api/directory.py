"""Search the customer directory the way callers name themselves (read role).

    GET /directory?q=jose%20muller&limit=10
    200 {"customers": [{"customer_id": "c-42", "name": "José Müller", "emails": [...],
                        "phones": ["+49307624039"], "order_ids": ["o-1188"],
                        "updated_at": "…", "matched": "exact" | "words" | "phone"}, ...]}

``q``: part of a name (any case, accents or not), part of an e-mail, a phone number in local
(``KEEL_PHONE_REGION``) or international format, an order id in any case, a customer id.
Exact matches of an id, e-mail, phone or order id come first, then by trigram similarity.
The directory is a PostgreSQL table (``KEEL_DIRECTORY_URL``) that connectors/sinks/directory.py
keeps from customer-state.v1, so a search never scans the workers' partitions and answers the
same on every worker; it follows the state a moment behind (the sink's lag).

400 a query too short to be specific; 503 no directory configured, or PostgreSQL not answering.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faust.web import Request, Response, View

from streams.api import spec
from streams.api.customers import _error, _json
from streams.app import app, settings
from streams.domain.directory import MIN_CHARS, Query, QueryError, query

log = logging.getLogger(__name__)

DEFAULT_LIMIT, MAX_LIMIT = 10, 50
TABLE = "keel_customer_directory"  # connectors/sinks/directory.py
TIMEOUT_S = 5.0

_connection: Any = None
_lock = asyncio.Lock()


def _like(word: str) -> str:
    """``word`` as a LIKE pattern matching it anywhere, its own wildcards escaped."""
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def sql(q: Query, limit: int) -> tuple[str, dict[str, Any]]:
    """The directory query of ``q``: (SQL, parameters)."""
    where: list[str] = []
    params: dict[str, Any] = {"exact": q.exact, "phone": q.phone, "limit": limit}
    if q.words:
        params["patterns"] = [_like(w) for w in q.words]
        where.append("search_text LIKE ALL(%(patterns)s)")
    if q.phone:
        where.append("%(phone)s = ANY(phones)")
        if q.phone_digits:
            params["digits"] = _like(q.phone_digits)
            where.append("search_text LIKE %(digits)s")
    text = f"""
        SELECT customer_id, name, emails, phones, order_ids, updated_at,
               (customer_id = %(exact)s OR %(exact)s = ANY(emails) OR %(exact)s = ANY(order_ids)
                OR %(phone)s = ANY(phones)) AS exact
        FROM {TABLE}
        WHERE {" OR ".join(where)}
        ORDER BY exact DESC, similarity(search_text, %(exact)s) DESC, customer_id
        LIMIT %(limit)s
    """
    return text, params


async def _search(q: Query, limit: int) -> list[dict[str, Any]]:
    global _connection
    import psycopg
    from psycopg.rows import dict_row

    text, params = sql(q, limit)
    async with _lock:  # one connection per worker: searches are short, and few at a time
        for attempt in (1, 2):
            try:
                if _connection is None or _connection.closed:
                    _connection = await psycopg.AsyncConnection.connect(
                        settings.directory_url, autocommit=True, row_factory=dict_row,
                        connect_timeout=int(TIMEOUT_S),
                    )  # fmt: skip
                cursor = await asyncio.wait_for(_connection.execute(text, params), TIMEOUT_S)
                return list(await cursor.fetchall())
            except psycopg.OperationalError:
                if _connection is not None:
                    await _connection.close()
                _connection = None
                if attempt == 2:
                    raise
    return []


@app.page("/directory")
async def get_directory(web: View, request: Request) -> Response:
    if not settings.directory_url:
        return _error(web, 503, "no customer directory is configured (KEEL_DIRECTORY_URL)")
    try:
        limit = int(request.query.get("limit", DEFAULT_LIMIT))
    except ValueError:
        return _error(web, 400, "limit must be a whole number")
    if not 1 <= limit <= MAX_LIMIT:
        return _error(web, 400, f"limit must be from 1 to {MAX_LIMIT}")
    try:
        q = query(request.query.get("q", ""), settings.phone_region)
    except QueryError as exc:
        return _error(web, 400, f"q: {exc} (at least {MIN_CHARS})")
    import psycopg

    try:
        rows = await _search(q, limit)
    except psycopg.errors.UndefinedTable:
        rows = []  # the sink has not written its first batch yet: nobody to find so far
    except Exception as exc:  # PostgreSQL down, a timeout
        log.warning("directory search failed: %s", exc)
        return _error(web, 503, "the customer directory is not answering; try again shortly")
    for row in rows:
        row["matched"] = "exact" if row.pop("exact") else ("phone" if q.phone else "words")
    return _json(web, {"customers": rows})


# -- the OpenAPI document's view of this route (streams/api/spec.py) ------------------------

OPERATIONS = (
    spec.Operation(
        "GET",
        "/directory",
        "searchDirectory",
        "Find customers by part of a name, an e-mail, a phone number, an order or customer id",
        {
            200: spec.json_reply("the best matches first", {
                "type": "object",
                "properties": {"customers": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"customer_id": {"type": "string"},
                                   "matched": {"enum": ["exact", "words", "phone"]}},
                    "required": ["customer_id", "name", "emails", "phones", "order_ids",
                                 "updated_at", "matched"],
                }}},
                "required": ["customers"],
            }),  # fmt: skip
            400: spec.error("q has fewer than two letters or digits, or a bad limit"),
            503: spec.unavailable("no directory configured, or PostgreSQL does not answer"),
        },
        query=(
            spec.param("q", {"type": "string", "minLength": MIN_CHARS}, "what the caller said: "
                       f"at least {MIN_CHARS} letters or digits", required=True),  # fmt: skip
            spec.param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                       "at most this many (default 10)"),  # fmt: skip
        ),
    ),
)
