"""deploy/compose's secured Kafka, for real: the broker runs with the compose file's settings.

Docker is not run here, so the broker is deploy/local's Kafka given the properties the
apache/kafka image would make of the compose file's ``environment`` and ``kafka.env``
(``KAFKA_A_B`` -> ``a.b``), with the secrets and certificates ``--compose-secrets`` makes.
Only what cannot be the same outside a container is changed, and the test names it: the
listeners' host and ports (loopback, free ports), the data and keystore paths, and the
client's host name (``localhost``, which the certificate names besides ``kafka``). A keel
worker given the compose file's variables and keel.env works through it; a wrong password
and a client without TLS are refused.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.local.compose_secrets import ensure_compose_secrets
from deploy.local.envfile import read_env
from deploy.local.stack import HOST, Kafka, free_port
from streams.kafka.config import KafkaAuthError, KafkaSecurity, reach
from tests.integration.harness import Worker

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose" / "docker-compose.yml"
#: what the image does not turn into broker properties
NOT_PROPERTIES = {"CLUSTER_ID"}
#: the only properties changed from the compose file's, and why (see the module docstring)
LOCAL_ONLY = {
    "listeners", "advertised.listeners", "controller.quorum.voters", "log.dirs",
    "ssl.keystore.location",
}  # fmt: skip


def image_properties(env: dict[str, str]) -> dict[str, str]:
    """What apache/kafka's start script makes of ``KAFKA_*`` variables: the prefix goes,
    ``___`` is ``-``, ``__`` is ``_``, ``_`` is ``.``, and all is lower case."""
    out = {}
    for name, value in env.items():
        if not name.startswith("KAFKA_") or name in NOT_PROPERTIES:
            continue
        key = name.removeprefix("KAFKA_").replace("___", "-").replace("__", "\0")
        out[key.replace("_", ".").replace("\0", "_").lower()] = str(value)
    return out


class ComposeKafka(Kafka):
    """deploy/local's Kafka with exactly the properties it is given."""

    def __init__(self, data_dir: Path, properties: dict[str, str], ports: tuple[int, ...],
                 local_port: int, controller_port: int) -> None:  # fmt: skip
        super().__init__(data_dir, local_port, controller_port, data_dir / "kafka.log",
                         node_id=int(properties["node.id"]))  # fmt: skip
        self.properties, self.all_ports = properties, ports

    def _ports(self) -> tuple[int, ...]:
        return self.all_ports

    def _server_properties(self) -> str:
        return "".join(f"{key}={value}\n" for key, value in self.properties.items())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("compose-secrets")
    ensure_compose_secrets(directory)
    return directory


@pytest.fixture(scope="module")
def compose_kafka(
    compose: dict[str, Any], secrets_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    service = compose["services"]["kafka"]
    env = dict(service["environment"])
    for name in service["env_file"]:
        env.update(read_env(secrets_dir / name))
    props = image_properties(env)
    client, controller, local = free_port(), free_port(), free_port()
    ports = {"CLIENT": client, "CONTROLLER": controller, "LOCAL": local}
    names = re.findall(r"(\w+)://", props["listeners"])
    assert sorted(names) == sorted(ports), props["listeners"]
    data = tmp_path_factory.mktemp("compose-kafka")
    local_props = {
        "listeners": ",".join(f"{n}://{HOST}:{ports[n]}" for n in names),
        "advertised.listeners": f"CLIENT://localhost:{client},LOCAL://{HOST}:{local}",
        "controller.quorum.voters": f"{props['node.id']}@{HOST}:{controller}",
        "log.dirs": str(data / "logs"),
        "ssl.keystore.location": str(secrets_dir / "tls" / "server.p12"),
    }
    assert set(local_props) == LOCAL_ONLY and LOCAL_ONLY <= set(props)
    kafka = ComposeKafka(data, {**props, **local_props}, (client, controller, local), local,
                         controller)  # fmt: skip
    kafka.cluster_id = env["CLUSTER_ID"]
    kafka.start()
    try:
        yield kafka, f"localhost:{client}"
    finally:
        kafka.stop()


def keel_env(compose: dict[str, Any], secrets_dir: Path, bootstrap: str) -> dict[str, str]:
    """A keel worker's variables in compose (x-keel-common and keel.env), pointed here."""
    worker = compose["services"]["keel-worker-1"]
    env = {k: str(v) for k, v in worker["environment"].items() if k.startswith("KAFKA_")}
    for name in worker["env_file"]:
        if name != "tokens.env":
            env.update(read_env(secrets_dir / name))
    [mount] = [v for v in worker["volumes"] if v.startswith("./tls/ca.pem:")]
    assert env["KAFKA_SSL_CA_LOCATION"] == mount.split(":")[1]
    env["KAFKA_SSL_CA_LOCATION"] = str(secrets_dir / "tls" / "ca.pem")
    env["KAFKA_BOOTSTRAP"] = bootstrap
    return env


def test_a_worker_with_the_compose_settings_runs_through_the_compose_broker(
    compose: dict[str, Any], compose_kafka: Any, secrets_dir: Path, tmp_path: Path
) -> None:
    _, bootstrap = compose_kafka
    env = keel_env(compose, secrets_dir, bootstrap)
    assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert reach(bootstrap, 30, KafkaSecurity.from_env(env)) is not None
    worker = Worker(bootstrap, tmp_path / "w", free_port(), tmp_path / "w.log",
                    KEEL_APP_ID="keel-compose", KEEL_PARTITIONS="2", **env)  # fmt: skip
    try:
        worker.start(timeout=180)  # ready: its topics made, its group joined, tables restored
        assert worker.get("/readyz")[0] == 200
        topics = reach(bootstrap, 30, KafkaSecurity.from_env(env))
        assert topics is not None and "keel-compose-customer-events" in topics.topics
    finally:
        worker.stop()


def test_the_compose_broker_refuses_a_wrong_password_and_plaintext(
    compose: dict[str, Any], compose_kafka: Any, secrets_dir: Path
) -> None:
    _, bootstrap = compose_kafka
    env = keel_env(compose, secrets_dir, bootstrap)
    with pytest.raises(KafkaAuthError):
        reach(bootstrap, 30, KafkaSecurity.from_env({**env, "KAFKA_SASL_PASSWORD": "wrong"}))
    # without TLS and a login the client listener gives a client nothing, not even metadata
    assert reach(bootstrap, 5, KafkaSecurity.from_env({})) is None
