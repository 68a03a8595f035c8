"""Configuration: validated from env, documented in docs/configuration.md exactly as the code
reads it."""

from __future__ import annotations

import re
import socket
import zlib
from pathlib import Path

import pytest

from streams.config import OTHER_KNOWN, ConfigError, Settings
from tests import configuration_page


def test_defaults_match_the_contract() -> None:
    s = Settings.from_env({})
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert (s.api_bind, s.api_port) == ("127.0.0.1", 6066)
    assert s.canonical_url == "http://127.0.0.1:6066"
    assert s.topics.inputs() == ("orders.v1", "shipments.v1", "contacts.v1")
    assert s.topics.state == "customer-state.v1"


def test_unknown_keel_variable_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="KEEL_PARTITONS"):
        Settings.from_env({"KEEL_PARTITONS": "4"})


@pytest.mark.parametrize("value", ["four", "0", "-1"])
def test_bad_number_is_an_error_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="KEEL_PARTITIONS"):
        Settings.from_env({"KEEL_PARTITIONS": value})


def test_the_configuration_page_lists_every_variable_as_the_code_has_it() -> None:
    text = configuration_page.PAGE.read_text()
    page = configuration_page.blocks(text).get("settings")
    assert page == configuration_page.render()["settings"], (
        "docs/configuration.md differs from streams/config.py VARIABLES: "
        "run .venv/bin/python -m tests.configuration_page"
    )
    for name in OTHER_KNOWN:
        assert f"`{name}`" in text, name


def test_changelog_topics_are_created_compacted_with_small_segments() -> None:
    from streams.kafka.admin import TABLES, topic_specs

    specs = topic_specs(Settings.from_env({"KEEL_APP_ID": "shop"}))
    changelogs = {name: c for name, c in specs.items() if name.endswith("-changelog")}
    assert sorted(changelogs) == sorted(f"shop-{table}-changelog" for table in TABLES)
    assert len(TABLES) == 16 and "customers" in TABLES and "erased" in TABLES
    assert "unmatched" in TABLES and "contact-assigned" in TABLES
    assert "voice-facts" in TABLES
    assert "email-identities" in TABLES and "phone-identities" in TABLES
    for config in changelogs.values():
        assert config["cleanup.policy"] == "compact"
        assert int(config["segment.bytes"]) <= 64 * 1024**2
        assert all(isinstance(v, str) for v in config.values())


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, (1, 1)),
        ({"KEEL_REPLICATION": "3"}, (3, 2)),  # one broker may be down, a write is on two
        ({"KEEL_REPLICATION": "2"}, (2, 1)),
        ({"KEEL_REPLICATION": "3", "KEEL_MIN_INSYNC_REPLICAS": "3"}, (3, 3)),
    ],
)
def test_min_insync_replicas_follows_the_replication(
    env: dict[str, str], expected: tuple[int, int]
) -> None:
    settings = Settings.from_env(env)
    assert (settings.replication, settings.min_insync_replicas) == expected


def test_more_insync_replicas_than_replicas_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no write could ever be acknowledged"):
        Settings.from_env({"KEEL_REPLICATION": "2", "KEEL_MIN_INSYNC_REPLICAS": "3"})


def test_every_topic_keel_creates_has_the_min_insync_replicas() -> None:
    from streams.kafka.admin import topic_specs

    specs = topic_specs(Settings.from_env({"KEEL_REPLICATION": "3"}))
    assert {config["min.insync.replicas"] for config in specs.values()} == {"2"}


def test_tls_needs_cert_and_key_and_makes_the_canonical_url_https(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("-")
    key.write_text("-")
    s = Settings.from_env({"KEEL_TLS_CERT": str(cert), "KEEL_TLS_KEY": str(key)})
    assert s.canonical_url == "https://127.0.0.1:6066"
    with pytest.raises(ConfigError, match="KEEL_TLS_CERT and KEEL_TLS_KEY go together"):
        Settings.from_env({"KEEL_TLS_CERT": str(cert)})
    with pytest.raises(ConfigError, match="KEEL_TLS_CA=/nonexistent: no such file"):
        Settings.from_env({"KEEL_TLS_CA": "/nonexistent"})
    assert Settings.from_env({}).server_ssl_context() is None


def test_the_instance_id_is_the_host_and_port_or_the_one_given_with_the_url_hashed() -> None:
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())
    default = Settings.from_env({"KEEL_API_PORT": "6070"})
    assert default.instance_id == f"{host}-6070-{zlib.crc32(b'http://127.0.0.1:6070'):08x}"
    given = Settings.from_env({"KEEL_INSTANCE_ID": "keel-worker-0"}).instance_id
    assert given is not None and given.startswith("keel-worker-0-")
    # the same id at another URL is another member: faust's assignment carries the URL
    moved = Settings.from_env(
        {"KEEL_INSTANCE_ID": "keel-worker-0", "KEEL_CANONICAL_URL": "http://other:6066"}
    ).instance_id
    assert moved is not None and moved.startswith("keel-worker-0-") and moved != given
    assert Settings.from_env({"KEEL_INSTANCE_ID": "none"}).instance_id is None


@pytest.mark.parametrize("value", ["worker 1", "w/1", "ü", "x" * 241])
def test_an_instance_id_kafka_would_refuse_is_an_error_naming_it(value: str) -> None:
    with pytest.raises(ConfigError, match="KEEL_INSTANCE_ID"):
        Settings.from_env({"KEEL_INSTANCE_ID": value})
