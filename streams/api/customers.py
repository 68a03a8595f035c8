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
"""

from __future__ import annotations

import logging
import time
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
from streams.ops import health
from streams.worker import tables
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
            "worker %s does not answer forwarded queries (%s); answering 503 until the group "
            "moves its partitions",
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


PASSED_ON = ("Retry-After", "WWW-Authenticate")
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


def _local_customer(web: View, customer_id: str) -> Response:
    state = customers.get(customer_id)
    if state is None:
        return _error(web, 404, f"no customer {customer_id!r}")
    return _json(web, to_json("CustomerState", view(state)))


async def _state_json(request: Request, customer_id: str) -> tuple[int, dict | None]:
    """``(status, CustomerState JSON or None)`` of any customer: from this worker's table,
    else from its owner (a new request, with the caller's token)."""
    owner = owner_url(customers, customer_id)
    if owner is None:
        return 503, None
    if _is_me(owner):
        state = customers.get(customer_id)
        return (404, None) if state is None else (200, to_json("CustomerState", view(state)))
    target = f"{str(owner).rstrip('/')}/customers/{quote(customer_id, safe='')}"
    try:
        async with app.http_client.get(
            target, headers=forward_headers(request), timeout=FORWARD_TIMEOUT
        ) as resp:
            if resp.status != 200:
                return resp.status, None
            return 200, orjson.loads(await resp.read())
    except (TimeoutError, aiohttp.ClientError) as exc:
        _warn_unreachable(owner, exc)
        return 503, None


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


async def _with_linked(web: View, request: Request, customer_id: str) -> Response:
    """``GET /customers/{id}?include=linked``: the state and the combined view of it and
    every account linked to it (streams/domain/links.py); accounts that cannot be read now are
    listed in ``combined.unavailable`` with the status their owner answered."""
    state = customers.get(customer_id)
    if state is None:
        return _error(web, 404, f"no customer {customer_id!r}")
    own = to_json("CustomerState", view(state))
    accounts, unavailable = [own], []
    for other in sorted({x["customer_id"] for x in own["linked"]}):
        status, found = await _state_json(request, other)
        if found is None:
            unavailable.append({"customer_id": other, "status": status})
        else:
            accounts.append(found)
    combined = combine(accounts)
    combined["unavailable"] = unavailable
    return _json(web, {**own, "combined": combined})


@app.page("/customers/{customer_id}")
class CustomerPage(View):
    async def get(self, request: Request, customer_id: str) -> Response:
        """The customer's state; with ``?include=linked`` also the combined view of the
        accounts linked to it."""
        if not ready():
            return _error(self, 503, "worker is recovering its tables; try again shortly")
        include = request.query.get("include")
        if include not in (None, "linked"):
            return _error(self, 400, "include takes one value: linked")
        routed = await _route(self, request, customers, customer_id)
        if routed is not None:
            return routed
        if include == "linked":
            return await _with_linked(self, request, customer_id)
        return _local_customer(self, customer_id)

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
    if not ready():
        return _error(web, 503, "worker is recovering its tables; try again shortly")
    name = given[0]
    ns, normalize = LOOKUPS[name]
    ref = normalize(request.query[name])
    if not ref:
        return _error(web, 400, f"{name} is empty or not valid")
    table = owners[ns]
    routed = await _route(web, request, table, ref)
    if routed is not None:
        return routed
    customer_id = table.get(ref)
    if customer_id is None:
        return _error(web, 404, f"no customer known by that {name}")
    # A new request, not the caller's forwarded again: the customer's owner answers it.
    owner = owner_url(customers, customer_id)
    if owner is None:
        return _error(web, 503, "partition assignment in progress; try again shortly")
    if _is_me(owner):
        return _local_customer(web, customer_id)
    return await _forward(web, request, owner, f"/customers/{quote(customer_id, safe='')}")


@app.page("/healthz")
async def healthz(web: View, request: Request) -> Response:
    failed = health.failures()
    if failed:
        return _json(web, {"status": "failed", "error": "; ".join(failed.values()),
                           "failed": failed}, 500)
    return _json(web, {"status": "ok"})


@app.page("/readyz")
async def readyz(web: View, request: Request) -> Response:
    if ready():
        return _json(web, {"status": "ready"})
    return _error(web, 503, "recovering tables or waiting for partition assignment")


@app.page("/metrics")
async def metrics_page(web: View, request: Request) -> Response:
    # aiohttp refuses a charset inside content_type; the exposition format is UTF-8 anyway.
    return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split("; charset")[0])


# -- the OpenAPI document's view of these routes (streams/api/spec.py) ----------------------

_UNAVAILABLE = spec.unavailable(
    "the worker is recovering its tables, partitions are moving, or the owner does not answer"
)
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
                "the CustomerState (with include=linked: and its combined view)",
                {"anyOf": [spec.ref("CustomerState"), spec.ref("CustomerWithLinked")]},
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
            200: spec.json_reply("the customer's CustomerState", spec.ref("CustomerState")),
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
        "Whether the worker serves queries (tables recovered, partitions assigned)",
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
