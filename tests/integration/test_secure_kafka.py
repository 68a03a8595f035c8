"""Kafka with TLS and SASL: the pipeline runs through a SASL_SSL listener, bad credentials stop.

The broker is deploy/local's own Kafka with a second listener, ``SASL_SSL``; its certificate
is signed by a CA made for this module with ``openssl`` (deploy/local/tls.py), and its SCRAM
user is created by Kafka's own ``kafka-storage format --add-scram``. The worker and the HTTP
ingest connector are given only that listener's address and the ``KAFKA_*`` variables of the
docs/configuration.md's Kafka table, as a deployment would give them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from deploy.local.stack import Kafka, free_port
from deploy.local.tls import Certificates, make_certificates
from streams.encoding.codec import get_codec
from streams.kafka.config import KafkaAuthError, KafkaSecurity, reach
from tests.builders import T0, order, shipment, unique
from tests.integration.connectors_harness import ROOT, ConnectorProcess, post
from tests.integration.harness import Worker, read_topic, wait_for
from tests.integration.secure import KAFKA_PASSWORD as PASSWORD
from tests.integration.secure import KAFKA_USER as USER
from tests.integration.secure import kafka_env
from tests.integration.test_connectors import as_json

pytestmark = pytest.mark.integration

#: a process given a wrong password must say so and exit within this (not retry for ever)
FAIL_FAST_S = 45
STATE_TOPIC = "customer-state.v1"


def test_worker_and_ingest_run_the_pipeline_through_sasl_ssl(
    secure_kafka: Kafka, certs: Certificates, tmp_path: Path
) -> None:
    env = kafka_env(secure_kafka, certs)
    worker = Worker(
        secure_kafka.sasl_bootstrap, tmp_path / "worker", free_port(), tmp_path / "worker.log",
        **env,
    )  # fmt: skip
    port = free_port()
    ingest = ConnectorProcess(
        "connectors.sources.http_ingest", port, tmp_path / "ingest.log",
        KEEL_INGEST_PORT=str(port), **env,
    )  # fmt: skip
    try:
        worker.start(timeout=180)
        ingest.start(timeout=60)
        cid, oid, sid = unique("c"), unique("o"), unique("s")
        placed = as_json(order(cid, oid, email=f"sec.{cid}@example.com"))
        assert post(f"{ingest.url}/events/orders", json.dumps(placed).encode())[0] == 202
        sent = as_json(shipment(oid, sid, "DISPATCHED", T0 + 3_600_000))
        assert post(f"{ingest.url}/events/shipments", json.dumps(sent).encode())[0] == 202

        def joined() -> dict[str, Any] | None:
            code, state = worker.get(f"/customers/{cid}")
            if code != 200 or not state["orders"] or not state["orders"][0]["shipments"]:
                return None
            return dict(state)

        state = wait_for("the joined state in the query API", joined, 120)
        assert state["orders"][0]["order_id"] == oid
        assert state["orders"][0]["shipments"][0]["shipment_id"] == sid

        # the compacted state topic, read back over the same encrypted, authenticated listener
        security = KafkaSecurity.from_env(env)
        codec = get_codec()

        def published() -> dict[str, Any] | None:
            records = read_topic(secure_kafka.sasl_bootstrap, STATE_TOPIC, security=security)
            mine = [m for m in records if m.key() == cid.encode()]
            if not mine:
                return None
            return codec.decode(mine[-1].value(), "CustomerState")

        record = wait_for("the customer's record on customer-state.v1", published, 60)
        assert record["orders"][0]["shipments"][0]["shipment_id"] == sid
        for log in (worker.log_file, ingest.log_file):
            text = log.read_text(errors="replace")
            assert "SASL_SSL, SCRAM-SHA-512 as 'keel-app'" in text, log
            assert PASSWORD not in text, f"the password is in {log}"
    finally:
        ingest.stop()
        worker.stop()


def _run_until_exit(module: list[str], env: dict[str, str], log: Path) -> tuple[int, float, str]:
    began = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.run(
            [sys.executable, "-m", *module],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=FAIL_FAST_S * 3,  # a hang fails the test (TimeoutExpired), it does not stall it
            check=False,
        )
    return proc.returncode, time.monotonic() - began, log.read_text(errors="replace")


@pytest.mark.parametrize(
    "module",
    [["streams", "worker"], ["connectors.sources.http_ingest"], ["streams", "deadletters", "list"]],
)
def test_a_wrong_password_stops_the_process_at_once_with_a_clear_message(
    secure_kafka: Kafka, certs: Certificates, tmp_path: Path, module: list[str]
) -> None:
    wrong = "not-" + PASSWORD
    env = {
        **kafka_env(secure_kafka, certs, password=wrong),
        "KEEL_DATA_DIR": str(tmp_path / "data"),
        "KEEL_API_PORT": str(free_port()),
        "KEEL_INGEST_PORT": str(free_port()),
    }
    code, seconds, output = _run_until_exit(module, env, tmp_path / "out.log")
    print(f"{module[0]}: exit {code} after {seconds:.1f}s")
    assert code == 2, output
    assert seconds < FAIL_FAST_S, output
    assert f"refused this client (SASL_SSL, SCRAM-SHA-512 as '{USER}')" in output, output
    assert "invalid credentials" in output, output
    assert wrong not in output


def test_every_mechanism_is_accepted_and_an_untrusted_certificate_refused(
    secure_kafka: Kafka, certs: Certificates, tmp_path: Path
) -> None:
    for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"):
        security = KafkaSecurity.from_env(kafka_env(secure_kafka, certs, mechanism))
        assert reach(secure_kafka.sasl_bootstrap, 30, security) is not None, mechanism

    other_ca = make_certificates(tmp_path / "other", "unused").ca
    untrusted = {**kafka_env(secure_kafka, certs), "KAFKA_SSL_CA_LOCATION": str(other_ca)}
    began = time.monotonic()
    with pytest.raises(KafkaAuthError, match="certificate"):
        reach(secure_kafka.sasl_bootstrap, 30, KafkaSecurity.from_env(untrusted))
    assert time.monotonic() - began < 15

    # the listener wants SASL over TLS: a client that skips the login gets nothing
    tls_only = KafkaSecurity.from_env(
        {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_LOCATION": str(certs.ca)}
    )
    assert reach(secure_kafka.sasl_bootstrap, 5, tls_only) is None
