"""The query API (CONTRACT.md §7): every worker answers for every customer.

A request for a key another worker owns is forwarded there by faust's router
(``table_route``), using the owners' ``canonical_url``. Lookups by e-mail, phone or order
go first to the worker owning that reference, which then answers with the customer's
state — itself, or by asking the worker that owns the customer.
"""

from __future__ import annotations

from typing import Any

import orjson
from faust.exceptions import SameNode
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.agents import customers, owners
from streams.app import app
from streams.identity import normalize_email, normalize_phone
from streams.join import EMAIL, ORDER, PHONE
from streams.jsonconv import to_json
from streams.state import view

LOOKUPS = {
    "email": (EMAIL, normalize_email),
    "phone": (PHONE, normalize_phone),
    "order_id": (ORDER, lambda s: s.strip() or None),
}


def ready() -> bool:
    """True once table recovery finished and the worker is not rebalancing."""
    recovery = app.tables.recovery
    return bool(recovery.completed.is_set() and not app.rebalancing)


def _json(web: View, body: Any, status: int = 200) -> Response:
    return web.bytes(orjson.dumps(body), content_type="application/json", status=status)


def _error(web: View, status: int, message: str) -> Response:
    return _json(web, {"error": message}, status)


def _local_customer(web: View, customer_id: str) -> Response:
    state = customers.get(customer_id)
    if state is None:
        return _error(web, 404, f"no customer {customer_id!r}")
    return _json(web, to_json("CustomerState", view(state)))


@app.page("/customers/{customer_id}")
@app.table_route(table=customers, match_info="customer_id")
async def get_customer(web: View, request: Request, customer_id: str) -> Response:
    if not ready():
        return _error(web, 503, "worker is recovering its tables; try again shortly")
    return _local_customer(web, customer_id)


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
    try:
        return await app.router.route_req(table.name, ref, web, request)
    except SameNode:
        pass
    customer_id = table.get(ref)
    if customer_id is None:
        return _error(web, 404, f"no customer known by that {name}")
    try:
        dest = app.router.key_store(customers.name, customer_id)
    except KeyError:
        return _error(web, 503, "partition assignment in progress; try again shortly")
    if str(dest).rstrip("/") == str(app.conf.canonical_url).rstrip("/"):
        return _local_customer(web, customer_id)
    async with app.http_client.get(f"{str(dest).rstrip('/')}/customers/{customer_id}") as resp:
        return web.bytes(await resp.read(), content_type="application/json", status=resp.status)


@app.page("/healthz")
async def healthz(web: View, request: Request) -> Response:
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
