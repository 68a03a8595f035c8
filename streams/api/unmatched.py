"""HTTP of the unmatched contacts (streams/domain/unmatched.py).

    GET  /unmatched?limit=100&after=k-7          the list, by contact id (read role)
    POST /unmatched/{contact_id}/assign          assign_contact (agent role)
         {"command_id": "…", "customer_id": "c-2", "reason": "caller confirmed her order"}

The worker owning the unmatched partition (``UNMATCHED_KEY``'s) answers; any other forwards
the request to it, like the voice board's. An assignment is checked against the contact's row
(404 not unmatched, 409 assigned by another command, 202 ``duplicate`` for the same one
again), then published to the join (customer-events, keyed by ``UNMATCHED_KEY``) and answered
202 once Kafka acknowledged it; the join applies the first assignment of a contact and keeps
it on the row as the audit record (command id, customer, agent, reason, when).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from faust.web import Request, Response, View

from streams.api import spec
from streams.api.commands import ACCEPTED, AGENT, PUBLISH_TIMEOUT_S, _field, post_at_owner
from streams.api.customers import _error, _json, _route
from streams.app import app
from streams.domain import unmatched
from streams.domain.commands import Refused
from streams.encoding.jsonconv import iso_ms
from streams.ops import metrics
from streams.worker import messages
from streams.worker.checkpoint import Packer
from streams.worker.emit import CUSTOMER_EVENTS, EmitError, emitter
from streams.worker.monitoring import ready
from streams.worker.tables import partition_of, read
from streams.worker.tables import unmatched as unmatched_table

log = logging.getLogger(__name__)

DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
ASSIGN = "ASSIGN_CONTACT"


def _rows() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(rows, pictures) of this worker's unmatched partition."""
    rows, pictures = [], {}
    for raw_key, raw in unmatched_table.data._iteritems():
        key = raw_key.decode()
        if key.startswith("k:"):
            rows.append(orjson.loads(raw))
        elif key.startswith("i:"):
            pictures[key] = orjson.loads(raw)
    return rows, pictures


@app.page("/unmatched")
async def get_unmatched(web: View, request: Request) -> Response:
    if not ready():
        return _error(web, 503, "worker is recovering its tables; try again shortly")
    try:
        limit = int(request.query.get("limit", DEFAULT_LIMIT))
    except ValueError:
        return _error(web, 400, "limit must be a whole number")
    if not 1 <= limit <= MAX_LIMIT:
        return _error(web, 400, f"limit must be from 1 to {MAX_LIMIT}")
    routed = await _route(web, request, unmatched_table, unmatched.UNMATCHED_KEY)
    if routed is not None:
        return routed
    rows, pictures = _rows()
    entries, after = unmatched.page(rows, request.query.get("after"), limit, pictures)
    return _json(web, {"unmatched": [_iso(e) for e in entries], "next": after})


def _iso(entry: dict[str, Any]) -> dict[str, Any]:
    """Times as in every other answer of keel's: ISO 8601, UTC, milliseconds."""
    return {**entry, **{k: None if entry[k] is None else iso_ms(entry[k])
                        for k in ("opened_at", "since")}}  # fmt: skip


@app.page("/unmatched/{contact_id}/assign")
class AssignContact(View):
    async def post(self, request: Request, contact_id: str) -> Response:
        return await post_at_owner(
            self, request, unmatched_table, unmatched.UNMATCHED_KEY,
            lambda body, agent: assign(contact_id, body, agent),
        )  # fmt: skip


async def assign(contact_id: str, raw: bytes, agent: str | None) -> tuple[int, dict[str, Any]]:
    """(status, answer) of an assign_contact on the unmatched partition's owner."""
    try:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise Refused(400, f"the body is not JSON: {exc}") from None
        command = unmatched.assign_command(contact_id, body, agent, int(time.time() * 1000))
        row, _ = read(unmatched_table, partition_of(unmatched.UNMATCHED_KEY),
                      unmatched.row_key(contact_id))  # fmt: skip
        if not unmatched.check_assign(command, row):
            metrics.COMMANDS.labels(ASSIGN, "duplicate").inc()
            return 202, {"command_id": command["command_id"], "duplicate": True}
        out = emitter.outbox()
        internal = Packer(out.produce)
        internal.send(CUSTOMER_EVENTS, unmatched.UNMATCHED_KEY, messages.assign_command(command))
        internal.flush()
        await asyncio.wait_for(out.confirmed(), PUBLISH_TIMEOUT_S)
    except Refused as exc:
        metrics.COMMANDS.labels(ASSIGN, "refused").inc()
        return exc.status, exc.body()
    except (EmitError, TimeoutError) as exc:
        metrics.COMMANDS.labels(ASSIGN, "unavailable").inc()
        log.warning("an assign_contact was not published: %s", exc)
        return 503, {"error": "Kafka did not acknowledge the assignment; send it again (same "
                     "command_id)"}  # fmt: skip
    metrics.COMMANDS.labels(ASSIGN, "published").inc()
    log.info("assign_contact %s published by %s", command["command_id"], command["agent"])
    return 202, {"command_id": command["command_id"]}


# -- the OpenAPI document's view of these routes (streams/api/spec.py) ----------------------

_ASSIGNMENT = {
    "type": "object",
    "properties": {
        "command_id": _field(unmatched.MAX_ID, "a retry sends the same"),
        "customer_id": _field(unmatched.MAX_ID, "whose contact it is"),
        "reason": _field(unmatched.MAX_TEXT, "why, for the audit trail"),
    },
    "required": ["command_id", "customer_id", "reason"],
    "additionalProperties": False,
}
_ENTRY = {
    "type": "object",
    "properties": {
        "contact_id": {"type": "string"},
        "channel": {"type": ["string", "null"]},
        "opened_at": {"type": ["string", "null"], "format": "date-time"},
        "since": {"type": ["string", "null"], "format": "date-time"},
        "why": {"type": "array", "items": {"type": "object"}},
        "candidates": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["contact_id", "channel", "opened_at", "since", "why", "candidates"],
}

OPERATIONS = (
    spec.Operation(
        "GET",
        "/unmatched",
        "listUnmatched",
        "The contacts keel could not place with a customer, by contact id (docs/api.md)",
        {
            200: spec.json_reply("one page", {
                "type": "object",
                "properties": {"unmatched": {"type": "array", "items": _ENTRY},
                               "next": {"type": ["string", "null"]}},
                "required": ["unmatched", "next"],
            }),  # fmt: skip
            400: spec.error("limit is not a whole number from 1 to 1000"),
            503: spec.unavailable("recovering, or the partition is moving"),
        },
        query=(
            spec.param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                       "entries per page (default 100)"),  # fmt: skip
            spec.param("after", {"type": "string"}, "the next of the page before"),
        ),
    ),
    spec.Operation(
        "POST",
        "/unmatched/{contact_id}/assign",
        "assignContact",
        "Assign an unmatched contact to a customer (docs/commands.md)",
        {
            202: spec.json_reply("Kafka has the assignment (or had it: duplicate)", ACCEPTED),
            400: spec.error("an invalid assignment; field names the culprit"),
            404: spec.error("the contact is not unmatched"),
            409: spec.error("another command assigned it already"),
            503: spec.unavailable("Kafka did not acknowledge, or the owner does not answer"),
        },
        headers=(AGENT,),
        request_body=spec.body(_ASSIGNMENT, "the assignment"),
    ),
)
