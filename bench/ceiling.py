"""The ceiling: one process reading and Avro-decoding the backlog with a bare consumer, no state.

What a Python consumer on this machine can do at best with the same decode keel does; keel's
throughput divided by this is the share left for routing, joining, merging and publishing.
Run as a subprocess so it has a core of its own, like the worker::

    python -m bench.ceiling BOOTSTRAP orders-topic shipments-topic contacts-topic

It prints one JSON object: events, seconds (first to last record), events_per_s.
"""

from __future__ import annotations

import json
import sys
import time

from confluent_kafka import Consumer, TopicPartition

from bench.kafka import partitions
from streams.encoding.codec import CodecError, get_codec
from streams.kafka.config import client_config

SCHEMAS = ("OrderEvent", "ShipmentEvent", "ContactEvent")


def run(bootstrap: str, topics: list[str], timeout: float = 600) -> dict[str, float]:
    codec = get_codec()
    schema_of = dict(zip(topics, SCHEMAS, strict=True))
    consumer = Consumer(
        {
            **client_config(bootstrap),
            "group.id": f"bench-ceiling-{time.time_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 52_428_800,
            "max.partition.fetch.bytes": 10_485_760,
            "queued.max.messages.kbytes": 262_144,
        }
    )
    tps = partitions(bootstrap, topics)
    ends = {(tp.topic, tp.partition): consumer.get_watermark_offsets(tp)[1] for tp in tps}
    consumer.assign([TopicPartition(tp.topic, tp.partition, 0) for tp in tps])
    pending = {k for k, end in ends.items() if end > 0}
    events = errors = 0
    first = 0.0
    deadline = time.monotonic() + timeout
    decode = codec.decode
    while pending and time.monotonic() < deadline:
        for msg in consumer.consume(10_000, 0.5):
            if msg.error():
                continue
            if not first:
                first = time.perf_counter()
            topic = msg.topic()
            try:
                decode(msg.value(), schema_of[topic])
            except CodecError:
                errors += 1
            events += 1
            if msg.offset() + 1 >= ends[(topic, msg.partition())]:
                pending.discard((topic, msg.partition()))
    seconds = time.perf_counter() - first
    consumer.close()
    if pending:
        raise SystemExit(f"ceiling: {len(pending)} partitions not read to the end in {timeout}s")
    return {
        "events": events,
        "decode_errors": errors,
        "seconds": seconds,
        "events_per_s": events / seconds if seconds > 0 else 0.0,
    }


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1], sys.argv[2:5])))
