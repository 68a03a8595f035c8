"""Prometheus metrics of the connectors, each process serving its own ``/metrics``.

One set of names for all three connectors, told apart by the ``connector`` label
(``http_ingest``, ``postgres_outbox``, ``redis_sink``), so one dashboard panel covers them:

- ``keel_connector_accepted_total``   events/records taken in (valid, about to be published
  or written)
- ``keel_connector_rejected_total``   refused input, by ``reason`` (a small fixed set)
- ``keel_connector_published_total``  records Kafka acknowledged (sources)
- ``keel_connector_publish_seconds``  from produce to the last acknowledgement of a batch
- ``keel_connector_retries_total``    waits for a dependency that was down, by ``dependency``
- ``keel_redis_write_seconds``        one MULTI/EXEC batch, Redis round trips included
- ``keel_redis_retries_total``        Redis batches retried after Redis was unreachable
- ``keel_outbox_leader``              1 while this outbox instance holds the leader lock
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

ACCEPTED = Counter(
    "keel_connector_accepted_total",
    "Valid events/records a connector took in",
    ["connector", "topic"],
)
REJECTED = Counter(
    "keel_connector_rejected_total",
    "Input a connector refused, by reason (invalid, bad_json, too_large, unknown_topic, "
    "key_mismatch, undecodable)",
    ["connector", "reason"],
)
PUBLISHED = Counter(
    "keel_connector_published_total",
    "Records Kafka acknowledged",
    ["connector", "topic"],
)
PUBLISH_SECONDS = Histogram(
    "keel_connector_publish_seconds",
    "From producing a batch to Kafka's last acknowledgement of it",
    ["connector"],
    buckets=_LATENCY_BUCKETS,
)
RETRIES = Counter(
    "keel_connector_retries_total",
    "Retries after a dependency was unavailable (kafka, postgres, redis)",
    ["connector", "dependency"],
)
REDIS_WRITE_SECONDS = Histogram(
    "keel_redis_write_seconds",
    "Writing one batch to Redis (read of the old index keys + MULTI/EXEC)",
    buckets=_LATENCY_BUCKETS,
)
REDIS_RETRIES = Counter(
    "keel_redis_retries_total", "Redis batches retried because Redis did not accept them"
)
REDIS_RECORDS = Counter(
    "keel_redis_records_total",
    "records applied to Redis, by op (upsert, delete: customer-state.v1; owner: an owners "
    "changelog record, the customer an e-mail, phone or order index key names)",
    ["op"],
)
OUTBOX_LEADER = Gauge(
    "keel_outbox_leader", "1 while this outbox connector holds the leader lock, else 0"
)
OUTBOX_BACKLOG = Gauge(
    "keel_outbox_backlog_rows", "Rows in keel_outbox seen by the last poll (capped at a batch)"
)
