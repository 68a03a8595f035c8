"""Credentials of the secured stack the tests start (conftest's ``secure_kafka``)."""

from __future__ import annotations

import secrets

from deploy.local.stack import Kafka
from deploy.local.tls import Certificates

#: the SCRAM (and PLAIN) user of the SASL_SSL broker
KAFKA_USER = "keel-app"
KAFKA_PASSWORD = secrets.token_hex(16)


def kafka_env(
    kafka: Kafka,
    certs: Certificates,
    mechanism: str = "SCRAM-SHA-512",
    password: str = KAFKA_PASSWORD,
) -> dict[str, str]:
    """The Kafka security variables (docs/configuration.md), pointing at the SASL_SSL listener."""
    return {
        "KAFKA_BOOTSTRAP": kafka.sasl_bootstrap,
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": mechanism,
        "KAFKA_SASL_USERNAME": KAFKA_USER,
        "KAFKA_SASL_PASSWORD": password,
        "KAFKA_SSL_CA_LOCATION": str(certs.ca),
    }
