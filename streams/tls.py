"""TLS for keel's HTTP surfaces: the worker's API, the HTTP ingest, every connector's status port.

``KEEL_TLS_CERT`` (PEM certificate chain) and ``KEEL_TLS_KEY`` (its PEM private key) switch a
process' HTTP server to HTTPS, TLS 1.2 at least; ``KEEL_TLS_CA`` is what a worker trusts when
it forwards a request to the worker owning a customer (default: the system's CAs), so
workers with certificates of a private CA still reach each other::

    >>> server_context(None, None) is None
    True
"""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp


def server_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """The server side of HTTPS from a certificate chain and key, or None for plain HTTP."""
    if not cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def client_context(ca: str | None) -> ssl.SSLContext:
    """What a worker checks another worker's certificate against (``ca`` or the system's)."""
    return ssl.create_default_context(cafile=ca or None)


def http_client_class(ca: str | None) -> type[aiohttp.ClientSession] | None:
    """faust's ``HttpClient`` (worker-to-worker forwards) trusting ``ca``; None: faust's own."""
    if not ca:
        return None
    context = client_context(ca)

    class HttpClient(aiohttp.ClientSession):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("connector", aiohttp.TCPConnector(ssl=context))
            super().__init__(*args, **kwargs)

    return HttpClient
