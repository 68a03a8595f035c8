"""faust's own floor: a faust app that only consumes and decodes the backlog, in batches.

The same faust-streaming, ``take_events`` batches (what keel's agents used to consume the
input topics with, before the intake took them over) and the same Avro decode, but no routing,
no state and no outputs: what a faust-based worker that consumes the departments' records one
by one spends on this machine before it does anything. The definition is kept as it was, so
runs before and after keel's intake compare. keel / this figure is the share of faust's budget
that keel's own work takes; this / ceiling is what faust's consumer path costs against a bare one::

    python -m bench.faust_floor BOOTSTRAP EVENTS orders shipments contacts SECONDS

It prints one line, ``faust-floor-result:`` and a JSON object: events, seconds (first to last
event), events_per_s, cpu_seconds.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from typing import Any

import faust
from faust.types import EventT

from streams.encoding.codec import CodecError, get_codec

SCHEMAS = ("OrderEvent", "ShipmentEvent", "ContactEvent")
BATCH, WITHIN = 1000, 0.005  # keel's defaults (KEEL_BATCH_MAX, KEEL_BATCH_WAIT_MS)
RESULT = "faust-floor-result: "  # faust's worker writes to stdout too


def main(bootstrap: str, expected: int, topics: list[str], timeout: float) -> None:
    codec = get_codec()
    app = faust.App(
        f"bench-faust-floor-{time.time_ns()}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=tempfile.mkdtemp(prefix="keel-faust-floor-"),  # not a *-data dir in the cwd
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,
        topic_disable_leader=True,
        key_serializer="raw",
        value_serializer="raw",
    )
    seen = {"events": 0, "errors": 0, "first": 0.0, "last": 0.0}
    started = time.monotonic()

    def finish(code: int, **extra: Any) -> None:
        seconds = seen["last"] - seen["first"]
        cpu = os.times()
        figures = {
            "events": seen["events"],
            "decode_errors": seen["errors"],
            "seconds": seconds,
            "events_per_s": seen["events"] / seconds if seconds > 0 else 0.0,
            "cpu_seconds": cpu.user + cpu.system,
            "batch": BATCH,
            "within_s": WITHIN,
            **extra,
        }
        # faust's worker redirects sys.stdout into its logging: write to the real stdout
        os.write(1, f"\n{RESULT}{json.dumps(figures)}\n".encode())
        os._exit(code)  # the figure is out; no orderly faust shutdown needed

    def consume(topic: str, schema: str) -> None:
        async def agent(stream: Any) -> None:
            async for events in stream.take_events(BATCH, WITHIN):
                now = time.perf_counter()
                if not seen["first"]:
                    seen["first"] = now
                batch: list[EventT] = events
                for event in batch:
                    try:
                        codec.decode(event.value, schema)
                    except CodecError:
                        seen["errors"] += 1
                seen["events"] += len(batch)
                seen["last"] = time.perf_counter()
                if seen["events"] >= expected:
                    finish(0, complete=True)
                if time.monotonic() - started > timeout:  # steady long before the end
                    finish(0, complete=False, budget_s=timeout)

        agent.__name__ = agent.__qualname__ = f"floor_{schema}"
        app.agent(app.topic(topic, key_type=bytes, value_type=bytes), concurrency=1)(agent)

    for topic, schema in zip(topics, SCHEMAS, strict=True):
        consume(topic, schema)

    @app.timer(interval=1.0)
    async def deadline() -> None:  # nothing arrives at all
        if time.monotonic() - started > timeout + 30 and not seen["events"]:
            finish(1, complete=False, budget_s=timeout, error="no events read")

    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:6], float(sys.argv[6]))
