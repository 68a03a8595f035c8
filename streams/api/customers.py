"""The query API (docs/contract.md §7): every worker answers for every customer.

A request for a key another worker owns is forwarded to that worker's ``canonical_url``,
found in the partition map faust's assignor hands every group member. Lookups by e-mail,
phone or order go first to the worker owning that reference, which then answers with the
customer's state — itself, or by asking the worker that owns the customer.

keel routes itself rather than through faust's ``table_route`` because of what that does
while workers come and go (seen with faust-streaming 0.15):

- a forward to a worker that just crashed raised ``ClientConnectorError``: a 500 and a
  traceback in the log for every request until the group noticed, instead of a 503 the
  caller can retry;
- it hashes keys with the producer's metadata of the changelog topic, which a worker that
  never wrote to that topic does not have (``TypeError``: another 500);
- two workers with different views of the assignment (one has seen a rebalance, the other
  not yet) would forward a request back and forth. Here a forwarded request carries
  :data:`FORWARDED_HEADER` and is never forwarded again: the receiver answers or says 503.

A forward is no way around authentication (streams/auth.py): it carries the caller's own
token, and the owner checks it like any request, so it answers 401/403 exactly as the first
worker would have. :data:`FORWARDED_HEADER` grants nothing.

While the owner cannot answer — the group is rebalancing, this worker or the owner is
recovering, the owner is gone and its session has not yet timed out — a customer or lookup
request is answered from this worker's own copy of the partition (an active one until its
rebalance, a standby, streams/worker/copies.py) when it has one known to be current up to some
time: the answer is marked ``stale: true`` with ``as_of`` (and the headers
:data:`STALE_HEADER`, :data:`AS_OF_HEADER`). Only without such a copy is it 503. A key the copy
does not hold is 503 too, not 404: it may have arrived since.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp import web as aioweb
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from yarl import URL

from streams import auth
from streams.api import spec
from streams.app import app
from streams.domain.identity import normalize_email, normalize_phone
from streams.domain.join import EMAIL, ORDER, PHONE
from streams.domain.state import view
from streams.encoding.jsonconv import to_json
from streams.encoding.timestamps import iso_ms
from streams.ops import health
from streams.worker import copies, tables
from streams.worker.monitoring import ready
from streams.worker.tables import customers, owners

log = logging.getLogger(__name__)

LOOKUPS = {
    "email": (EMAIL, normalize_email),
    "phone": (PHONE, normalize_phone),
    "order_id": (ORDER, lambda s: s.strip() or None),
}

FORWARDED_HEADER = "X-Keel-Forwarded-By"
"""Set on a request one worker forwards to another; its value is the sender's URL."""

FORWARD_TIMEOUT = aiohttp.ClientTimeout(total=5.0, connect=1.0)
"""A worker that does not answer a forward within this is treated as gone (503)."""

RETRY_AFTER = {"Retry-After": "1"}

STALE_HEADER = "X-Keel-Stale"
"""``true`` on an answer from a copy that may be behind (its body says ``stale: true``)."""

AS_OF_HEADER = "X-Keel-As-Of"
"""On a stale answer: the time up to which the copy it came from holds every change."""


def _json(web: View, body: Any, status: int = 200, headers: dict | None = None) -> Response:
    return web.bytes(
        orjson.dumps(body), content_type="application/json", status=status, headers=headers
    )


def _error(web: View, status: int, message: str) -> Response:
    return _json(web, {"error": message}, status, RETRY_AFTER if status == 503 else None)


def owner_url(table: Any, key: str) -> URL | None:
    """URL of the worker that owns ``key``'s partition of ``table``; None while unassigned."""
    partition = tables.partition_of(key)
    topic = table.changelog_topic.get_topic_name()
    for url, partitions in app.router.table_metadata(table.name).items():
        if partition in partitions.get(topic, ()):
            return URL(url)
    return None


def _is_me(url: URL) -> bool:
    me = URL(str(app.conf.canonical_url))
    return (url.host, url.port) == (me.host, me.port)


_warned_at: dict[str, float] = {}


def _warn_unreachable(owner: URL, exc: BaseException) -> None:
    """One warning per unreachable worker per 30 s, not one per request while it is down."""
    now = time.monotonic()
    if now - _warned_at.get(str(owner), -60.0) >= 30.0:
        _warned_at[str(owner)] = now
        log.warning(
            "worker %s does not answer forwarded queries (%s); answering from this worker's "
            "copies (stale) where it has them, else 503, until the group moves its partitions",
            owner,
            type(exc).__name__,
        )


def forward_headers(request: Request) -> dict[str, str]:
    """Headers of a request forwarded to the owning worker: who forwards it, and the
    caller's token (from its Authorization header or the desk's cookie), checked there again."""
    headers = {FORWARDED_HEADER: str(app.conf.canonical_url)}
    token = cast(aioweb.Request, request).get(auth.TOKEN_KEY)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


PASSED_ON = ("Retry-After", "WWW-Authenticate", STALE_HEADER, AS_OF_HEADER)
"""Headers of the owner's answer that the forwarding worker hands its caller unchanged."""


def passed_on(resp: aiohttp.ClientResponse) -> dict[str, str] | None:
    """The owner's :data:`PASSED_ON` headers (its 401's challenge, its 503's Retry-After)."""
    found = {name: resp.headers[name] for name in PASSED_ON if name in resp.headers}
    return found or None


async def _forward(web: View, request: Request, owner: URL, path_qs: str) -> Response:
    """GET ``path_qs`` from ``owner`` and pass its answer on; 503 if it cannot be reached."""
    target = f"{str(owner).rstrip('/')}{path_qs}"
    headers = forward_headers(request)
    try:
        async with app.http_client.get(target, headers=headers, timeout=FORWARD_TIMEOUT) as resp:
            body = await resp.read()
            return web.bytes(
                body, content_type=resp.content_type, status=resp.status, headers=passed_on(resp)
            )
    except (TimeoutError, aiohttp.ClientError) as exc:
        _warn_unreachable(owner, exc)
        return _error(
            web,
            503,
            f"the worker owning this key ({owner}) does not answer; it is probably restarting "
            "and its partitions will move to another worker shortly — try again",
        )


async def _route(web: View, request: Request, table: Any, key: str) -> Response | None:
    """Forward ``request`` to the owner of ``key`` in ``table``; None if this worker owns it."""
    owner = owner_url(table, key)
    if owner is None:
        return _error(web, 503, "partition assignment in progress; try again shortly")
    if _is_me(owner):
        return None
    if FORWARDED_HEADER in request.headers:
        # The sender thinks this worker owns the key, this worker thinks not: the two have
        # seen different assignments, i.e. a rebalance is under way. Forwarding on could
        # send the request back and forth.
        return _error(web, 503, "workers are rebalancing partitions; try again shortly")
    return await _forward(web, request, owner, str(request.rel_url))


@dataclass(frozen=True)
class Here:
    """The answer comes from this worker: the owner's current table (``as_of`` None), or this
    worker's copy, holding every change up to ``as_of`` (epoch seconds)."""

    as_of: float | None = None


CURRENT = Here()


async def route_or_copy(
    web: View, request: Request, table: Any, key: str, path_qs: str | None = None
) -> Response | Here:
    """Where the answer about ``key`` in ``table`` comes from: :data:`CURRENT` when this worker
    is the ready owner; else the owner's answer (``path_qs`` forwarded, the request's own by
    default; a forwarded request itself is never forwarded again, a new one with ``path_qs``
    is); else, while the owner cannot answer, this worker's copy (:class:`Here` with its
    ``as_of``); else a 503 saying why."""
    if app.should_stop:  # its tables closed, its HTTP client too: another worker answers
        return _error(web, 503, "this worker is stopping; another one answers")
    owner = owner_url(table, key)
    me = owner is not None and _is_me(owner)
    if me and ready():
        return CURRENT
    answer: Response | None = None
    if owner is None:
        why = "partition assignment in progress"
    elif me:
        why = "this worker is recovering its tables"
    elif path_qs is None and FORWARDED_HEADER in request.headers:
        # The sender thinks this worker owns the key, this worker thinks not: the two have
        # seen different assignments, i.e. a rebalance is under way. Forwarding on could
        # send the request back and forth.
        why = "workers are rebalancing partitions"
    else:
        answer = await _forward(web, request, owner, path_qs or str(request.rel_url))
        if answer.status != 503:
            return answer
        why = f"the worker owning this key ({owner}) cannot answer now"
    at = copies.as_of(table, tables.partition_of(key))
    if at is not None:
        return Here(at)
    return answer or _error(web, 503, f"{why}; try again shortly")


def stale_fields(as_of: float) -> tuple[dict[str, Any], dict[str, str]]:
    """(fields, headers) that mark an answer from a copy current up to ``as_of``."""
    stamp = iso_ms(int(as_of * 1000))
    return {"stale": True, "as_of": stamp}, {STALE_HEADER: "true", AS_OF_HEADER: stamp}


def _not_in_copy(web: View, what: str, as_of: float) -> Response:
    return _error(
        web,
        503,
        f"{what} is not in this worker's copy (current up to {iso_ms(int(as_of * 1000))}) and "
        "its owner cannot answer now; it may have arrived since — try again shortly",
    )


def _read_here(table: Any, key: str, here: Here) -> tuple[Any, float | None] | None:
    """``(stored value or None, as_of)`` of ``key`` as :class:`Here` says; None when the copy
    was closed meanwhile (its partition moved on)."""
    if here.as_of is None:
        return table.get(key), None
    return copies.read(table, key)


def _customer_here(web: View, customer_id: str, here: Here, older: float | None = None) -> Response:
    """The customer's state from this worker, marked stale with the older of its copy's time and
    ``older`` (that of a copy the request went through first) when either is a copy."""
    found = _read_here(customers, customer_id, here)
    if found is None:
        return _error(web, 503, "partitions are moving; try again shortly")
    state, at = found
    at = min((t for t in (at, older) if t is not None), default=None)
    if state is None:
        if at is not None:
            return _not_in_copy(web, f"customer {customer_id!r}", at)
        return _error(web, 404, f"no customer {customer_id!r}")
    body = to_json("CustomerState", view(state))
    if at is None:
        return _json(web, body)
    fields, headers = stale_fields(at)
    return _json(web, {**body, **fields}, headers=headers)


async def _state_json(request: Request, customer_id: str) -> tuple[int, dict | None]:
    """``(status, CustomerState JSON or None)`` of any customer: from this worker's table,
    else from its owner (a new request, with the caller's token), else from this worker's
    copy (then with ``stale`` and ``as_of``)."""
    owner = owner_url(customers, customer_id)
    if owner is not None and _is_me(owner) and ready():
        state = customers.get(customer_id)
        return (404, None) if state is None else (200, to_json("CustomerState", view(state)))
    status = 503
    if owner is not None and not _is_me(owner) and not app.should_stop:
        target = f"{str(owner).rstrip('/')}/customers/{quote(customer_id, safe='')}"
        try:
            async with app.http_client.get(
                target, headers=forward_headers(request), timeout=FORWARD_TIMEOUT
            ) as resp:
                if resp.status == 200:
                    return 200, orjson.loads(await resp.read())
                status = resp.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            _warn_unreachable(owner, exc)
    found = copies.read(customers, customer_id) if status == 503 else None
    if found is None or found[0] is None:
        return status, None
    return 200, {**to_json("CustomerState", view(found[0])), **stale_fields(found[1])[0]}


def combine(accounts: list[dict]) -> dict[str, list[dict]]:
    """The combined view of linked accounts: their orders, parcels, contacts and signals,
    each tagged with the ``account`` (customer id) it is from; the first account first.

    >>> combine([{"customer_id": "c-1", "orders": [], "contacts": [], "signals": []}])
    {'accounts': ['c-1'], 'orders': [], 'parcels': [], 'contacts': [], 'signals': []}
    """
    out: dict[str, list] = {"accounts": [], "orders": [], "parcels": [], "contacts": [],
                            "signals": []}  # fmt: skip
    for state in accounts:
        account = state["customer_id"]
        out["accounts"].append(account)
        for o in state["orders"]:
            out["orders"].append({**o, "account": account})
            for s in o["shipments"]:
                out["parcels"].append({**s, "order_id": o["order_id"], "account": account})
        out["contacts"] += [{**c, "account": account} for c in state["contacts"]]
        out["signals"] += [{**x, "account": account} for x in state["signals"]]
    return out


async def _with_linked(web: View, request: Request, customer_id: str, here: Here) -> Response:
    """``GET /customers/{id}?include=linked``: the state and the combined view of it and
    every account linked to it (streams/domain/links.py); accounts that cannot be read now are
    listed in ``combined.unavailable`` with the status their owner answered. Any part read from
    a copy makes the whole answer stale, ``as_of`` the oldest part's."""
    found = _read_here(customers, customer_id, here)
    if found is None:
        return _error(web, 503, "partitions are moving; try again shortly")
    state, at = found
    if state is None:
        if at is not None:
            return _not_in_copy(web, f"customer {customer_id!r}", at)
        return _error(web, 404, f"no customer {customer_id!r}")
    own = to_json("CustomerState", view(state))
    accounts: list[dict] = [own]
    unavailable: list[dict] = []
    for other in sorted({x["customer_id"] for x in own["linked"]}):
        status, linked = await _state_json(request, other)
        if linked is None:
            unavailable.append({"customer_id": other, "status": status})
        else:
            accounts.append(linked)
    stamps = [a.pop("as_of") for a in accounts if a.pop("stale", False)]
    if at is not None:
        stamps.append(iso_ms(int(at * 1000)))
    combined = combine(accounts)
    combined["unavailable"] = unavailable
    if not stamps:
        return _json(web, {**own, "combined": combined})
    oldest = min(stamps)  # ISO-8601 UTC, one format: ordered as text
    body = {**own, "combined": combined, "stale": True, "as_of": oldest}
    return _json(web, body, headers={STALE_HEADER: "true", AS_OF_HEADER: oldest})


@app.page("/customers/{customer_id}")
class CustomerPage(View):
    async def get(self, request: Request, customer_id: str) -> Response:
        """The customer's state; with ``?include=linked`` also the combined view of the
        accounts linked to it."""
        include = request.query.get("include")
        if include not in (None, "linked"):
            return _error(self, 400, "include takes one value: linked")
        here = await route_or_copy(self, request, customers, customer_id)
        if not isinstance(here, Here):
            return here
        if include == "linked":
            return await _with_linked(self, request, customer_id, here)
        return _customer_here(self, customer_id, here)

    async def delete(self, request: Request, customer_id: str) -> Response:
        """Erase the customer (admin role): publish an erasure request, 202 once Kafka has it.

        Any worker publishes it (erasures.v1, keyed by the customer); the customer's owner
        applies it within moments (streams/domain/erasure.py). The JSON body gives ``reason``
        (required: the audit trail) and optionally ``request_id`` (a retry keeps it).
        """
        from streams.api.erasure import erase

        status, answer = await erase(request, customer_id)
        return _json(self, answer, status, {"Retry-After": "1"} if status == 503 else None)


@app.page("/customers")
async def find_customer(web: View, request: Request) -> Response:
    given = [name for name in request.query if name in LOOKUPS]
    unknown = [name for name in request.query if name not in LOOKUPS]
    if unknown or len(given) != 1:
        return _error(web, 400, "give exactly one of the query parameters email, phone, order_id")
    name = given[0]
    ns, normalize = LOOKUPS[name]
    ref = normalize(request.query[name])
    if not ref:
        return _error(web, 400, f"{name} is empty or not valid")
    table = owners[ns]
    here = await route_or_copy(web, request, table, ref)
    if not isinstance(here, Here):
        return here
    found = _read_here(table, ref, here)
    if found is None:
        return _error(web, 503, "partitions are moving; try again shortly")
    customer_id, ref_at = found
    if customer_id is None:
        if ref_at is not None:
            return _not_in_copy(web, f"that {name}", ref_at)
        return _error(web, 404, f"no customer known by that {name}")
    # A new request, not the caller's forwarded again: the customer's owner answers it.
    there = await route_or_copy(
        web, request, customers, customer_id, f"/customers/{quote(customer_id, safe='')}"
    )
    if not isinstance(there, Here):
        return there
    return _customer_here(web, customer_id, there, ref_at)


@app.page("/healthz")
async def healthz(web: View, request: Request) -> Response:
    failed = health.failures()
    if failed:
        return _json(web, {"status": "failed", "error": "; ".join(failed.values()),
                           "failed": failed}, 500)
    return _json(web, {"status": "ok"})


@app.page("/readyz")
async def readyz(web: View, request: Request) -> Response:
    if ready() and copies.warm():
        return _json(web, {"status": "ready"})
    if ready():
        return _error(web, 503, "standby copies catching up (another worker may not stop yet)")
    return _error(web, 503, "recovering tables or waiting for partition assignment")


@app.page("/metrics")
async def metrics_page(web: View, request: Request) -> Response:
    # aiohttp refuses a charset inside content_type; the exposition format is UTF-8 anyway.
    return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split("; charset")[0])


# -- the OpenAPI document's view of these routes (streams/api/spec.py) ----------------------

_UNAVAILABLE = spec.unavailable(
    "the owner cannot answer (recovering, partitions moving, gone) and this worker has no "
    "copy known to be current, or the copy does not hold the key"
)
_STALE_HEADERS = {
    STALE_HEADER: {"description": "true: the answer came from a copy that may be behind",
                   "schema": {"const": "true"}},
    AS_OF_HEADER: {"description": "with X-Keel-Stale: the copy holds every change up to this "
                   "time", "schema": {"type": "string", "format": "date-time"}},
}  # fmt: skip
_LOOKUP = {
    "type": "object",
    "properties": {
        "email": {**spec.TEXT, "description": "an e-mail, any case"},
        "phone": {
            "type": "string",
            "pattern": "[0-9]",
            "description": "a phone number; only its digits (and a leading +) count",
        },
        "order_id": {**spec.TEXT, "description": "an order id"},
    },
    "additionalProperties": False,
    "minProperties": 1,
    "maxProperties": 1,
}

OPERATIONS = (
    spec.Operation(
        "GET",
        "/customers/{customer_id}",
        "getCustomer",
        "A customer's state; with include=linked also the accounts linked to it",
        {
            200: spec.json_reply(
                "the CustomerState (with include=linked: and its combined view); while the "
                "owner cannot answer, from a copy: with stale and as_of",
                {"anyOf": [spec.ref("CustomerState"), spec.ref("CustomerFromCopy"),
                           spec.ref("CustomerWithLinked")]},  # fmt: skip
                _STALE_HEADERS,
            ),
            400: spec.error("include has a value other than linked"),
            404: spec.error("keel knows no such customer"),
            503: _UNAVAILABLE,
        },
        query=(
            spec.param("include", {"enum": ["linked"]}, "linked: add the combined view"),
        ),
    ),
    spec.Operation(
        "DELETE",
        "/customers/{customer_id}",
        "eraseCustomer",
        "Erase a customer: publish an erasure request (docs/erasure.md)",
        {
            202: spec.json_reply("Kafka has the request", spec.ref("ErasureRequest")),
            400: spec.error("the body is not JSON, or reason is missing"),
            413: spec.error("the body is larger than 16 KiB"),
            503: spec.unavailable("Kafka did not acknowledge: send it again (same request_id)"),
        },
        headers=(
            spec.param("X-Keel-Agent", {"type": "string"}, "who asks (with a shared role "
                       "token; default admin)", where="header"),  # fmt: skip
        ),
        request_body=spec.body(
            {
                "type": "object",
                "properties": {
                    "reason": {**spec.text(500), "description": "why: the audit trail"},
                    "request_id": {
                        "anyOf": [spec.TEXT, {"type": "null"}],
                        "description": "a retry sends the same; null or left out: a new one",
                    },
                },
                "required": ["reason"],
            },
            "why the customer is erased",
        ),
    ),
    spec.Operation(
        "GET",
        "/customers",
        "findCustomer",
        "The state of the customer an e-mail, a phone number or an order id resolves to",
        {
            200: spec.json_reply(
                "the customer's CustomerState; while an owner cannot answer, from a copy: with "
                "stale and as_of",
                {"anyOf": [spec.ref("CustomerState"), spec.ref("CustomerFromCopy")]},
                _STALE_HEADERS,
            ),
            400: spec.error("not exactly one of email, phone, order_id, or an empty one"),
            404: spec.error("no customer is known by it"),
            503: _UNAVAILABLE,
        },
        query=(
            {
                **spec.param("lookup", _LOOKUP, "exactly one of email, phone, order_id",
                             required=True),  # fmt: skip
                "style": "form",
                "explode": True,
            },
        ),
    ),
    spec.Operation(
        "GET",
        "/healthz",
        "healthz",
        "Whether the worker's loops are alive (for an orchestrator's liveness probe)",
        {
            200: spec.json_reply("alive", {"type": "object", "properties": {
                "status": {"const": "ok"}}, "required": ["status"]}),  # fmt: skip
            500: spec.json_reply("a loop failed", {"type": "object", "required": ["status",
                "error", "failed"], "properties": {"status": {"const": "failed"}}}),  # fmt: skip
        },
    ),
    spec.Operation(
        "GET",
        "/readyz",
        "readyz",
        "Whether the worker serves queries (tables recovered, partitions assigned) and its "
        "standby copies are known current (or a minute passed)",
        {
            200: spec.json_reply("ready", {"type": "object", "properties": {
                "status": {"const": "ready"}}, "required": ["status"]}),  # fmt: skip
            503: spec.unavailable("recovering tables or waiting for partitions"),
        },
    ),
    spec.Operation(
        "GET",
        "/metrics",
        "metrics",
        "Prometheus text exposition",
        {200: spec.media_reply("the metrics", "text/plain")},
    ),
)
