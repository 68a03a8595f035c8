"""Debezium's configuration is written once: compose, Kubernetes and the outbox table agree
with ``deploy/local/connect.py`` (what the CDC integration tests run) and with the table the
departments write (``connectors/sources/debezium_outbox.py``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from connectors.settings import ConfigError, ConnectorSettings
from connectors.sources.debezium_outbox import DEPARTMENT_OF_KIND, schema_sql
from deploy.local.connect import DEPARTMENTS, Connect, cdc_from_env, outbox_connector
from deploy.local.errors import StackError

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_CONNECT = ROOT / "deploy" / "compose" / "connect"
K8S_DEBEZIUM = ROOT / "deploy" / "k8s" / "debezium"
COMPOSE_DATABASE = "postgresql://keel:${env:POSTGRES_PASSWORD}@postgres:5432/keel"
#: what the Kubernetes worker takes from Secret keel-cdc-database
K8S_DATABASE = {
    "database.hostname": "${env:KEEL_CDC_DATABASE_HOST}",
    "database.port": "${env:KEEL_CDC_DATABASE_PORT}",
    "database.user": "${env:KEEL_CDC_DATABASE_USER}",
    "database.password": "${env:KEEL_CDC_DATABASE_PASSWORD}",
    "database.dbname": "${env:KEEL_CDC_DATABASE_NAME}",
}
#: worker settings every Connect of keel's has alike (their topics, converters, flushes)
SHARED_WORKER_KEYS = (
    "group.id", "config.storage.topic", "offset.storage.topic", "status.storage.topic",
    "key.converter", "value.converter", "offset.flush.interval.ms", "producer.acks",
    "producer.enable.idempotence", "offset.storage.partitions", "status.storage.partitions",
)  # fmt: skip


def properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines()
             if line.strip() and not line.startswith("#"))  # fmt: skip
    return {key.strip(): value.strip() for key, value in pairs}


def test_the_demo_departments_are_the_connectors_departments() -> None:
    assert set(DEPARTMENT_OF_KIND.values()) == set(DEPARTMENTS)


@pytest.mark.parametrize("department", DEPARTMENTS)
def test_compose_and_kubernetes_register_the_connector_the_local_stack_runs(
    department: str,
) -> None:
    name, config = outbox_connector(department, COMPOSE_DATABASE)
    assert json.loads((COMPOSE_CONNECT / f"{name}.json").read_text()) == config
    assert config["database.hostname"] == "postgres"
    assert config["database.password"] == "${env:POSTGRES_PASSWORD}"  # never inline
    k8s = json.loads((K8S_DEBEZIUM / f"{name}.json").read_text())
    assert k8s == {**outbox_connector(department, "postgresql://x@h/db")[1], **K8S_DATABASE}


def test_the_connector_reads_the_columns_the_outbox_table_has() -> None:
    _, config = outbox_connector("webshop", "postgresql://keel@127.0.0.1:5432/keel")
    columns = set(re.findall(r"^\s+(\w+)\s+\w+", schema_sql("webshop"), re.M))
    for option in ("table.field.event.id", "table.field.event.key",
                   "table.field.event.payload", "route.by.field"):  # fmt: skip
        assert config[f"transforms.outbox.{option}"] in columns, option
    assert config["table.include.list"] == "webshop.keel_outbox"
    assert config["value.converter"].endswith("ByteArrayConverter"), "payload bytes unchanged"


def test_the_compose_postgres_makes_the_outbox_tables_of_every_department() -> None:
    sql = (COMPOSE_CONNECT / "outbox-tables.sql").read_text()
    for department in DEPARTMENTS:
        assert schema_sql(department) in sql


def test_every_connect_worker_shares_the_local_ones_topics_and_converters() -> None:
    local = properties(Connect(Path("/nowhere"), "127.0.0.1:9092")._properties(Path("/p")))
    for path in (COMPOSE_CONNECT / "connect-distributed.properties",
                 K8S_DEBEZIUM / "connect-distributed.properties"):  # fmt: skip
        theirs = properties(path.read_text())
        for key in SHARED_WORKER_KEYS:
            assert theirs[key] == local[key], (path, key)
        assert not re.search(r"password=\"(?!\$\{env:)", path.read_text()), "secrets inline"


def test_the_kubernetes_objects_of_debezium_are_valid_and_listed() -> None:
    kustomization = yaml.safe_load((K8S_DEBEZIUM / "kustomization.yaml").read_text())
    files = kustomization["configMapGenerator"][0]["files"]
    assert all((K8S_DEBEZIUM / name).is_file() for name in files)
    kinds = set()
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S_DEBEZIUM / name).read_text()):
            kinds.add(doc["kind"])
            kubernetes_validate.validate(doc, "1.30.0", strict=True)
    assert kinds == {"Deployment", "Service", "Job"}


def test_keel_cdc_is_empty_or_debezium() -> None:
    assert cdc_from_env({}) == ""
    assert cdc_from_env({"KEEL_CDC": " Debezium "}) == "debezium"
    with pytest.raises(StackError, match="KEEL_CDC"):
        cdc_from_env({"KEEL_CDC": "maxwell"})


def test_the_connectors_read_keel_cdc_validated() -> None:
    assert ConnectorSettings.from_env({}).cdc == ""
    assert ConnectorSettings.from_env({"KEEL_CDC": "debezium"}).cdc == "debezium"
    with pytest.raises(ConfigError, match="KEEL_CDC"):
        ConnectorSettings.from_env({"KEEL_CDC": "poll"})
