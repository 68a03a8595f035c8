"""Static group membership (KEEL_INSTANCE_ID, streams/config.py): a worker that is SIGKILLed
and comes back with its data dir inside the session timeout (10 s here, :data:`LONG_SESSION`)
is the same member of its groups
again, so nothing moves: the other worker keeps its partitions and is never revoked, and the
restarted one gets its own back and applies what was sent meanwhile.

With dynamic membership (``KEEL_INSTANCE_ID=none``) the same restart is a new member and the
group rebalances, revoking the other worker's partitions too: the second test shows that this
test can tell the two apart.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from deploy.local.stack import Kafka
from streams.config import Settings
from tests.builders import order, unique
from tests.integration.harness import (
    EVERY_TOPIC,
    PARTITIONS,
    ROOT,
    Cluster,
    Departments,
    Worker,
    assigned_partitions,
    own_topics,
    split_partitions,
    wait_for,
)

pytestmark = pytest.mark.integration

REVOKED = "Revoking previously assigned partitions"
#: a restart takes 3–4 s here, longer than the default 3 s session (docs/fault-tolerance.md:
#: the trade-off); these tests are about what a restart inside the session does
LONG_SESSION = {"KEEL_SESSION_TIMEOUT_MS": "10000"}


def revocations(worker: Worker) -> int:
    """How often the worker's join consumer gave its partitions up (aiokafka logs each)."""
    return worker.log_file.read_text(errors="replace").count(REVOKED)


def group_instance_ids(kafka: Kafka, group: str) -> set[str | None]:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    described = admin.describe_consumer_groups([group])[group].result(timeout=15)
    return {m.group_instance_id for m in described.members}


def restart_after_sigkill(
    cluster: Cluster, departments: Departments, env: dict[str, str]
) -> tuple[Worker, Worker, int, int]:
    """Two workers; SIGKILL the second, start it again on its port and data dir at once.
    Returns both, and the first's revocations before and after (once it applied an order
    sent while the second was down and one sent after it came back)."""
    first, second = cluster(2, "keel-member", env=env)
    split_partitions([first, second])
    before = revocations(first)
    second.kill()
    during, after = unique("c"), unique("c")
    departments.send([order(during, unique("o"))])
    second.start()
    departments.send([order(after, unique("o"))])
    for cid in (during, after):
        wait_for(f"{cid} applied", lambda c=cid: first.get(f"/customers/{c}")[0] == 200, 60)  # type: ignore[misc]
    time.sleep(2)  # a rebalance the rejoin caused would have begun by now
    return first, second, before, revocations(first)


def test_a_worker_back_within_the_session_timeout_moves_no_partition(
    cluster: Cluster, departments: Departments, kafka: Kafka
) -> None:
    first, second, before, after = restart_after_sigkill(cluster, departments, LONG_SESSION)
    app_id = first.env["KEEL_APP_ID"]
    assert group_instance_ids(kafka, app_id) == {
        Settings.from_env(dict(w.env)).instance_id for w in (first, second)
    }
    assert group_instance_ids(kafka, f"{app_id}-intake") == group_instance_ids(kafka, app_id)
    parts = split_partitions([first, second])
    assert all(parts), parts
    assert after == before, first.tail()


def test_without_static_membership_the_same_restart_rebalances(
    cluster: Cluster, departments: Departments, kafka: Kafka
) -> None:
    first, _, before, after = restart_after_sigkill(
        cluster, departments, {**LONG_SESSION, "KEEL_INSTANCE_ID": "none"}
    )
    assert group_instance_ids(kafka, first.env["KEEL_APP_ID"]) == {None}
    assert after > before
    assert assigned_partitions(first)


def test_two_workers_given_the_same_instance_id_are_two_members(
    cluster: Cluster, departments: Departments, kafka: Kafka
) -> None:
    """A mistake a deployment can make (one KEEL_INSTANCE_ID for two workers): the URL hash
    keeps them apart; as one member, the second would take the first's assignment, with the
    first's URL in it, and faust's assignor stops on it (the second never gets ready)."""
    first, second = cluster(2, "keel-member", env={"KEEL_INSTANCE_ID": "same"})
    assert all(split_partitions([first, second]))
    ids = group_instance_ids(kafka, first.env["KEEL_APP_ID"])
    assert len(ids) == 2 and all(i is not None and i.startswith("same-") for i in ids)


def test_a_session_timeout_the_brokers_refuse_stops_the_worker_at_start_saying_so(
    kafka: Kafka, tmp_path: Path
) -> None:
    """A consumer asking for a session the brokers refuse never joins its group (aiokafka
    raises InvalidSessionTimeoutError inside faust's consumer thread): the worker checks the
    brokers' bounds first and stops, naming the setting and the brokers' bound."""
    app_id = unique("keel-session")
    env = {
        **os.environ,
        **own_topics(app_id, EVERY_TOPIC),
        "KAFKA_BOOTSTRAP": kafka.bootstrap,
        "KEEL_APP_ID": app_id,
        "KEEL_PARTITIONS": str(PARTITIONS),
        "KEEL_DATA_DIR": str(tmp_path / "worker"),
        # the local brokers allow 1 s to 30 min (group.max.session.timeout.ms, Kafka's default)
        "KEEL_SESSION_TIMEOUT_MS": "2000000",
    }
    run = subprocess.run(
        [sys.executable, "-m", "streams", "worker"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr[-2000:]
    assert "KEEL_SESSION_TIMEOUT_MS=2000000 is outside what the brokers allow" in run.stderr
    assert "group.min.session.timeout.ms=1000, group.max.session.timeout.ms=1800000" in run.stderr
