"""deploy/: the compose file, k8s manifests, Prometheus rules and dashboard agree with the code.

Nothing here starts a container (there is no Docker on the build machines); instead every
name a manifest shares with the code is checked against the code: environment variables
against ``streams.config.VARIABLES``, ports against their defaults, probe paths against the
worker's routes, commands against importable modules, metric names against the metrics keel
exports. Kubernetes objects are validated against the Kubernetes 1.30 OpenAPI schemas shipped
in the ``kubernetes-validate`` package (strict: unknown fields are errors); the Prometheus
Operator's PodMonitor, which those schemas lack, is checked structurally. Alert rules go
through ``promtool check rules`` and their unit tests through ``promtool test rules``.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from deploy.local.envfile import read_env
from deploy.local.run import main as run_main
from streams.config import OTHER_KNOWN, VARIABLES
from streams.kafka.config import SECURITY_VARIABLES

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
K8S = DEPLOY / "k8s"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "keel.json"
K8S_VERSION = "1.30.0"

KNOWN_ENV = {name for name, _, _ in (*VARIABLES, *SECURITY_VARIABLES)} | OTHER_KNOWN
DEFAULTS = {name: default for name, default, _ in VARIABLES}
# Helpers that exist only to build a keel variable (KEEL_CANONICAL_URL from the pod's name).
K8S_HELPER_ENV = {"POD_NAME"}

WORKER_MODULE = "streams"  # the image's ENTRYPOINT: python -m streams
# connector module -> the variable holding its HTTP port
CONNECTOR_PORT_VAR = {
    "connectors.sources.http_ingest": "KEEL_INGEST_PORT",
    "connectors.sources.postgres_outbox": "KEEL_OUTBOX_PORT",
    "connectors.sinks.redis": "KEEL_REDIS_SINK_PORT",
    "connectors.sinks.postgres_inbox": "KEEL_INBOX_PORT",
    "connectors.sinks.webhook": "KEEL_WEBHOOK_PORT",
    "connectors.sinks.directory": "KEEL_DIRECTORY_SINK_PORT",
}


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool not found: apt-get install prometheus (make deps does)"
    return found


def run(*args: str, cwd: Path = PROMETHEUS) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def worker_routes() -> set[str]:
    import streams.api.customers  # noqa: F401  (registers the routes)
    from streams.app import app

    return {route.resource.canonical for route in app.web.web_app.router.routes()}


def connector_paths(module: str) -> str:
    """Source of a connector and of connectors/status.py (which serves /healthz, /metrics)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, f"{module} does not exist"
    return Path(spec.origin).read_text() + (ROOT / "connectors" / "status.py").read_text()


def module_of(command: list[str]) -> str:
    """The module of ``python -m MODULE ...``."""
    assert command[:2] == ["python", "-m"], command
    return command[2]


# ------------------------------------------------------------------------------ Prometheus


def test_promtool_accepts_the_rules_their_unit_tests_and_the_compose_config() -> None:
    run(promtool(), "check", "rules", "keel-alerts.yml")
    assert "SUCCESS" in run(promtool(), "test", "rules", "tests.yml")
    run(promtool(), "check", "config", "--syntax-only", "prometheus.yml")


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS / "keel-alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_alert_tells_the_person_paged_what_to_check_and_is_unit_tested() -> None:
    tested = (PROMETHEUS / "tests.yml").read_text()
    names = {rule["alert"] for rule in alert_rules()}
    assert {"KeelCustomerViewStale", "KeelDeadLetters", "KeelConsumerLagGrowing"} <= names
    assert {"KeelHeldEventsPilingUp", "KeelWorkerNotReady", "KeelSourceStale"} <= names
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"page", "warning", "ticket"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        description = rule["annotations"]["description"]
        assert "First checks" in description and len(description) > 300, rule["alert"]
    for name in names - {"KeelWorkerDown"}:  # `up` is Prometheus' own series
        assert f"alertname: {name}" in tested, f"{name} has no promtool unit test"


def exported_metric_names() -> set[str]:
    """Every sample name keel's worker and connectors can expose."""
    source = (ROOT / "streams" / "ops" / "metrics.py").read_text()
    source += (ROOT / "connectors" / "metrics.py").read_text()
    source += (ROOT / "streams" / "worker" / "voice.py").read_text()  # keel_voice_* at scrape time
    declared = set(re.findall(r'"(keel_[a-z_]+)"', source))
    suffixes = ("", "_total", "_bucket", "_count", "_sum")
    return {name + suffix for name in declared for suffix in suffixes}


def used_metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(keel_[a-z_]+)\b", expr))


def test_alerts_and_dashboard_use_only_metrics_keel_exports() -> None:
    known = exported_metric_names()
    for rule in alert_rules():
        unknown = used_metric_names(rule["expr"]) - known
        assert not unknown, f"{rule['alert']} uses {unknown}"
    dashboard = json.loads(DASHBOARD.read_text())
    datasource = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]["uid"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    for panel in panels:
        for target in panel["targets"]:
            unknown = used_metric_names(target["expr"]) - known
            assert not unknown, f"panel {panel['title']!r} uses {unknown}"
            assert target["datasource"]["uid"] == datasource
    shown = {m for p in panels for t in p["targets"] for m in used_metric_names(t["expr"])}
    for needed in ("keel_event_freshness_seconds_bucket", "keel_consumer_lag_records",
                   "keel_held_events", "keel_events_total", "keel_source_lag_seconds"):  # fmt: skip
        assert needed in shown, f"the dashboard lacks {needed}"


# --------------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # type: ignore[no-any-return]


def keel_services(compose: dict[str, Any]) -> dict[str, dict]:
    return {n: s for n, s in compose["services"].items() if s.get("image") == "keel:local"}


def test_compose_runs_kafka_redis_postgres_prometheus_grafana_two_workers_the_connectors(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert services["kafka"]["image"] == "apache/kafka:3.9.1"
    kafka = services["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"
    # kafka-storage format refuses anything but 16 bytes in URL-safe base64 (22 characters).
    cluster_id = kafka["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16 and len(cluster_id) == 22
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", "topics need KEEL_PARTITIONS"
    assert {"redis", "postgres", "prometheus", "grafana"} <= services.keys()
    keel = keel_services(compose)
    workers = [n for n, s in keel.items() if s.get("command") == ["worker"]]
    connectors = sorted(module_of(s["entrypoint"]) for s in keel.values() if "entrypoint" in s)
    assert len(workers) >= 2
    assert connectors == sorted(CONNECTOR_PORT_VAR)
    for service in keel.values():
        assert service["build"]["context"] == "../.."


def test_compose_env_ports_and_commands_match_the_code(compose: dict[str, Any]) -> None:
    for name, service in keel_services(compose).items():
        env = service["environment"]
        unknown = set(env) - KNOWN_ENV
        assert not unknown, f"{name} sets variables keel does not know: {unknown}"
        published = {str(p).split(":")[-1] for p in service.get("ports", [])}
        if service.get("command") == ["worker"]:
            assert importlib.util.find_spec(f"{WORKER_MODULE}.__main__") is not None
            port = env.get("KEEL_API_PORT", DEFAULTS["KEEL_API_PORT"])
            assert port == DEFAULTS["KEEL_API_PORT"]
            assert env["KEEL_API_BIND"] == "0.0.0.0"
            assert env["KEEL_CANONICAL_URL"] == f"http://{name}:{port}"
            assert f"127.0.0.1:{port}/readyz" in " ".join(service["healthcheck"]["test"])
            assert "/readyz" in worker_routes()
        else:
            module = module_of(service["entrypoint"])
            assert importlib.util.find_spec(module) is not None, module
            var = CONNECTOR_PORT_VAR[module]
            port = env.get(var, DEFAULTS[var])
            assert port == DEFAULTS[var], f"{name}: {var}={port}"
            assert env["KEEL_CONNECTOR_BIND"] == "0.0.0.0"
        assert published <= {port}, f"{name} publishes {published}, listens on {port}"


def test_prometheus_scrapes_every_keel_service_on_its_port(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    expected = set()
    for name, service in keel_services(compose).items():
        env = service["environment"]
        if service.get("profiles"):  # started only on request (the webhook): no false alarms
            continue
        if service.get("command") == ["worker"]:
            expected.add(f"{name}:{env.get('KEEL_API_PORT', DEFAULTS['KEEL_API_PORT'])}")
        else:
            var = CONNECTOR_PORT_VAR[module_of(service["entrypoint"])]
            expected.add(f"{name}:{env.get(var, DEFAULTS[var])}")
    assert targets == expected
    assert config["rule_files"] == ["/etc/prometheus/keel-alerts.yml"]
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert "keel-worker" in jobs, "KeelWorkerDown matches up{job=~'.*keel-worker.*'}"


@pytest.fixture(scope="module")
def compose_secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/compose after ``python3 -m deploy.local.run --compose-secrets``."""
    deploy = tmp_path_factory.mktemp("copy") / "deploy"
    shutil.copytree(COMPOSE.parent.parent, deploy, ignore=shutil.ignore_patterns("__pycache__"))
    directory = deploy / "compose"
    assert run_main(["--compose-secrets", "--dir", str(directory)]) == 0
    return directory


def test_compose_mounts_and_env_files_exist_once_the_secrets_are_made(
    compose: dict[str, Any], compose_secrets: Path
) -> None:
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (compose_secrets / source).exists(), volume
                if not (COMPOSE.parent / source).exists():  # made, so not in git
                    assert _ignored(f"deploy/compose/{source.removeprefix('./')}"), source
        for name in service.get("env_file", []):
            made = compose_secrets / name
            assert made.stat().st_mode & 0o777 == 0o600, name
            assert read_env(made), f"{name} is empty"
            assert _ignored(f"deploy/compose/{name}"), f"{name} must not go into git"


def test_compose_has_no_secret_inline(compose: dict[str, Any]) -> None:
    secret = re.compile(r"PASSWORD|SECRET|TOKEN|JAAS|CREDENTIAL", re.I)
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            text = str(value)
            assert "://" not in text or "@" not in text, f"{name}: {key} has credentials"
            if secret.search(key):  # only passed through from the shell, e.g. the webhook's
                assert re.fullmatch(r"\$\{\w+:?-?\}", text), f"{name}: {key} is inline"
        command = " ".join(map(str, service.get("command") or []))
        assert (
            "requirepass" not in command and "$$REDIS_PASSWORD" in command or (name != "redis")
        ), command


def test_compose_kafka_listens_beyond_its_container_only_with_tls_and_a_login(
    compose: dict[str, Any], compose_secrets: Path
) -> None:
    kafka = compose["services"]["kafka"]["environment"]
    protocols = dict(p.split(":") for p in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    for listener in kafka["KAFKA_LISTENERS"].split(","):
        name, address = listener.split("://")
        if not address.startswith("127.0.0.1:"):
            assert protocols[name] == "SASL_SSL", listener
    assert kafka["KAFKA_INTER_BROKER_LISTENER_NAME"] in {
        n for n, a in (x.split("://") for x in kafka["KAFKA_LISTENERS"].split(","))
        if a.startswith("127.0.0.1:")
    }  # fmt: skip
    for service in keel_services(compose).values():
        env = service["environment"]
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert f"./tls/ca.pem:{env['KAFKA_SSL_CA_LOCATION']}:ro" in service["volumes"]
        assert {"tokens.env", "keel.env"} <= set(service["env_file"])
    # the generated secrets agree with each other
    keel = read_env(compose_secrets / "keel.env")
    kafka_env = read_env(compose_secrets / "kafka.env")
    jaas = kafka_env["KAFKA_LISTENER_NAME_CLIENT_PLAIN_SASL_JAAS_CONFIG"]
    assert f'user_{keel["KAFKA_SASL_USERNAME"]}="{keel["KAFKA_SASL_PASSWORD"]}"' in jaas
    redis = read_env(compose_secrets / "redis.env")["REDIS_PASSWORD"]
    assert keel["REDIS_URL"] == f"redis://keel:{redis}@redis:6379/0"
    postgres = read_env(compose_secrets / "postgres.env")["POSTGRES_PASSWORD"]
    assert keel["POSTGRES_URL"] == f"postgresql://keel:{postgres}@postgres:5432/keel"
    san = subprocess.run(
        ["openssl", "x509", "-in", compose_secrets / "tls" / "server.pem", "-noout", "-ext",
         "subjectAltName"], capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "DNS:kafka" in san
    # a second run keeps them: a running stack goes on working
    before = {p.name: p.read_bytes() for p in compose_secrets.glob("*.env")}
    assert run_main(["--compose-secrets", "--dir", str(compose_secrets)]) == 0
    assert {p.name: p.read_bytes() for p in compose_secrets.glob("*.env")} == before


def _ignored(path: str) -> bool:
    return subprocess.run(["git", "-C", ROOT, "check-ignore", "-q", path]).returncode == 0


def test_dockerfile_runs_the_worker_from_a_tree_with_the_schemas() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    assert 'ENTRYPOINT ["python", "-m", "streams"]' in text and 'CMD ["worker"]' in text
    assert "COPY schemas ./schemas" in text and "RUN pip install ." in text
    assert f"EXPOSE {DEFAULTS['KEEL_API_PORT']}" in text
    for name in re.findall(r"\b(KEEL_[A-Z_]+)=", text):
        assert name in KNOWN_ENV, name


# ------------------------------------------------------------------------------ kubernetes


def k8s_objects() -> list[tuple[str, dict]]:
    return [
        (path.name, doc)
        for path in sorted(K8S.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def workloads() -> list[dict]:
    return [d for _, d in k8s_objects() if d["kind"] in {"StatefulSet", "Deployment"}]


def test_kubernetes_objects_are_valid_against_the_api_schemas() -> None:
    kinds = set()
    for _, doc in k8s_objects():
        kinds.add(doc["kind"])
        if doc["kind"] in {"Kustomization", "PodMonitor"}:
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert {"StatefulSet", "Deployment", "Service", "ConfigMap", "PodMonitor"} <= kinds


def test_the_schema_validation_catches_a_misspelt_field() -> None:
    """Guards the guard: strict validation must reject what kubectl would reject."""
    statefulset = next(w for w in workloads() if w["kind"] == "StatefulSet")
    broken = json.loads(json.dumps(statefulset))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def container_env(container: dict, config: dict[str, str]) -> dict[str, str | None]:
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        if "secretRef" in source:  # the Kafka login: its keys are docs/configuration.md's variables
            assert source["secretRef"]["name"] == "keel-kafka"
            env.update(dict.fromkeys(("KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD")))
            continue
        env.update(config)  # the one ConfigMap, keel-config
        assert source["configMapRef"]["name"] == "keel-config"
    for item in container.get("env", []):
        env[item["name"]] = item.get("value")
    return env


def test_workloads_use_known_variables_real_modules_ports_and_probe_paths() -> None:
    config = next(d for _, d in k8s_objects() if d["kind"] == "ConfigMap")["data"]
    assert not set(config) - KNOWN_ENV, set(config) - KNOWN_ENV
    routes = worker_routes()
    seen_connectors = set()
    for workload in workloads():
        pod = workload["spec"]["template"]
        assert (
            workload["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        )
        [container] = pod["spec"]["containers"]
        env = container_env(container, config)
        unknown = set(env) - KNOWN_ENV - K8S_HELPER_ENV
        assert not unknown, f"{workload['metadata']['name']} sets unknown variables {unknown}"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        if workload["kind"] == "StatefulSet":
            assert container["args"] == ["worker"] and "command" not in container
            port_var, paths = "KEEL_API_PORT", routes
        else:
            module = module_of(container["command"])
            seen_connectors.add(module)
            port_var = CONNECTOR_PORT_VAR[module]
            source = connector_paths(module)
            paths = {p for p in ("/healthz", "/readyz", "/metrics") if f'"{p}"' in source}
        port = int(env.get(port_var) or DEFAULTS[port_var])
        assert port == int(DEFAULTS[port_var]) and ports["http"] == port
        for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
            probe = container.get(kind)
            if probe:
                assert probe["httpGet"]["path"] in paths, (kind, probe)
                assert probe["httpGet"]["port"] in ports
        assert "livenessProbe" in container
    assert seen_connectors == set(CONNECTOR_PORT_VAR)


def test_workers_have_stable_urls_volumes_and_ready_gated_probes() -> None:
    statefulset = next(w for w in workloads() if w["kind"] == "StatefulSet")
    services = {d["metadata"]["name"]: d for _, d in k8s_objects() if d["kind"] == "Service"}
    headless = services[statefulset["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True  # forwards during rebalances
    [container] = statefulset["spec"]["template"]["spec"]["containers"]
    env = [item["name"] for item in container["env"]]
    values = {item["name"]: item for item in container["env"]}
    assert env.index("POD_NAME") < env.index("KEEL_CANONICAL_URL"), "$(POD_NAME) needs order"
    assert values["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    url = urlsplit(values["KEEL_CANONICAL_URL"]["value"].replace("$(POD_NAME)", "pod-0"))
    assert url.hostname == f"pod-0.{headless['metadata']['name']}"
    assert url.port == int(DEFAULTS["KEEL_API_PORT"])
    assert values["KEEL_API_BIND"]["value"] == "0.0.0.0"
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    mount = mounts.pop(claim["metadata"]["name"])
    assert mount["mountPath"] == values["KEEL_DATA_DIR"]["value"]
    # the hashed tokens file and the Kafka brokers' CA, nothing else
    assert list(mounts) == ["auth-tokens", "kafka-ca"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_every_workload_logs_in_to_kafka_with_tls_and_a_secret_it_does_not_inline() -> None:
    config = next(d for _, d in k8s_objects() if d["kind"] == "ConfigMap")["data"]
    assert config["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert "KAFKA_SASL_PASSWORD" not in config and "REDIS_URL" not in config
    for workload in workloads():
        pod = workload["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert {"secretRef": {"name": "keel-kafka"}} in container["envFrom"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert config["KAFKA_SSL_CA_LOCATION"].startswith(mounts["kafka-ca"] + "/")
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["kafka-ca"]["secret"]["secretName"] == "keel-kafka-ca"
        for item in container.get("env", []):
            if item["name"] in ("REDIS_URL", "POSTGRES_URL", "KAFKA_SASL_PASSWORD"):
                assert "secretKeyRef" in item["valueFrom"], item  # never a value inline


def test_every_workload_reads_the_hashed_tokens_from_a_secret_and_prometheus_sends_one() -> None:
    config = next(d for _, d in k8s_objects() if d["kind"] == "ConfigMap")["data"]
    tokens_file = Path(config["KEEL_AUTH_TOKENS_FILE"])
    for workload in workloads():
        pod = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["auth-tokens"]["secret"]["secretName"] == "keel-auth-tokens"
        [container] = pod["containers"]
        [mount] = [m for m in container["volumeMounts"] if m["name"] == "auth-tokens"]
        assert mount["readOnly"] and Path(mount["mountPath"]) == tokens_file.parent
    monitors = [d for _, d in k8s_objects() if d["kind"] == "PodMonitor"]
    for monitor in monitors:
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            assert endpoint["authorization"]["credentials"]["name"] == "keel-metrics-token"
    scrape = yaml.safe_load((PROMETHEUS / "k8s-scrape.yml").read_text())
    for job in scrape["scrape_configs"]:
        assert job["authorization"]["credentials_file"].endswith("keel-metrics-token/token")


def test_services_and_podmonitors_select_pods_that_exist() -> None:
    pods = [w["spec"]["template"] for w in workloads()]

    def matching(labels: dict[str, str]) -> list[dict]:
        return [p for p in pods if labels.items() <= p["metadata"]["labels"].items()]

    for _, doc in k8s_objects():
        if doc["kind"] == "Service":
            targets = matching(doc["spec"]["selector"])
            assert targets, doc["metadata"]["name"]
            for port in doc["spec"]["ports"]:
                names = {p["name"] for t in targets for p in t["spec"]["containers"][0]["ports"]}
                assert port["targetPort"] in names
        if doc["kind"] == "PodMonitor":
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            selector = doc["spec"]["selector"]
            if "matchLabels" in selector:
                targets = matching(selector["matchLabels"])
            else:
                [expr] = selector["matchExpressions"]
                targets = [
                    p for p in pods if p["metadata"]["labels"].get(expr["key"]) in expr["values"]
                ]
            assert targets, doc["metadata"]["name"]
            for endpoint in doc["spec"]["podMetricsEndpoints"]:
                assert endpoint["path"] == "/metrics"
                for target in targets:
                    names = {p["name"] for p in target["spec"]["containers"][0]["ports"]}
                    assert endpoint["port"] in names
    assert "/metrics" in worker_routes()


def test_the_k8s_scrape_config_keeps_the_worker_job_name_the_alerts_match() -> None:
    config = yaml.safe_load((PROMETHEUS / "k8s-scrape.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert "keel-worker" in jobs
    for job in config["scrape_configs"]:
        assert job["kubernetes_sd_configs"][0]["role"] == "pod"
