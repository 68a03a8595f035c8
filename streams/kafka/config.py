"""The settings every Kafka client of keel is built from: bootstrap, security, producer rules.

One layer under every client (the worker's faust app and confluent-kafka emitter/intake, the
connectors' producers and consumers, the CLI, bench/): each builds its configuration here, so
credentials and encryption are set in one place and read from the same variables everywhere.
Every producer also builds on the one producer next to this module, streams/kafka/producer.py.
``KAFKA_<NAME>`` is librdkafka's ``name.with.dots``, passed on unchanged, e.g.
``KAFKA_SASL_MECHANISM=SCRAM-SHA-512`` is ``sasl.mechanism``; the faust app gets the same
settings translated to aiokafka's (``faust_credentials``).

    >>> s = KafkaSecurity.from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    ...     "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USERNAME": "keel",
    ...     "KAFKA_SASL_PASSWORD": "pw"})
    >>> client_config("broker:9093", s)["sasl.mechanism"]
    'SCRAM-SHA-512'

A wrong password or an untrusted certificate is reported by librdkafka only to an error
callback, while the client retries for ever; ``reach`` turns it into ``KafkaAuthError`` at
start, so a process with bad credentials exits with a message instead of hanging.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata

from streams.errors import KeelError

log = logging.getLogger(__name__)

#: (environment variable, librdkafka property, meaning) — docs/configuration.md's Kafka table
SECURITY_VARIABLES: tuple[tuple[str, str, str], ...] = (
    (
        "KAFKA_SECURITY_PROTOCOL",
        "security.protocol",
        "PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL",
    ),
    (
        "KAFKA_SASL_MECHANISM",
        "sasl.mechanism",
        "SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN (with a SASL_* protocol)",
    ),
    ("KAFKA_SASL_USERNAME", "sasl.username", "SASL user"),
    ("KAFKA_SASL_PASSWORD", "sasl.password", "its password (never logged)"),
    (
        "KAFKA_SSL_CA_LOCATION",
        "ssl.ca.location",
        "PEM file of the CA(s) that signed the brokers' certificates (default: the system's)",
    ),
    (
        "KAFKA_SSL_CERTIFICATE_LOCATION",
        "ssl.certificate.location",
        "PEM client certificate, for brokers that require one (mutual TLS)",
    ),
    ("KAFKA_SSL_KEY_LOCATION", "ssl.key.location", "PEM private key of that certificate"),
    ("KAFKA_SSL_KEY_PASSWORD", "ssl.key.password", "password of that key, if it is encrypted"),
    (
        "KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM",
        "ssl.endpoint.identification.algorithm",
        "https (default: the broker's host must match its certificate) or none",
    ),
)

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
FILES = ("KAFKA_SSL_CA_LOCATION", "KAFKA_SSL_CERTIFICATE_LOCATION", "KAFKA_SSL_KEY_LOCATION")

#: librdkafka's error codes that retrying will not fix: stop and say so
FATAL_AT_START = {
    KafkaError._AUTHENTICATION,  # noqa: SLF001
    KafkaError._SSL,  # noqa: SLF001
    KafkaError.SASL_AUTHENTICATION_FAILED,
}


class KafkaConfigError(KeelError, ValueError):
    """A ``KAFKA_*`` security variable is missing, contradictory or names a missing file."""


class KafkaClientError(KeelError, RuntimeError):
    """The root of the errors of keel's Kafka clients: Kafka refused them or what they sent.

    ``KafkaAuthError`` (here), ``streams.kafka.producer.PublishError``,
    ``streams.worker.emit.EmitError``.
    """


class KafkaAuthError(KafkaClientError):
    """Kafka refused this client's credentials or certificate (retrying will not help)."""


@dataclass(frozen=True)
class KafkaSecurity:
    """The security settings of every Kafka client, as librdkafka properties.

    ``properties`` holds only what was set (empty for plaintext, the default).
    """

    properties: Mapping[str, str] = field(repr=False)  # holds the password

    @property
    def protocol(self) -> str:
        return self.properties.get("security.protocol", "PLAINTEXT")

    @property
    def uses_ssl(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KafkaSecurity:
        """Read and check the ``KAFKA_*`` security variables; raise KafkaConfigError."""
        env = os.environ if env is None else env
        values = {name: env.get(name, "") for name, _, _ in SECURITY_VARIABLES}
        protocol = values["KAFKA_SECURITY_PROTOCOL"].upper() or "PLAINTEXT"
        if protocol not in PROTOCOLS:
            raise KafkaConfigError(
                f"KAFKA_SECURITY_PROTOCOL={protocol!r} is not one of {', '.join(PROTOCOLS)}"
            )
        values["KAFKA_SECURITY_PROTOCOL"] = protocol
        mechanism = values["KAFKA_SASL_MECHANISM"].upper()
        if protocol.startswith("SASL_"):
            if mechanism not in MECHANISMS:
                raise KafkaConfigError(
                    f"KAFKA_SASL_MECHANISM={mechanism!r}: with {protocol} give one of "
                    f"{', '.join(MECHANISMS)}"
                )
            missing = [n for n in ("KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD") if not values[n]]
            if missing:
                raise KafkaConfigError(f"{protocol} needs {' and '.join(missing)}")
            values["KAFKA_SASL_MECHANISM"] = mechanism
        elif mechanism or values["KAFKA_SASL_USERNAME"]:
            raise KafkaConfigError(
                f"KAFKA_SASL_* is set but KAFKA_SECURITY_PROTOCOL={protocol} does not use SASL "
                "(SASL_SSL or SASL_PLAINTEXT)"
            )
        for name in FILES:
            if values[name] and not Path(values[name]).is_file():
                raise KafkaConfigError(f"{name}={values[name]}: no such file")
        if bool(values["KAFKA_SSL_CERTIFICATE_LOCATION"]) != bool(values["KAFKA_SSL_KEY_LOCATION"]):
            raise KafkaConfigError(
                "KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION go together"
            )
        endpoint = values["KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM"].lower()
        if endpoint not in ("", "https", "none"):
            raise KafkaConfigError(
                f"KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM={endpoint!r} is not https or none"
            )
        values["KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM"] = endpoint
        properties = {key: values[name] for name, key, _ in SECURITY_VARIABLES if values[name]}
        if protocol == "PLAINTEXT":
            properties.pop("security.protocol")
        return cls(properties)

    def describe(self) -> str:
        """For a start-up log line: protocol, mechanism and user, never the password."""
        if not self.uses_sasl:
            return f"Kafka security: {self.protocol}"
        return (
            f"Kafka security: {self.protocol}, {self.properties['sasl.mechanism']} "
            f"as {self.properties['sasl.username']!r}"
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The Python TLS context equal to the librdkafka settings (for aiokafka)."""
        p = self.properties
        context = ssl.create_default_context(cafile=p.get("ssl.ca.location") or None)
        if p.get("ssl.endpoint.identification.algorithm") == "none":
            context.check_hostname = False
        if "ssl.certificate.location" in p:
            context.load_cert_chain(
                p["ssl.certificate.location"],
                p["ssl.key.location"],
                p.get("ssl.key.password") or None,
            )
        return context


def security(env: Mapping[str, str] | None = None) -> KafkaSecurity:
    """This process' Kafka security settings (from ``os.environ`` unless ``env`` is given)."""
    return KafkaSecurity.from_env(env)


def client_config(
    bootstrap: str, security_: KafkaSecurity | None = None, **overrides: Any
) -> dict[str, Any]:
    """``bootstrap.servers`` and the security properties, plus ``overrides``, for any client."""
    sec = security() if security_ is None else security_
    return {"bootstrap.servers": bootstrap, **sec.properties, **overrides}


def producer_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    """The settings every keel producer uses (docs/contract.md §1), security included."""
    config = client_config(bootstrap)
    config.update(
        {
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
        }
    )
    config.update(overrides)
    return config


def faust_credentials(security_: KafkaSecurity | None = None) -> dict[str, Any]:
    """``faust.App`` keyword arguments giving aiokafka the same security as librdkafka."""
    import faust  # here: connectors and the CLI import this module without faust's start-up cost

    sec = security() if security_ is None else security_
    p = sec.properties
    if sec.uses_sasl:
        return {
            "broker_credentials": faust.SASLCredentials(
                username=p["sasl.username"],
                password=p["sasl.password"],
                mechanism=p["sasl.mechanism"],
                ssl_context=sec.ssl_context() if sec.uses_ssl else None,
            )
        }
    if sec.uses_ssl:
        return {"broker_credentials": faust.SSLCredentials(sec.ssl_context())}
    return {}


def reach(
    bootstrap: str, timeout: float, security_: KafkaSecurity | None = None
) -> ClusterMetadata | None:
    """Metadata of the cluster once it answers; None if it did not within ``timeout``.

    Raises KafkaAuthError as soon as the brokers refuse the credentials or the TLS handshake
    fails: librdkafka would retry those for ever.
    """
    sec = security() if security_ is None else security_
    fatal: list[KafkaError] = []

    def on_error(err: KafkaError) -> None:
        if err.code() in FATAL_AT_START:
            fatal.append(err)

    admin = AdminClient(
        client_config(bootstrap, sec, error_cb=on_error, logger=logging.getLogger("librdkafka"))
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            return admin.list_topics(timeout=1)
        except KafkaException:
            pass
        admin.poll(0)  # serve error_cb
        if fatal:
            raise KafkaAuthError(explain_refusal(bootstrap, sec, fatal[0]))
        if time.monotonic() >= deadline:
            return None


def explain_refusal(bootstrap: str, sec: KafkaSecurity, err: KafkaError) -> str:
    """What ``KafkaAuthError`` says: who was refused by which brokers, and what to check."""
    who = sec.describe().removeprefix("Kafka security: ")
    if err.code() != KafkaError._SSL:  # noqa: SLF001
        hint = "check KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD / KAFKA_SASL_MECHANISM"
    else:
        hint = "check KAFKA_SSL_CA_LOCATION and that the broker's certificate names its host"
    return f"Kafka at {bootstrap} refused this client ({who}): {err.str()}; {hint}"
