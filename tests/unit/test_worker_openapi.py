"""The worker's /openapi.json lists exactly the routes the worker registers, as auth guards them."""

from __future__ import annotations

import re

import pytest

from streams import auth
from streams.api import openapi, spec
from streams.app import app


def registered() -> set[tuple[str, str]]:
    """(method, path) of every route ``app.page`` registered, as aiohttp will route them."""
    routes = set()
    for path, view in app.web.views.items():
        for method in view.get_methods() - {"HEAD"}:
            routes.add((method, path))
    return routes


def documented(doc: dict) -> set[tuple[str, str]]:
    return {(m.upper(), p) for p, methods in doc["paths"].items() for m in methods}


def test_every_registered_route_is_documented_and_every_documented_one_registered() -> None:
    doc = openapi.document(auth.AuthConfig())
    routes = registered()
    assert len(routes) >= 25, routes  # every API module is imported
    assert routes - documented(doc) == set(), "routes without an operation (OPERATIONS)"
    assert documented(doc) - routes == set(), "operations without a route"


def test_a_route_added_without_an_operation_makes_the_comparison_fail() -> None:
    @app.page("/undocumented-probe")
    async def probe(web: object, request: object) -> None:  # pragma: no cover - never served
        return None

    try:
        missing = registered() - documented(openapi.document(auth.AuthConfig()))
        assert missing == {("GET", "/undocumented-probe")}
    finally:
        del app.web.views["/undocumented-probe"]


@pytest.mark.parametrize(
    ("method", "path", "role"),
    [
        ("get", "/customers/{customer_id}", "read"),
        ("delete", "/customers/{customer_id}", "admin"),
        ("post", "/customers/{customer_id}/commands", "agent"),
        ("get", "/deadletters", "admin"),
        ("get", "/metrics", "metrics"),
    ],
)
def test_each_operation_names_the_role_the_middleware_demands(
    method: str, path: str, role: str
) -> None:
    doc = openapi.document(auth.AuthConfig())
    operation = doc["paths"][path][method]
    assert operation["security"][0] == {"bearer": [role]}
    assert {"401", "403"} <= operation["responses"].keys()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_open_routes_and_a_server_without_auth_need_no_token() -> None:
    doc = openapi.document(auth.AuthConfig())
    for path in ("/healthz", "/readyz", "/openapi.json", "/desk/"):
        assert "security" not in doc["paths"][path]["get"]
        assert "401" not in doc["paths"][path]["get"]["responses"]
    off = openapi.document(auth.AuthConfig(enabled=False))
    assert "securitySchemes" not in off["components"]
    assert not any("security" in op for ops in off["paths"].values() for op in ops.values())


def test_every_reference_resolves_and_every_path_parameter_is_declared() -> None:
    doc = openapi.document(auth.AuthConfig())
    text = str(doc)
    for name in set(re.findall(r"#/components/schemas/(\w+)", text)):
        assert name in doc["components"]["schemas"], name
    for path, methods in doc["paths"].items():
        for operation in methods.values():
            declared = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert declared == set(re.findall(r"\{(\w+)\}", path)), path


def test_text_fields_say_blank_the_way_python_strips() -> None:
    blank = re.compile(spec.TEXT["pattern"])
    assert not blank.search(" \t\x1c\x85\u3000")
    assert blank.search(" x ") and blank.search("\ufeff")
