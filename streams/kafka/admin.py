"""Create keel's topics with the contract's cleanup policies before the worker starts.

Tables are co-partitioned with the topics that write them, so every topic keel reads must
have exactly ``KEEL_PARTITIONS`` partitions. An existing topic with another count is an
error with a fix in its message, not something to discover later as missing joins.
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from streams import tuning
from streams.config import Settings
from streams.domain.join import NAMESPACES
from streams.domain.links import IDENTIFIERS
from streams.errors import KeelError
from streams.kafka.config import KafkaAuthError, client_config, reach

log = logging.getLogger(__name__)

WEEK_MS = 7 * 24 * 3600 * 1000


#: the worker's tables (streams/worker/tables.py); each has a changelog topic
# ``{app_id}-{name}-changelog``
TABLES = (
    "customers",
    "signal-due",
    *(f"{ns}-owners" for ns in NAMESPACES),
    *(f"{ns}-held" for ns in NAMESPACES),
    *(f"{ns}-identities" for ns in IDENTIFIERS),
    "erased",
    "voice-facts",
    "unmatched",
    "contact-assigned",
)


def changelog_topic(app_id: str, table: str) -> str:
    """The changelog topic of one of the worker's tables (what faust names it).

    The Redis sink reads the owners tables' changelogs: who owns an e-mail, phone or order.
    """
    return f"{app_id}-{table}-changelog"


class TopicError(KeelError, RuntimeError):
    """A topic exists with settings keel cannot work with, or cannot be created."""


def topic_specs(settings: Settings) -> dict[str, dict[str, str]]:
    """Topic name -> config for every topic the worker needs (docs/contract.md §1)."""
    t = settings.topics
    delete = {"cleanup.policy": "delete"}
    inputs = {**delete, "retention.ms": str(settings.input_retention_ms)}
    specs = {
        t.orders: inputs,
        t.shipments: inputs,
        t.contacts: inputs,
        t.state: {"cleanup.policy": "compact"},
        t.signals: delete,
        t.deadletter: {**delete, "retention.ms": str(settings.deadletter_retention_ms)},
        t.commands: {**delete, "retention.ms": str(WEEK_MS)},
        t.command_outcomes: {**delete, "retention.ms": str(WEEK_MS)},
        # the audit trail, and what keeps a replay from offset 0 from bringing anyone back
        t.erasures: {**delete, "retention.ms": str(settings.erasures_retention_ms)},
        t.voice: {"cleanup.policy": "compact"},
        t.deadletter_status: {"cleanup.policy": "compact"},
        f"{settings.app_id}-customer-events": delete,
    }
    for ns in NAMESPACES:
        specs[f"{settings.app_id}-{ns}-refs"] = delete
    # Created here rather than by faust, which would leave Kafka's 1 GB / 7 d segments: only
    # closed segments are compacted, so restores would replay every version of every state.
    for table in TABLES:
        specs[changelog_topic(settings.app_id, table)] = {
            "cleanup.policy": "compact",
            **tuning.CHANGELOG_TOPIC_CONFIG,
        }
    durable = {"min.insync.replicas": str(settings.min_insync_replicas)}
    return {name: {**config, **durable} for name, config in specs.items()}


def ensure_topics(settings: Settings, timeout: float = 60.0) -> list[str]:
    """Create missing topics; verify partition counts of existing ones. Returns created names."""
    # librdkafka's lines through Python logging (KEEL_LOG_FORMAT), not raw on stderr
    admin = AdminClient(
        client_config(settings.kafka_bootstrap, logger=logging.getLogger("librdkafka"))
    )
    specs = topic_specs(settings)
    try:
        metadata = reach(settings.kafka_bootstrap, timeout)
    except KafkaAuthError as exc:
        raise TopicError(str(exc)) from exc
    if metadata is None:
        raise TopicError(f"cannot reach Kafka at {settings.kafka_bootstrap} within {timeout:g}s")
    existing = metadata.topics
    # commands.v1, command-outcomes.v1 and erasures.v1 feed no table (the intake packs them onto
    # customer-events; the delivery connectors read and write them), so any count will do: a
    # connector that got there first may have had the broker create one with its default.
    # voice.v1 is only written (keyed by topic), so its count does not matter either.
    free = {settings.topics.commands, settings.topics.command_outcomes, settings.topics.erasures,
            settings.topics.voice, settings.topics.deadletter_status}
    wrong = [
        f"{name} has {len(existing[name].partitions)} partitions"
        for name in specs
        if name in existing
        and name not in free
        and len(existing[name].partitions) != settings.partitions
    ]
    if wrong:
        raise TopicError(
            f"topics must have KEEL_PARTITIONS={settings.partitions} partitions so tables stay "
            f"co-partitioned with their streams, but {'; '.join(wrong)}. "
            "Set KEEL_PARTITIONS to match, or recreate the topics."
        )
    missing = [
        NewTopic(
            name,
            num_partitions=settings.partitions,
            replication_factor=settings.replication,
            config=config,
        )
        for name, config in specs.items()
        if name not in existing
    ]
    if not missing:
        return []
    for name, future in admin.create_topics(missing).items():
        try:
            future.result(timeout=timeout)
            log.debug("created topic %s", name)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise TopicError(f"cannot create topic {name}: {exc}") from exc
    return [t.topic for t in missing]


def session_timeout_refused(settings: Settings, timeout: float = 10.0) -> str | None:
    """Why the brokers would refuse the workers' session timeout (KEEL_SESSION_TIMEOUT_MS
    outside their group.min/max.session.timeout.ms), or None. A consumer asking for a timeout
    they refuse never joins its group: better to stop at start, saying which setting to change.
    When the broker's settings cannot be read (no DescribeConfigs right), None: the join will
    tell."""
    admin = AdminClient(
        client_config(settings.kafka_bootstrap, logger=logging.getLogger("librdkafka"))
    )
    try:
        brokers = admin.list_topics(timeout=timeout).brokers
        if not brokers:
            return None
        resource = ConfigResource(ConfigResource.Type.BROKER, str(min(brokers)))
        found = admin.describe_configs([resource])[resource].result(timeout=timeout)
        least = int(found["group.min.session.timeout.ms"].value)
        most = int(found["group.max.session.timeout.ms"].value)
    except (KafkaException, KeyError, ValueError, TypeError) as exc:
        log.info("could not read the brokers' session timeout bounds (%s)", exc)
        return None
    wanted = settings.session_timeout_ms
    if least <= wanted <= most:
        return None
    return (
        f"KEEL_SESSION_TIMEOUT_MS={wanted} is outside what the brokers allow "
        f"(group.min.session.timeout.ms={least}, group.max.session.timeout.ms={most}): set "
        f"KEEL_SESSION_TIMEOUT_MS within them, or change the brokers' bound "
        "(docs/fault-tolerance.md: the trade-off)"
    )
