"""Create every topic a benchmark's keel worker uses, table changelogs included, before it starts.

``keel worker`` creates its input, output and internal topics itself (streams/kafka/admin.py), but
leaves the tables' changelog topics to faust, which declares them while the consumer already
subscribes; on a broker with ``auto.create.topics.enable`` (the local stack's) a changelog can
then be auto-created first with the broker's default partition count, and the table's agent
crashes with ``PartitionsMismatch`` whenever that differs from ``KEEL_PARTITIONS``. The
benchmark creates them up front with the right count, as faust would (compacted), so it
measures the pipeline rather than that race. Run with the worker's environment::

    KEEL_APP_ID=... KAFKA_BOOTSTRAP=... python -m bench.topics
"""

from __future__ import annotations

import json
import sys

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streams.kafka.config import client_config


def main() -> int:
    from streams.config import Settings
    from streams.kafka.admin import ensure_topics

    settings = Settings.from_env()
    created = ensure_topics(settings)

    import streams.worker.agent  # noqa: F401  (declares the tables)
    from streams.app import app

    changelogs = sorted(table.changelog_topic.get_topic_name() for table in app.tables.values())
    admin = AdminClient(client_config(settings.kafka_bootstrap))
    existing = admin.list_topics(timeout=10).topics
    new = [
        NewTopic(
            name,
            num_partitions=settings.partitions,
            replication_factor=settings.replication,
            config={"cleanup.policy": "compact"},
        )
        for name in changelogs
        if name not in existing
    ]
    for name, future in admin.create_topics(new).items() if new else ():
        try:
            future.result(timeout=60)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
        created.append(name)
    print(json.dumps({"created": created, "changelogs": changelogs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
