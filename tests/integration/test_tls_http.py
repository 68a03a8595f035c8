"""HTTPS on every HTTP surface: two workers (forwarding to each other), the ingest, a status port.

The certificate is conftest's (an ``openssl``-made CA and a certificate for 127.0.0.1); every
process gets ``KEEL_TLS_CERT``/``KEEL_TLS_KEY``, the workers ``KEEL_TLS_CA`` for their
forwards. Clients check the certificate against that CA; a plain-HTTP request to a TLS port
gets no answer, and a client that does not trust the CA gets no connection.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from deploy.local.stack import Kafka, free_port
from deploy.local.tls import Certificates
from tests.builders import T0, order, shipment, unique
from tests.integration.connectors_harness import ConnectorProcess, post
from tests.integration.harness import (
    Cluster,
    Worker,
    bearer,
    customers_on_every_partition,
    http_get,
    split_partitions,
    wait_for,
)
from tests.integration.test_connectors import as_json

pytestmark = pytest.mark.integration


def tls_env(certs: Certificates) -> dict[str, str]:
    return {
        "KEEL_TLS_CERT": str(certs.cert),
        "KEEL_TLS_KEY": str(certs.key),
        "KEEL_TLS_CA": str(certs.ca),
    }


def answers_plain_http(port: int) -> bool:
    """Whether ``http://`` (no TLS) to the port gets an HTTP answer at all."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
            return True
    except urllib.error.HTTPError:
        return True  # an answer, if an unhappy one
    except (OSError, http.client.HTTPException):
        return False


@pytest.fixture
def trusting(certs: Certificates) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certs.ca))


def test_workers_serve_https_and_forward_to_each_other_over_it(
    cluster: Cluster,
    kafka: Kafka,
    certs: Certificates,
    trusting: ssl.SSLContext,
    tmp_path: Path,
) -> None:
    first, second = cluster(2, "tls", env=tls_env(certs), tls=trusting, timeout=180)
    app_id = first.env["KEEL_APP_ID"]
    split_partitions([first, second], 120)

    port = free_port()
    ingest = ConnectorProcess(
        "connectors.sources.http_ingest", port, tmp_path / "ingest.log", tls=trusting,
        KAFKA_BOOTSTRAP=kafka.bootstrap, KEEL_INGEST_PORT=str(port),
        KEEL_TOPIC_ORDERS=f"{app_id}.orders", KEEL_TOPIC_SHIPMENTS=f"{app_id}.shipments",
        **tls_env(certs),
    )  # fmt: skip
    try:
        ingest.start(timeout=60)
        customers = [c for ids in customers_on_every_partition(1).values() for c in ids]
        events = {cid: (unique("o"), unique("s")) for cid in customers}
        for cid, (oid, sid) in events.items():
            placed = as_json(order(cid, oid))
            sent = as_json(shipment(oid, sid, "DISPATCHED", T0 + 3_600_000))
            for path, event in (("orders", placed), ("shipments", sent)):
                status, _ = post(f"{ingest.url}/events/{path}", json.dumps(event).encode(),
                                 tls=trusting)  # fmt: skip
                assert status == 202, path

        def all_joined(worker: Worker) -> dict[str, Any] | None:
            states = {}
            for cid in events:
                status, body = worker.get(f"/customers/{cid}")
                if status != 200 or not body["orders"] or not body["orders"][0]["shipments"]:
                    return None
                states[cid] = body["orders"][0]["shipments"][0]["shipment_id"]
            return states

        # every customer from either worker: half of them are the other's, forwarded over HTTPS
        expected = {cid: sid for cid, (_, sid) in events.items()}
        assert wait_for("every customer, asked at the first", lambda: all_joined(first)) == expected
        assert wait_for("every customer, asked at the second", lambda: all_joined(second)) == (
            expected
        )
        assert ingest.health()["status"] == "ok"
        assert "keel_" in ingest.metrics()
    finally:
        ingest.stop()

    # plain HTTP to the TLS port, and HTTPS from a client that does not trust the CA: nothing
    assert not answers_plain_http(first.port)
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"{first.url}/healthz", timeout=5)
    # auth still applies over TLS
    status, body = http_get(f"{first.url}/customers/{customers[0]}", tls=trusting)
    assert status == 401 and "error" in body


def test_a_connector_status_port_serves_https(
    kafka: Kafka, certs: Certificates, trusting: ssl.SSLContext, tmp_path: Path
) -> None:
    """The Redis sink's status port (http.server): HTTPS, handshake per request thread."""
    port = free_port()
    sink = ConnectorProcess(
        "connectors.sinks.redis", port, tmp_path / "sink.log", tls=trusting,
        KAFKA_BOOTSTRAP=kafka.bootstrap, KEEL_REDIS_SINK_PORT=str(port),
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", KEEL_REDIS_SINK_GROUP=unique("g"),
        **tls_env(certs),
    )  # fmt: skip
    try:
        sink.start(timeout=60)
        assert sink.health()["status"] == "ok"
        assert "keel_" in sink.metrics()
        request = urllib.request.Request(f"{sink.url}/metrics", headers=bearer(None))
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5, context=trusting)
        assert refused.value.code == 401
        # a plain-HTTP client gets no answer, and the port keeps serving HTTPS afterwards
        assert not answers_plain_http(port)
        assert sink.health()["status"] == "ok"
    finally:
        sink.stop()
