"""Who may do what over HTTP: bearer tokens with roles, checked in constant time.

Every HTTP surface of keel (the worker's API and desk console, the HTTP ingest, the
connectors' status ports) asks this module whether a request may pass: the aiohttp servers
through :func:`middleware`, the connectors' ``http.server`` status ports through
:meth:`AuthConfig.authorize`. It does not import the faust app, so connectors can use it.

Roles (docs/security.md)::

    read      the query API (GET /customers...), the desk console's data and live stream
    write     the HTTP ingest (POST /events/...)
    agent     desk commands (POST /customers/{id}/commands); an agent also reads
    admin     operator actions over HTTP: erasing a customer (DELETE /customers/{id})
    metrics   /metrics, unless KEEL_METRICS_PUBLIC=1

Tokens come from the environment, the way a Kubernetes Secret or ``.run/tokens.env`` hands
them to a process (``KEEL_READ_TOKEN`` … ``KEEL_METRICS_TOKEN``, one role each), and from
``KEEL_AUTH_TOKENS_FILE``, whose lines hold only the SHA-256 of a token::

    # sha256:<hex of sha256(token)>  role[,role...]  name
    sha256:3f0c…e1  read        dashboard
    sha256:9a71…04  agent       rep-7

A presented token is hashed and compared with every known hash by ``hmac.compare_digest``
(no early exit), so neither its bytes nor which entry matched show in the timing. A token
never appears in a log line, an error message or a ``repr``; only an entry's name does.

    >>> auth = AuthConfig.from_env({"KEEL_READ_TOKEN": "r" * 32})
    >>> auth.authorize("Bearer " + "r" * 32, READ) is None   # None: let it pass
    True
    >>> auth.authorize("Bearer " + "r" * 32, WRITE).status
    403
    >>> auth.authorize(None, READ).status
    401
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from prometheus_client import Counter

from streams.config import ConfigError

__all__ = [
    "ADMIN", "AGENT", "ANY", "AuthConfig", "COOKIE", "METRICS", "Principal", "READ", "ROLES",
    "Refusal", "TOKEN_KEY", "WRITE", "bearer", "cookie_token", "hash_token", "ingest_role",
    "middleware", "status_role", "worker_role",
]  # fmt: skip

log = logging.getLogger(__name__)

READ, WRITE, AGENT, ADMIN, METRICS = "read", "write", "agent", "admin", "metrics"
ROLES = (READ, WRITE, AGENT, ADMIN, METRICS)
ANY = "any"
"""Not a role: 'any valid token', for paths no rule names (their 404 is not for strangers)."""

IMPLIED = {AGENT: frozenset({READ})}
"""An agent acts on the customer on screen, so an agent token also reads."""

ENV_TOKENS = {role: f"KEEL_{role.upper()}_TOKEN" for role in ROLES}
"""The environment variable of each role's plaintext token (what tokens.env sets)."""

COOKIE = "keel_token"
"""The desk console's copy of its token for the live stream (EventSource sends no headers)."""

MIN_TOKEN_CHARS = 16
_LINE = re.compile(r"sha256:(?P<hex>[0-9a-fA-F]{64})\s+(?P<roles>\S+)\s+(?P<name>\S.*)")

REFUSED = Counter(
    "keel_http_refused_total",
    "HTTP requests refused for want of a token (401) or of the role (403)",
    ["status"],
)


def hash_token(token: str) -> str:
    """The file form of ``token``: ``sha256:<hex>``.

    >>> hash_token("correct horse battery staple")[:15]
    'sha256:c4bbcb1f'
    """
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who a token belongs to: the entry's name (safe to log) and its roles."""

    name: str
    roles: frozenset[str]

    def may(self, role: str) -> bool:
        return role == ANY or role in self.roles


@dataclass(frozen=True)
class Refusal:
    """Why a request may not pass: 401 (no or unknown token) or 403 (not this role)."""

    status: int
    error: str
    role: str

    def headers(self) -> dict[str, str]:
        if self.status == 401:
            return {"WWW-Authenticate": 'Bearer realm="keel"'}
        return {"WWW-Authenticate": f'Bearer realm="keel", error="insufficient_scope", '
                f'scope="{self.role}"'}  # fmt: skip

    def body(self) -> dict[str, str]:
        """The JSON error every keel surface answers with."""
        return {"error": self.error}


def _roles(text: str, where: str) -> frozenset[str]:
    roles = frozenset(r.strip().lower() for r in text.split(",") if r.strip())
    unknown = sorted(roles - set(ROLES))
    if unknown or not roles:
        raise ConfigError(
            f"{where}: unknown role(s) {', '.join(unknown) or '(none)'}; "
            f"roles are {', '.join(ROLES)}"
        )
    return roles | frozenset().union(*(IMPLIED.get(r, frozenset()) for r in roles))


def parse_tokens_file(
    text: str, source: str = "KEEL_AUTH_TOKENS_FILE"
) -> list[tuple[bytes, Principal]]:
    """(SHA-256 digest, principal) per line of a tokens file; ConfigError naming the line.

    Blank lines and ``#`` comments are skipped. The same hash on several lines adds roles.

    >>> [(p.name, sorted(p.roles)) for _, p in parse_tokens_file(
    ...     "# comment\\n" + "sha256:" + "ab" * 32 + " write,metrics shop-web\\n")]
    [('shop-web', ['metrics', 'write'])]
    """
    entries: list[tuple[bytes, Principal]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source} line {number}"
        match = _LINE.fullmatch(line)
        if match is None:
            # Never echo the line: someone may have pasted a plaintext token into it.
            raise ConfigError(
                f"{where} is not `sha256:<64 hex digits> role[,role] name` "
                "(the file holds hashes of tokens, never the tokens)"
            )
        digest = bytes.fromhex(match["hex"])
        entries.append((digest, Principal(match["name"].strip(), _roles(match["roles"], where))))
    return entries


@dataclass(frozen=True)
class AuthConfig:
    """The tokens a process accepts and whether it checks them at all (frozen, from env)."""

    enabled: bool = True
    metrics_public: bool = False
    entries: tuple[tuple[bytes, Principal], ...] = field(default=(), repr=False)
    sources: tuple[str, ...] = ()  # where the tokens came from, for the start-up log line

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AuthConfig:
        """Read ``KEEL_AUTH``, ``KEEL_METRICS_PUBLIC``, the role tokens and the tokens file."""
        env = os.environ if env is None else env
        switch = (env.get("KEEL_AUTH", "") or "on").strip().lower()
        if switch not in {"on", "off"}:
            raise ConfigError(f"KEEL_AUTH={switch!r} is not one of on/off")
        public = (env.get("KEEL_METRICS_PUBLIC", "") or "0").strip().lower()
        if public not in {"0", "1", "true", "false"}:
            raise ConfigError(f"KEEL_METRICS_PUBLIC={public!r} is not 0 or 1")
        entries: list[tuple[bytes, Principal]] = []
        sources: list[str] = []
        for role, variable in ENV_TOKENS.items():
            token = env.get(variable, "")
            if not token:
                continue
            if len(token) < MIN_TOKEN_CHARS or token != token.strip():
                raise ConfigError(
                    f"{variable} must be at least {MIN_TOKEN_CHARS} characters without "
                    "surrounding blanks (e.g. `python -c 'import secrets; "
                    "print(secrets.token_urlsafe(32))'`)"
                )
            roles = frozenset({role}) | IMPLIED.get(role, frozenset())
            entries.append((hashlib.sha256(token.encode()).digest(), Principal(variable, roles)))
            sources.append(variable)
        path = env.get("KEEL_AUTH_TOKENS_FILE", "")
        if path:
            try:
                text = Path(path).read_text()
            except OSError as exc:
                raise ConfigError(f"KEEL_AUTH_TOKENS_FILE={path}: {exc.strerror}") from None
            from_file = parse_tokens_file(text, f"KEEL_AUTH_TOKENS_FILE ({path})")
            entries += from_file
            sources.append(f"{path} ({len(from_file)} token(s))")
        return cls(switch == "on", public in {"1", "true"}, tuple(entries), tuple(sources))

    def identify(self, token: str) -> Principal | None:
        """The principal holding ``token`` (roles of every matching entry merged), or None."""
        digest = hashlib.sha256(token.encode()).digest()
        name: str | None = None
        roles: frozenset[str] = frozenset()
        for known, principal in self.entries:  # every entry, match or not: constant time
            if hmac.compare_digest(digest, known):
                name = name or principal.name
                roles |= principal.roles
        return None if name is None else Principal(name, roles)

    def personal_name(self, token: str | None) -> str | None:
        """The holder's name if ``token`` is a personal one (a tokens-file entry), else None.

        The role tokens of the environment (``KEEL_AGENT_TOKEN`` …) are shared by whoever has
        them: they say which role, not which person.
        """
        if token is None:
            return None
        principal = self.identify(token)
        if principal is None or principal.name in ENV_TOKENS.values():
            return None
        return principal.name

    def authorize(self, presented: str | None, role: str | None) -> Refusal | None:
        """None if a request presenting ``presented`` may use something needing ``role``.

        ``presented`` is the Authorization header's value, ``Bearer <token>``; ``role``
        None means open to everyone.
        """
        if role is None or not self.enabled or (role == METRICS and self.metrics_public):
            return None
        token = bearer(presented)
        if token is None:
            refusal = Refusal(401, "authentication required: send Authorization: Bearer "
                              "<token> (docs/security.md)", role)  # fmt: skip
        else:
            principal = self.identify(token)
            if principal is None:
                refusal = Refusal(401, "unknown or revoked token", role)
            elif principal.may(role):
                return None
            else:
                needed = "a valid token" if role == ANY else f"the {role} role"
                refusal = Refusal(403, f"this token lacks {needed}", role)
        REFUSED.labels(str(refusal.status)).inc()
        return refusal

    def warnings(self, bind: str) -> list[str]:
        """What a process should warn about at start (never naming a token)."""
        if not self.enabled:
            if _loopback(bind):
                return []
            return [f"KEEL_AUTH=off while listening on {bind}: anyone who reaches this port "
                    "reads and changes customer data"]  # fmt: skip
        if not self.entries:
            return ["authentication is on but no token is configured (KEEL_*_TOKEN or "
                    "KEEL_AUTH_TOKENS_FILE): every request but /healthz and /readyz gets "
                    "401"]  # fmt: skip
        return []

    def describe(self) -> str:
        """One line for the start-up log: on/off and where tokens came from."""
        if not self.enabled:
            return "authentication off (KEEL_AUTH=off)"
        where = ", ".join(self.sources) or "none configured"
        public = "; /metrics public" if self.metrics_public else ""
        return f"authentication on; tokens from {where}{public}"


def _loopback(bind: str) -> bool:
    host = bind.strip().strip("[]").lower()
    return host in {"localhost", "::1"} or host.startswith("127.")


def bearer(authorization: str | None) -> str | None:
    """The token of an Authorization header ``Bearer <token>`` (scheme case-insensitive).

    >>> bearer("bearer abc"), bearer("Basic abc"), bearer(None)
    ('abc', None, None)
    """
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def cookie_token(cookie_header: str | None) -> str | None:
    """The desk console's :data:`COOKIE` from a Cookie header (URL-encoded by it), or None."""
    if not cookie_header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(cookie_header)
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    return unquote(morsel.value) if morsel is not None and morsel.value else None


# -- which role each path needs, per surface --------------------------------------------------

OPEN_WORKER_PATHS = frozenset(
    {"/healthz", "/readyz", "/openapi.json", "/desk", "/desk/", "/desk/config.json",
     "/desk/voice", "/desk/deadletters"}
)
"""Say nothing about customers: what orchestrators probe, and the console's page itself
(which then asks for a token)."""


def worker_role(method: str, path: str) -> str | None:
    """The role a request to the worker's web server needs (None: open).

    >>> worker_role("GET", "/customers/c-1"), worker_role("POST", "/customers/c-1/commands")
    ('read', 'agent')
    >>> worker_role("DELETE", "/customers/c-1")
    'admin'
    >>> worker_role("GET", "/unmatched"), worker_role("POST", "/unmatched/k-1/assign")
    ('read', 'agent')
    >>> worker_role("GET", "/readyz") is None, worker_role("GET", "/router/")
    (True, 'any')
    """
    if path in OPEN_WORKER_PATHS or path.startswith("/desk/static/"):
        return None
    if path == "/metrics":
        return METRICS
    if path == "/customers" or path.startswith("/customers/"):
        # Only the commands route takes POST; on any other it is a 405 for an agent. DELETE
        # erases a customer (streams/api/erasure.py).
        if method == "DELETE":
            return ADMIN
        return AGENT if method == "POST" else READ
    if path.startswith("/desk/customers/") or path == "/directory":
        return READ
    if path == "/voice/announcements":
        return AGENT
    if path == "/deadletters" or path.startswith("/deadletters/"):  # streams/api/deadletters.py
        return ADMIN
    if path == "/unmatched" or path.startswith("/unmatched/"):  # streams/api/unmatched.py
        return AGENT if method == "POST" else READ
    if path == "/voice" or path.startswith("/voice/") or path.startswith("/desk/voice/"):
        return READ
    return ANY


def sse_path(path: str) -> bool:
    """The desk's live stream: the one route that also takes the token as :data:`COOKIE`."""
    return path.startswith("/desk/customers/") and path.endswith("/events")


def ingest_role(method: str, path: str) -> str | None:
    """The role a request to the HTTP ingest needs.

    >>> ingest_role("POST", "/events/orders"), ingest_role("GET", "/openapi.json")
    ('write', None)
    """
    if path in {"/healthz", "/openapi.json"}:
        return None
    if path == "/metrics":
        return METRICS
    if path.startswith("/events/"):
        return WRITE
    return ANY


def status_role(path: str) -> str | None:
    """The role a request to a connector's status port (``/healthz``, ``/metrics``,
    ``/openapi.json``) needs."""
    if path in {"/healthz", "/openapi.json"}:
        return None
    return METRICS if path == "/metrics" else ANY


# -- aiohttp ---------------------------------------------------------------------------------

TOKEN_KEY = web.RequestKey("keel.token", str)
"""Where :func:`middleware` leaves an accepted token on the request, for forwarding it."""

Policy = Callable[[str, str], "str | None"]


def middleware(
    config: AuthConfig, policy: Policy, cookie: Callable[[str], bool] = lambda _: False
) -> Any:
    """An aiohttp middleware answering 401/403 as keel's JSON error before any handler runs.

    ``policy(method, path)`` names the role a request needs; ``cookie(path)`` says whether
    that path also takes the token from the desk's :data:`COOKIE` (its live stream only).
    """

    @web.middleware
    async def check_token(request: web.Request, handler: Any) -> web.StreamResponse:
        presented = request.headers.get("Authorization")
        if presented is None and cookie(request.path):
            token = cookie_token(request.headers.get("Cookie"))
            presented = f"Bearer {token}" if token else None
        refusal = config.authorize(presented, policy(request.method, request.path))
        if refusal is not None:
            return web.json_response(
                refusal.body(), status=refusal.status, headers=refusal.headers()
            )
        token = bearer(presented)
        if token is not None:
            request[TOKEN_KEY] = token
        response: web.StreamResponse = await handler(request)
        return response

    return check_token
