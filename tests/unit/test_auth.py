"""Tokens and roles (streams/auth.py): the file parser, the checks, what each surface needs."""

from __future__ import annotations

import asyncio
import doctest
import hashlib
import json
import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import streams.auth
from connectors.openapi import openapi_document
from connectors.settings import INPUT_KINDS
from connectors.status import StatusServer
from streams.auth import (
    AGENT,
    ANY,
    METRICS,
    READ,
    WRITE,
    AuthConfig,
    bearer,
    cookie_token,
    hash_token,
    ingest_role,
    middleware,
    parse_tokens_file,
    sse_path,
    status_role,
    worker_role,
)
from streams.config import ConfigError

READ_TOKEN = "read-token-0123456789abcdef"
AGENT_TOKEN = "agent-token-0123456789abcdef"
FILE_TOKEN = "file-token-for-the-shop-0123456789"


def test_the_module_examples_run() -> None:
    assert doctest.testmod(streams.auth).failed == 0


def test_the_file_holds_hashes_roles_and_names(tmp_path: Path) -> None:
    text = (
        "# who may do what\n\n"
        f"{hash_token(FILE_TOKEN)} write shop-web\n"
        f"  {hash_token(FILE_TOKEN)}   metrics   shop-web  \n"
        f"{hash_token('x' * 20).upper().replace('SHA256', 'sha256')} read,agent rep 7\n"
    )
    entries = parse_tokens_file(text)
    assert [(p.name, sorted(p.roles)) for _, p in entries] == [
        ("shop-web", ["write"]),
        ("shop-web", ["metrics"]),
        ("rep 7", ["agent", "read"]),
    ]
    assert entries[0][0] == hashlib.sha256(FILE_TOKEN.encode()).digest()
    path = tmp_path / "tokens"
    path.write_text(text)
    auth = AuthConfig.from_env({"KEEL_AUTH_TOKENS_FILE": str(path)})
    shop = auth.identify(FILE_TOKEN)
    assert shop is not None and shop.name == "shop-web" and shop.roles == {WRITE, METRICS}
    assert auth.identify("x" * 20) is not None
    assert auth.identify(hash_token(FILE_TOKEN)) is None  # the hash is not a token


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("sha256:abcd write shop", "is not `sha256:<64 hex digits> role[,role] name`"),
        (f"{hash_token('t' * 20)} write", "is not `sha256:"),  # no name
        (f"{hash_token('t' * 20)} writer shop", "unknown role(s) writer"),
        (f"{hash_token('t' * 20)} read,root shop", "unknown role(s) root"),
        ("plaintext-token-pasted-by-mistake read shop", "line 2 is not"),
    ],
)
def test_a_bad_line_is_an_error_naming_its_line_never_its_text(line: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_tokens_file(f"# first\n{line}\n")
    assert says in str(caught.value)
    assert "line 2" in str(caught.value)
    assert "plaintext-token-pasted" not in str(caught.value)


def test_env_tokens_one_role_each_and_agent_also_reads() -> None:
    auth = AuthConfig.from_env({"KEEL_READ_TOKEN": READ_TOKEN, "KEEL_AGENT_TOKEN": AGENT_TOKEN})
    reader, agent = auth.identify(READ_TOKEN), auth.identify(AGENT_TOKEN)
    assert reader is not None and reader.roles == {READ} and reader.name == "KEEL_READ_TOKEN"
    assert agent is not None and agent.roles == {AGENT, READ}
    assert auth.identify(READ_TOKEN[:-1]) is None
    assert auth.identify(READ_TOKEN + "x") is None


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"KEEL_READ_TOKEN": "short"}, "KEEL_READ_TOKEN must be at least 16"),
        ({"KEEL_WRITE_TOKEN": f" {READ_TOKEN}"}, "KEEL_WRITE_TOKEN must be"),
        ({"KEEL_AUTH": "maybe"}, "KEEL_AUTH='maybe'"),
        ({"KEEL_METRICS_PUBLIC": "yes"}, "KEEL_METRICS_PUBLIC='yes'"),
        ({"KEEL_AUTH_TOKENS_FILE": "/nonexistent/tokens"}, "No such file"),
    ],
)
def test_bad_settings_are_errors_naming_the_variable_not_the_token(
    env: dict[str, str], says: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        AuthConfig.from_env(env)
    assert says in str(caught.value)
    assert READ_TOKEN not in str(caught.value)


def test_401_without_or_with_an_unknown_token_403_with_the_wrong_role() -> None:
    auth = AuthConfig.from_env({"KEEL_READ_TOKEN": READ_TOKEN, "KEEL_AGENT_TOKEN": AGENT_TOKEN})
    assert auth.authorize(f"Bearer {READ_TOKEN}", READ) is None
    assert auth.authorize(f"bearer   {READ_TOKEN}  ", READ) is None
    assert auth.authorize(f"Bearer {AGENT_TOKEN}", READ) is None
    assert auth.authorize(f"Bearer {AGENT_TOKEN}", AGENT) is None
    assert auth.authorize(f"Bearer {READ_TOKEN}", ANY) is None
    assert auth.authorize(None, None) is None  # an open path
    for presented in (None, "", "Bearer", f"Basic {READ_TOKEN}", READ_TOKEN, "Bearer nope"):
        refusal = auth.authorize(presented, READ)
        assert refusal is not None and refusal.status == 401, presented
        assert refusal.headers()["WWW-Authenticate"].startswith("Bearer")
        assert set(refusal.body()) == {"error"}
    refusal = auth.authorize(f"Bearer {READ_TOKEN}", AGENT)
    assert refusal is not None and refusal.status == 403
    assert 'scope="agent"' in refusal.headers()["WWW-Authenticate"]
    assert READ_TOKEN not in refusal.error and READ_TOKEN not in repr(auth)


def test_off_lets_everything_pass_and_metrics_public_only_metrics() -> None:
    off = AuthConfig.from_env({"KEEL_AUTH": "off"})
    assert off.authorize(None, AGENT) is None
    public = AuthConfig.from_env({"KEEL_METRICS_PUBLIC": "1"})
    assert public.authorize(None, METRICS) is None
    refusal = public.authorize(None, READ)
    assert refusal is not None and refusal.status == 401


def test_warnings_at_start() -> None:
    assert AuthConfig.from_env({"KEEL_AUTH": "off"}).warnings("127.0.0.1") == []
    assert AuthConfig.from_env({"KEEL_AUTH": "off"}).warnings("localhost") == []
    [off] = AuthConfig.from_env({"KEEL_AUTH": "off"}).warnings("0.0.0.0")
    assert "KEEL_AUTH=off" in off and "0.0.0.0" in off
    [none] = AuthConfig.from_env({}).warnings("127.0.0.1")
    assert "no token is configured" in none
    configured = AuthConfig.from_env({"KEEL_READ_TOKEN": READ_TOKEN})
    assert configured.warnings("0.0.0.0") == []
    assert READ_TOKEN not in configured.describe()
    assert "KEEL_READ_TOKEN" in configured.describe()


def test_headers_and_cookies() -> None:
    assert bearer(f"Bearer {READ_TOKEN}") == READ_TOKEN
    assert bearer("Token abc") is None
    assert cookie_token(f"theme=dark; keel_token={READ_TOKEN}") == READ_TOKEN
    assert cookie_token("keel_token=a%2Bb%3D") == "a+b="  # the console URL-encodes it
    assert cookie_token("keel_token=") is None
    assert cookie_token('bad"cookie') is None
    assert cookie_token(None) is None


@pytest.mark.parametrize(
    ("method", "path", "role"),
    [
        ("GET", "/healthz", None),
        ("GET", "/readyz", None),
        ("GET", "/openapi.json", None),
        ("GET", "/desk", None),
        ("GET", "/desk/", None),
        ("GET", "/desk/static/desk.js", None),
        ("GET", "/desk/config.json", None),
        ("GET", "/metrics", METRICS),
        ("GET", "/customers/c-1", READ),
        ("GET", "/customers", READ),
        ("GET", "/desk/customers/c-1/events", READ),
        ("POST", "/customers/c-1/commands", AGENT),
        ("GET", "/customers/c-1/commands", READ),
        ("GET", "/router/", ANY),
        ("GET", "/metrics/", ANY),
        ("GET", "/healthz/../customers/c-1", ANY),
        ("GET", "/nothing-here", ANY),
    ],
)
def test_the_worker_policy(method: str, path: str, role: str | None) -> None:
    assert worker_role(method, path) == role


def test_the_other_surfaces_policies() -> None:
    assert ingest_role("POST", "/events/orders") == WRITE
    assert ingest_role("GET", "/metrics") == METRICS
    assert ingest_role("GET", "/healthz") is None and ingest_role("GET", "/openapi.json") is None
    assert ingest_role("GET", "/nope") == ANY
    assert status_role("/healthz") is None and status_role("/metrics") == METRICS
    assert status_role("/other") == ANY
    assert sse_path("/desk/customers/c-1/events") and not sse_path("/customers/c-1")


# -- the aiohttp middleware, in process -------------------------------------------------------


async def _call(app: web.Application, path: str, **kwargs: Any) -> tuple[int, Any, Any]:
    async with TestClient(TestServer(app)) as client:
        resp = await client.get(path, **kwargs)
        return resp.status, await resp.json(), resp.headers


def _app(auth: AuthConfig) -> web.Application:
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.get(streams.auth.TOKEN_KEY))
        return web.json_response({"token_seen": request.get(streams.auth.TOKEN_KEY)})

    app = web.Application(middlewares=[middleware(auth, worker_role, sse_path)])
    for path in ("/customers/{id}", "/desk/customers/{id}/events", "/healthz", "/metrics"):
        app.router.add_get(path, handler)
    return app


def test_the_middleware_answers_json_401_403_and_passes_the_token_on() -> None:
    auth = AuthConfig.from_env({"KEEL_READ_TOKEN": READ_TOKEN})

    async def scenario() -> None:
        status, body, headers = await _call(_app(auth), "/customers/c-1")
        assert (status, headers["WWW-Authenticate"]) == (401, 'Bearer realm="keel"')
        assert "error" in body
        status, body, _ = await _call(
            _app(auth), "/metrics", headers={"Authorization": f"Bearer {READ_TOKEN}"}
        )
        assert status == 403 and "metrics role" in body["error"]
        status, body, _ = await _call(
            _app(auth), "/customers/c-1", headers={"Authorization": f"Bearer {READ_TOKEN}"}
        )
        assert (status, body) == (200, {"token_seen": READ_TOKEN})
        assert (await _call(_app(auth), "/healthz"))[0] == 200
        # The cookie counts on the live stream only.
        cookie = {"Cookie": f"keel_token={READ_TOKEN}"}
        status, body, _ = await _call(_app(auth), "/desk/customers/c-1/events", headers=cookie)
        assert (status, body) == (200, {"token_seen": READ_TOKEN})
        assert (await _call(_app(auth), "/customers/c-1", headers=cookie))[0] == 401

    asyncio.run(scenario())


def test_no_token_in_any_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    auth = AuthConfig.from_env({"KEEL_READ_TOKEN": READ_TOKEN})

    async def scenario() -> None:
        for token in (READ_TOKEN, "unknown-token-0123456789"):
            await _call(_app(auth), "/metrics", headers={"Authorization": f"Bearer {token}"})
            await _call(_app(auth), "/customers/c", headers={"Authorization": f"Bearer {token}"})

    asyncio.run(scenario())
    assert READ_TOKEN not in caplog.text and "unknown-token-0123456789" not in caplog.text


# -- a connector's status port (http.server) --------------------------------------------------


def _get(url: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_status_port_needs_the_metrics_role_for_metrics_only() -> None:
    auth = AuthConfig.from_env({"KEEL_READ_TOKEN": READ_TOKEN, "KEEL_METRICS_TOKEN": AGENT_TOKEN})
    server = StatusServer("127.0.0.1", 0, lambda: {"leader": True}, auth).start()
    url = f"http://127.0.0.1:{server.port}"
    try:
        assert _get(f"{url}/healthz")[0] == 200
        status, body = _get(f"{url}/metrics")
        assert status == 401 and "error" in body
        assert _get(f"{url}/metrics", READ_TOKEN)[0] == 403
        status, text = _get(f"{url}/metrics", AGENT_TOKEN)
        assert status == 200 and b"keel_http_refused_total" in text
    finally:
        server.stop()


def test_the_ingest_document_declares_the_bearer_scheme() -> None:
    inputs = [(p, r, f"{p}.v1", k) for p, r, k in INPUT_KINDS]
    secured = openapi_document(inputs)
    assert secured["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    post = secured["paths"]["/events/orders"]["post"]
    assert post["security"] == [{"bearer": ["write"]}] and {"401", "403"} <= set(post["responses"])
    assert secured["paths"]["/metrics"]["get"]["security"] == [{"bearer": ["metrics"]}]
    assert "security" not in secured["paths"]["/healthz"]["get"]
    public = openapi_document(inputs, metrics_public=True)
    assert "security" not in public["paths"]["/metrics"]["get"]
    off = openapi_document(inputs, secured=False)
    assert "securitySchemes" not in off["components"]
    assert "security" not in off["paths"]["/events/orders"]["post"]


def test_make_run_makes_one_token_per_role_once_private_and_hashed(tmp_path: Path) -> None:
    from deploy.local.run import ensure_tokens

    env_file, hash_file = ensure_tokens(tmp_path)
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert hash_file.stat().st_mode & 0o777 == 0o600
    lines = [line for line in env_file.read_text().splitlines() if not line.startswith("#")]
    tokens = dict(line.split("=", 1) for line in lines)
    assert sorted(tokens) == sorted(f"KEEL_{r.upper()}_TOKEN" for r in streams.auth.ROLES)
    assert len(set(tokens.values())) == 5 and all(len(t) >= 40 for t in tokens.values())
    hashed = hash_file.read_text()
    assert not any(t in hashed for t in tokens.values())  # the processes' file: hashes only
    auth = AuthConfig.from_env({"KEEL_AUTH_TOKENS_FILE": str(hash_file)})
    for name, value in tokens.items():
        role = name.removeprefix("KEEL_").removesuffix("_TOKEN").lower()
        assert auth.authorize(f"Bearer {value}", role) is None, role
    assert auth.authorize(f"Bearer {tokens['KEEL_READ_TOKEN']}", WRITE) is not None
    # A second start keeps them (a user's sourced tokens.env stays valid).
    env_file.chmod(0o644)
    assert ensure_tokens(tmp_path) == (env_file, hash_file)
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert (
        dict(
            line.split("=", 1)
            for line in env_file.read_text().splitlines()
            if "=" in line and not line.startswith("#")
        )
        == tokens
    )


def test_only_a_tokens_file_entry_names_a_person(tmp_path: Path) -> None:
    personal = FILE_TOKEN
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{hash_token(personal)} agent rep-9\n")
    auth = AuthConfig.from_env({"KEEL_AGENT_TOKEN": AGENT_TOKEN,
                                "KEEL_AUTH_TOKENS_FILE": str(tokens)})  # fmt: skip
    assert auth.personal_name(personal) == "rep-9"
    assert auth.personal_name(AGENT_TOKEN) is None  # a shared role token names no one
    assert auth.personal_name(personal + "x") is None
    assert auth.personal_name(None) is None
