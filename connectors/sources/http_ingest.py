"""HTTP ingest: departments POST events as JSON; 202 only once Kafka has every one of them.

``POST /events/orders|shipments|contacts`` takes one event as a JSON object, or many as NDJSON
(``Content-Type: application/x-ndjson``, or detected: a body that is not one JSON value but
one per line). Every event is validated against its Avro schema (``streams.encoding.jsonconv``)
before
anything is produced, so a request is all or nothing: the first invalid event makes it a 400
``{"error", "field", "line"}`` and nothing of it reaches Kafka. A body larger than
``KEEL_INGEST_MAX_BYTES`` is a 413 before it is read. The 202 ``{"accepted": N, "event_ids"}``
comes only after Kafka acknowledged every record; a Kafka that does not acknowledge in time
is a 503 (retry the request: events keep their ids, keel applies each id once).

Whatever a client sends, the answer is JSON and never a 5xx caused by the input. Also served:
``/openapi.json`` (generated from the Avro schemas), ``/healthz``, ``/metrics``.

Posting needs a token with the write role, ``/metrics`` one with the metrics role
(streams/auth.py; checked before the body is read); ``/healthz`` and ``/openapi.json`` are
open::

    $ python -m connectors.sources.http_ingest          # port KEEL_INGEST_PORT (8088)
    $ curl -s -XPOST 127.0.0.1:8088/events/orders -H "Authorization: Bearer $KEEL_WRITE_TOKEN" \\
        -d @order.json
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connectors import metrics
from connectors.contract import OutRecord, Unavailable
from connectors.errors import ConnectorError
from connectors.openapi import NDJSON, openapi_document
from connectors.publisher import DELIVERY_TIMEOUT_MS, Publisher
from connectors.runner import Served, run_web
from connectors.settings import ConnectorSettings, InputKind
from streams import auth
from streams.encoding.codec import CodecError, get_codec
from streams.encoding.jsonconv import JsonFieldError, from_json
from streams.weberrors import json_errors

log = logging.getLogger("connectors.sources.http_ingest")  # not __main__ under python -m

__all__ = ["BadRequest", "Ingest", "main", "parse_events"]

CONNECTOR = "http_ingest"
NDJSON_TYPES = frozenset({NDJSON, "application/ndjson", "application/jsonl", "application/x-jsonl"})
# Kafka's default largest record (message.max.bytes) less room for the key and headers.
MAX_RECORD_BYTES = 1_000_000 - 16_384
# Larger bodies are parsed and validated in a thread so /healthz stays responsive meanwhile.
THREAD_THRESHOLD = 64 * 1024


class BadRequest(ConnectorError):
    """The request is refused; ``status`` 400 or 413, ``field``/``line`` say where."""

    def __init__(
        self, status: int, error: str, field: str = "", line: int | None = None, reason: str = ""
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.field = field
        self.line = line
        self.reason = reason or ("too_large" if status == 413 else "invalid")

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.error, "field": self.field}
        if self.line is not None:
            out["line"] = self.line
        return out


@dataclass(frozen=True, slots=True)
class _Parsed:
    line: int | None  # 1-based NDJSON line, None for a single JSON body
    event: Any


def parse_events(body: bytes, content_type: str) -> list[_Parsed]:
    """The JSON values of a request body, one per event, with their NDJSON line numbers.

    ``application/x-ndjson`` (and its aliases) is read line by line; any other type is tried
    as one JSON value first and as NDJSON second, so ``curl -d`` works without ``-H``.
    """
    if content_type not in NDJSON_TYPES:
        try:
            return [_Parsed(None, orjson.loads(body))]
        except orjson.JSONDecodeError as exc:
            if body.count(b"\n") == 0 or not _first_line_is_json(body):
                raise BadRequest(400, f"body is not JSON: {exc}", reason="bad_json") from None
    events: list[_Parsed] = []
    for number, raw in enumerate(body.split(b"\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            events.append(_Parsed(number, orjson.loads(line)))
        except orjson.JSONDecodeError as exc:
            raise BadRequest(
                400, f"line {number}: not JSON: {exc}", line=number, reason="bad_json"
            ) from None
    return events


def _first_line_is_json(body: bytes) -> bool:
    first = next((line for line in body.split(b"\n") if line.strip()), b"")
    try:
        orjson.loads(first)
    except orjson.JSONDecodeError:
        return False
    return True


class Ingest:
    """The aiohttp application: validation, publishing and the JSON error surface."""

    def __init__(self, settings: ConnectorSettings, publisher: Publisher) -> None:
        self.settings = settings
        self.publisher = publisher
        self.codec = get_codec()
        self.kinds: dict[str, InputKind] = {kind.path: kind for kind in settings.inputs()}
        self.max_bytes = settings.ingest_max_bytes
        self.openapi = orjson.dumps(
            openapi_document(
                [(k.path, k.record, k.topic, k.key_field) for k in self.kinds.values()],
                self.codec,
                self.max_bytes,
                secured=settings.auth.enabled,
                metrics_public=settings.auth.metrics_public,
            )
        )

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[
                json_errors("see /openapi.json"),
                auth.middleware(self.settings.auth, auth.ingest_role),
            ],
            client_max_size=self.max_bytes + 1,
        )
        app.router.add_post("/events/{kind}", self.post_events)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/openapi.json", self.openapi_json)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics(self, request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def openapi_json(self, request: web.Request) -> web.Response:
        return web.Response(body=self.openapi, content_type="application/json")

    async def post_events(self, request: web.Request) -> web.Response:
        kind = self.kinds.get(request.match_info["kind"])
        if kind is None:
            known = ", ".join(f"/events/{path}" for path in self.kinds)
            return _error(404, f"no such event type; POST to one of {known}")
        try:
            body = await self._read_body(request)
            if len(body) > THREAD_THRESHOLD:
                records, ids = await asyncio.to_thread(
                    self.prepare, kind, body, request.content_type
                )
            else:
                records, ids = self.prepare(kind, body, request.content_type)
        except BadRequest as exc:
            metrics.REJECTED.labels(CONNECTOR, exc.reason).inc()
            return web.json_response(exc.body(), status=exc.status)
        metrics.ACCEPTED.labels(CONNECTOR, kind.topic).inc(len(records))
        began = time.perf_counter()
        try:
            await self._publish(records)
        except Unavailable as exc:
            metrics.RETRIES.labels(CONNECTOR, "kafka").inc()
            log.warning("Kafka did not acknowledge %d event(s): %s", len(records), exc)
            return _error(
                503,
                f"Kafka did not acknowledge the events ({exc}); retry the request, "
                "events keep their event_id so none is applied twice",
                headers={"Retry-After": "1"},
            )
        metrics.PUBLISH_SECONDS.labels(CONNECTOR).observe(time.perf_counter() - began)
        metrics.PUBLISHED.labels(CONNECTOR, kind.topic).inc(len(records))
        return web.json_response({"accepted": len(ids), "event_ids": ids}, status=202)

    async def _read_body(self, request: web.Request) -> bytes:
        too_large = BadRequest(
            413,
            f"request body larger than {self.max_bytes} bytes (KEEL_INGEST_MAX_BYTES); "
            "split it into several requests",
        )
        if request.content_length is not None and request.content_length > self.max_bytes:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > self.max_bytes:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    def prepare(
        self, kind: InputKind, body: bytes, content_type: str
    ) -> tuple[list[OutRecord], list[str]]:
        """Parse, validate and encode every event of ``body``; raise BadRequest on the first bad."""
        events = parse_events(body, content_type)
        if not events:
            raise BadRequest(400, f"no event in the body; send one {kind.record} as JSON")
        records: list[OutRecord] = []
        ids: list[str] = []
        for parsed in events:
            where = f"line {parsed.line}: " if parsed.line is not None else ""
            if not isinstance(parsed.event, dict):
                raise BadRequest(
                    400,
                    f"{where}expected a {kind.record} JSON object, got {_json_kind(parsed.event)}"
                    + ("; send many events as NDJSON, one object per line" if not where else ""),
                    line=parsed.line,
                )
            try:
                event = from_json(kind.record, parsed.event)
            except JsonFieldError as exc:
                raise BadRequest(400, f"{where}{exc}", exc.field, parsed.line) from None
            try:
                value = self.codec.encode(kind.record, event)
            except CodecError as exc:  # from_json validated it; kept as a guard, never a 500
                raise BadRequest(400, f"{where}{exc.reason}", line=parsed.line) from None
            key = str(event[kind.key_field]).encode()
            if len(value) + len(key) > MAX_RECORD_BYTES:
                raise BadRequest(
                    413,
                    f"{where}event encodes to {len(value)} bytes, more than a Kafka record "
                    f"may hold ({MAX_RECORD_BYTES})",
                    line=parsed.line,
                )
            records.append(OutRecord(kind.topic, key, value))
            ids.append(event["event_id"])
        return records, ids

    async def _publish(self, records: list[OutRecord]) -> None:
        futures = [asyncio.wrap_future(f) for f in self.publisher.send(records)]
        timeout = DELIVERY_TIMEOUT_MS / 1000 + 10
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*futures, return_exceptions=True), timeout
            )
        except TimeoutError:
            raise Unavailable(f"no acknowledgement within {timeout:g}s") from None
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            if isinstance(failure, Unavailable):
                raise failure
            raise Unavailable(str(failure)) from failure


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "a string"


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def main(argv: list[str] | None = None) -> int:
    return run_web("http-ingest", log, serve)


def serve(settings: ConnectorSettings, publisher: Publisher) -> Served:
    """``POST /events/{kind}`` on ``KEEL_INGEST_PORT``, published through ``publisher``."""
    describe = (
        f"HTTP ingest on http://{settings.bind}:{settings.ingest_port} "
        f"(Kafka {settings.keel.kafka_bootstrap})"
    )
    return Served(Ingest(settings, publisher).app(), settings.ingest_port, describe)


if __name__ == "__main__":
    sys.exit(main())
