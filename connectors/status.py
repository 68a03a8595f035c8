"""The HTTP status server of a connector without a web app of its own: ``/healthz``,
``/metrics`` and ``/openapi.json`` (connectors/openapi.py's ``status_document``) on a port of
their own."""

from __future__ import annotations

import json
import logging
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connectors.contract import ConnectorError
from connectors.openapi import status_document
from streams.auth import AuthConfig, status_role

log = logging.getLogger(__name__)

__all__ = ["StatusServer"]


class StatusServer:
    """``/healthz``, ``/metrics`` and ``/openapi.json`` on a port of their own, for connectors
    without a web app.

    A thread of the connector process; ``/healthz`` is 200 while the process lives and says
    what ``status()`` reports (e.g. whether this outbox instance is the leader), to anyone;
    ``/metrics`` needs a token with the metrics role unless ``auth`` says it is public;
    ``/openapi.json`` describes the three for connector ``name``. Any other method is 405, any
    other path 404, both as keel's JSON error.
    """

    def __init__(
        self,
        bind: str,
        port: int,
        status: Callable[[], dict[str, Any]],
        auth: AuthConfig,
        tls: ssl.SSLContext | None = None,
        name: str = "connector",
    ) -> None:
        document = status_document(name, secured=auth.enabled, metrics_public=auth.metrics_public)
        handler = _status_handler(status, auth, json.dumps(document).encode())
        try:
            if tls is None:
                self._server = ThreadingHTTPServer((bind, port), handler)
            else:
                self._server = _HTTPSServer((bind, port), handler, tls)
        except OSError as exc:
            raise ConnectorError(f"cannot listen on {bind}:{port}: {exc.strerror}") from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="status-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> StatusServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _HTTPSServer(ThreadingHTTPServer):
    """HTTPS: the handshake happens in the request's thread, so a slow client blocks no one."""

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext
    ) -> None:
        super().__init__(address, handler)
        self.tls = tls

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that fails the handshake (plain HTTP, an unknown CA) is its problem, not ours
        log.debug("status https: request from %s failed", client_address, exc_info=True)


PATHS = ("/healthz", "/metrics", "/openapi.json")


def _status_handler(
    status: Callable[[], dict[str, Any]], auth: AuthConfig, document: bytes
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            refusal = auth.authorize(self.headers.get("Authorization"), status_role(path))
            if refusal is not None:
                answer = json.dumps(refusal.body()).encode()
                self._send(refusal.status, answer, "application/json", refusal.headers())
            elif path == "/metrics":
                self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                body = {"status": "ok", **status()}
                self._send(200, json.dumps(body).encode(), "application/json")
            elif path == "/openapi.json":
                self._send(200, document, "application/json")
            else:
                self._error(404, f"no such resource {path}; see /openapi.json")

        def do_HEAD(self) -> None:  # noqa: N802
            self._head_only = True
            self.do_GET()

        def _not_allowed(self) -> None:
            path = self.path.split("?", 1)[0]
            if path not in PATHS:
                self._error(404, f"no such resource {path}; see /openapi.json")
            else:
                self._error(405, f"{self.command} is not allowed on {path}", {"Allow": "GET"})

        def __getattr__(self, name: str) -> Any:
            # http.server looks a method up as do_<METHOD>: every other one (POST, QUERY …)
            if name.startswith("do_"):
                return self._not_allowed
            raise AttributeError(name)

        def _error(self, code: int, message: str, headers: dict[str, str] | None = None) -> None:
            self._send(code, json.dumps({"error": message}).encode(), "application/json", headers)

        def _send(
            self, code: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(code)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not getattr(self, "_head_only", False):
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("status http: " + format, *args)

    return Handler
