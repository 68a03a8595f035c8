"""Kafka client settings: one layer, the KAFKA_* variables as librdkafka properties."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.config import ConfigError, Settings
from streams.kafka.config import (
    SECURITY_VARIABLES,
    KafkaConfigError,
    KafkaSecurity,
    client_config,
    faust_credentials,
    producer_config,
)
from tests import configuration_page

SCRAM = {
    "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "KAFKA_SASL_USERNAME": "keel",
    "KAFKA_SASL_PASSWORD": "s3cret",
}


def test_plaintext_by_default_adds_nothing() -> None:
    security = KafkaSecurity.from_env({})
    assert security.properties == {}
    assert client_config("b:9092", security) == {"bootstrap.servers": "b:9092"}
    assert faust_credentials(security) == {}


def test_each_variable_is_its_librdkafka_property_unchanged(tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "c.pem", "k.pem"))
    for f in (ca, cert, key):
        f.write_text("-")
    env = {
        **SCRAM,
        "KAFKA_SSL_CA_LOCATION": str(ca),
        "KAFKA_SSL_CERTIFICATE_LOCATION": str(cert),
        "KAFKA_SSL_KEY_LOCATION": str(key),
        "KAFKA_SSL_KEY_PASSWORD": "kp",
        "KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM": "none",
    }
    config = client_config("b:9093", KafkaSecurity.from_env(env), **{"group.id": "g"})
    for name, key_, _ in SECURITY_VARIABLES:
        assert config[key_] == env[name], name
        assert name == "KAFKA_" + key_.upper().replace(".", "_")
    assert config["bootstrap.servers"] == "b:9093" and config["group.id"] == "g"


def test_producers_and_consumers_take_the_security_of_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in SCRAM.items():
        monkeypatch.setenv(name, value)
    config = producer_config("b:9093", **{"linger.ms": 50})
    assert config["sasl.password"] == "s3cret" and config["security.protocol"] == "SASL_SSL"
    assert (config["acks"], config["enable.idempotence"], config["linger.ms"]) == ("all", True, 50)
    from connectors.sinks.delivery import consumer_config

    assert consumer_config("b:9093", "grp")["sasl.username"] == "keel"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
        ({**SCRAM, "KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM"),
        ({**SCRAM, "KAFKA_SASL_PASSWORD": ""}, "needs KAFKA_SASL_PASSWORD"),
        ({"KAFKA_SASL_USERNAME": "keel"}, "does not use SASL"),
        ({"KAFKA_SSL_CA_LOCATION": "/nonexistent/ca.pem"}, "no such file"),
        ({"KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM": "yes"}, "https or none"),
    ],
)
def test_a_bad_setting_is_an_error_naming_it(env: dict[str, str], message: str) -> None:
    with pytest.raises(KafkaConfigError, match=message):
        KafkaSecurity.from_env(env)
    with pytest.raises(ConfigError, match=message):  # so every process stops at start
        Settings.from_env(env)


def test_the_faust_app_gets_the_same_credentials() -> None:
    plain = KafkaSecurity.from_env({**SCRAM, "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"})
    credentials = faust_credentials(plain)["broker_credentials"]
    assert (credentials.username, credentials.password) == ("keel", "s3cret")
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.protocol.value == "SASL_PLAINTEXT"
    tls = faust_credentials(KafkaSecurity.from_env(SCRAM))["broker_credentials"]
    assert tls.protocol.value == "SASL_SSL" and tls.ssl_context.check_hostname


def test_describe_never_shows_the_password() -> None:
    text = KafkaSecurity.from_env(SCRAM).describe()
    assert text == "Kafka security: SASL_SSL, SCRAM-SHA-512 as 'keel'"
    assert "s3cret" not in repr(Settings.from_env(SCRAM))


def test_the_configuration_page_lists_every_variable_with_its_property() -> None:
    page = configuration_page.blocks(configuration_page.PAGE.read_text()).get("kafka")
    assert page == configuration_page.render()["kafka"], (
        "docs/configuration.md differs from SECURITY_VARIABLES: "
        "run .venv/bin/python -m tests.configuration_page"
    )
