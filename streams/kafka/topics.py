"""Every topic keel's worker reads or writes, declared once.

Input and output topics carry raw bytes: the input topics are read by the intake
(streams/worker/intake.py), not by faust, which decodes them with streams/encoding/codec.py so that
a record
that cannot be decoded becomes a dead letter with a reason instead of an exception.
Internal topics carry packed orjson messages and are keyed like the table they feed, so
each is co-partitioned with that table.
"""

from __future__ import annotations

from faust.types import TopicT

from streams.app import app, settings
from streams.domain.join import NAMESPACES

_t = settings.topics


def _raw(name: str, **config: str) -> TopicT:
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
        config=config or None,
    )


orders = _raw(_t.orders)
shipments = _raw(_t.shipments)
contacts = _raw(_t.contacts)
customer_state = _raw(_t.state)
customer_signals = _raw(_t.signals)
deadletter = _raw(_t.deadletter)

#: events whose customer is known, keyed by customer_id (co-partitioned with orders.v1)
customer_events = _raw(f"{settings.app_id}-customer-events")

#: binds and lookups for each reference namespace, keyed by the reference
ref_topics: dict[str, TopicT] = {ns: _raw(f"{settings.app_id}-{ns}-refs") for ns in NAMESPACES}

#: what the join agent reads: all internal topics as one stream (streams/worker/agent.py)
internal = app.topic(
    customer_events.get_topic_name(),
    *(topic.get_topic_name() for topic in ref_topics.values()),
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
    partitions=settings.partitions,
)

INPUT_KINDS = {_t.orders: "order", _t.shipments: "shipment", _t.contacts: "contact"}
