"""Connector throughput: HTTP ingest (single-event POSTs and NDJSON batches) and the outbox.

Starts its own Kafka and PostgreSQL (deploy/local) on free ports, then the connectors as the
processes `make run` starts, and measures what a department would see:

- ingest, single events: ``--single`` POSTs of one JSON event each, ``--concurrency`` at a
  time; events/s from the first request to the last 202 (every 202 means Kafka acknowledged);
- ingest, NDJSON: ``--batches`` POSTs of ``--batch-size`` events each, 4 at a time;
- outbox: ``--rows`` rows committed in one transaction while the connector idles; rows/s from
  the commit until keel_outbox is empty (every row published, acknowledged and deleted).

Events come from the demo feed (realistic sizes, all three departments)::

    python -m bench.connectors                     # defaults below, about a minute
    python -m bench.connectors --rows 100000 --json bench/results/connectors.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

from bench.worker import auth_header, ensure_tokens
from connectors.demo.feed import Feed
from connectors.sources.postgres_outbox import SCHEMA_SQL
from deploy.local.postgres import Postgres
from deploy.local.process import Child
from deploy.local.stack import Kafka, free_port
from streams.encoding.jsonconv import to_json

log = logging.getLogger("bench.connectors")

ROOT = Path(__file__).resolve().parents[1]
PATH = {"order": "orders", "shipment": "shipments", "contact": "contacts"}
RECORD = {"order": "OrderEvent", "shipment": "ShipmentEvent", "contact": "ContactEvent"}
TOPIC = {"order": "orders.v1", "shipment": "shipments.v1", "contact": "contacts.v1"}
KEY = {"order": "customer_id", "shipment": "order_id", "contact": "contact_id"}


def events(count: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """``count`` demo-feed events as departments send them (JSON, ISO timestamps)."""
    out: list[tuple[str, dict[str, Any]]] = []
    round_ = 0
    while len(out) < count:  # each round is a fresh seeded history with distinct event ids
        for kind, event in Feed(seed=seed + round_).history(500):
            event = dict(event, event_id=f"{round_}-{event['event_id']}")
            out.append((kind, to_json(RECORD[kind], event)))
        round_ += 1
    return out[:count]


class Process:
    """A connector subprocess, started like `make run` does, ready once /healthz is 200."""

    def __init__(self, module: str, port: int, log_file: Path, env: dict[str, str]) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.child = Child(module, log_file)
        self.child.start([sys.executable, "-m", module], cwd=ROOT, env={**os.environ, **env})
        self.child.wait_ready(partial(_healthy, f"{self.url}/healthz"), time.monotonic() + 30)

    def stop(self) -> None:
        self.child.stop(20)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


async def post_all(
    url: str, bodies: list[tuple[str, bytes, str]], concurrency: int
) -> tuple[float, list[float], int]:
    """POST every (path, body, content type); (seconds, latencies, events accepted)."""
    queue: asyncio.Queue[tuple[str, bytes, str]] = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)
    latencies: list[float] = []
    accepted = 0
    write = auth_header("write")  # KEEL_WRITE_TOKEN, which the ingest process accepts too

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal accepted
        while not queue.empty():
            path, body, content_type = queue.get_nowait()
            began = time.perf_counter()
            async with session.post(
                f"{url}{path}", data=body, headers={"Content-Type": content_type, **write}
            ) as resp:
                answer = await resp.json()
                if resp.status != 202:
                    raise RuntimeError(f"{path}: {resp.status} {answer}")
                accepted += answer["accepted"]
            latencies.append(time.perf_counter() - began)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return elapsed, latencies, accepted


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def bench_ingest(url: str, args: argparse.Namespace) -> dict[str, Any]:
    single = [
        (f"/events/{PATH[kind]}", json.dumps(event).encode(), "application/json")
        for kind, event in events(args.single, seed=11)
    ]
    asyncio.run(post_all(url, single[:200], args.concurrency))  # warm-up: connections, JIT
    seconds, latencies, accepted = asyncio.run(post_all(url, single, args.concurrency))
    single_result = {
        "events": accepted,
        "seconds": round(seconds, 2),
        "events_per_s": round(accepted / seconds),
        "concurrency": args.concurrency,
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
    }
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for kind, event in events(args.batches * args.batch_size, seed=23):
        by_kind.setdefault(kind, []).append(event)
    batches = []
    for kind, items in by_kind.items():
        for start in range(0, len(items), args.batch_size):
            chunk = items[start : start + args.batch_size]
            body = b"".join(json.dumps(e).encode() + b"\n" for e in chunk)
            batches.append((f"/events/{PATH[kind]}", body, "application/x-ndjson"))
    seconds, latencies, accepted = asyncio.run(post_all(url, batches, 4))
    ndjson_result = {
        "events": accepted,
        "requests": len(batches),
        "seconds": round(seconds, 2),
        "events_per_s": round(accepted / seconds),
        "concurrency": 4,
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
    }
    return {"ingest_single": single_result, "ingest_ndjson": ndjson_result}


def bench_outbox(pg: Postgres, bootstrap: str, work: Path, args: argparse.Namespace) -> dict:
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute(SCHEMA_SQL)
    port = free_port()
    outbox = Process(
        "connectors.sources.postgres_outbox",
        port,
        work / "outbox.log",
        {"KAFKA_BOOTSTRAP": bootstrap, "POSTGRES_URL": pg.url, "KEEL_OUTBOX_PORT": str(port)},
    )
    try:
        rows = [
            (TOPIC[kind], event[KEY[kind]], json.dumps(event))
            for kind, event in events(args.rows, seed=37)
        ]
        with psycopg.connect(pg.url) as conn, conn.cursor() as cursor:
            with cursor.copy("COPY keel_outbox (topic, key, payload) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            conn.commit()
            began = time.perf_counter()
            while True:
                left = conn.execute("SELECT count(*) FROM keel_outbox").fetchone()
                conn.commit()
                if left and left[0] == 0:
                    break
                if time.perf_counter() - began > 600:
                    raise RuntimeError(f"outbox not drained after 600 s; see {work}/outbox.log")
                time.sleep(0.02)
            seconds = time.perf_counter() - began
    finally:
        outbox.stop()
    return {
        "outbox": {
            "rows": len(rows),
            "seconds": round(seconds, 2),
            "rows_per_s": round(len(rows) / seconds),
            "batch": int(os.environ.get("KEEL_OUTBOX_BATCH", "500")),
        }
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=5000, help="single-event POSTs")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent single POSTs")
    parser.add_argument("--batches", type=int, default=60, help="NDJSON requests (about)")
    parser.add_argument("--batch-size", type=int, default=500, help="events per NDJSON request")
    parser.add_argument("--rows", type=int, default=50_000, help="outbox rows")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(message)s")
    ensure_tokens()  # before the ingest starts: it inherits them

    work = Path(tempfile.mkdtemp(prefix="keel-bench-connectors-"))
    work.chmod(0o755)  # PostgreSQL runs as the `postgres` user when we are root
    kafka = Kafka(work / "kafka", port=free_port(), log_file=work / "kafka.log")
    pg = Postgres(work / "pg", port=free_port())
    ingest: Process | None = None
    try:
        log.info("starting Kafka and PostgreSQL in %s", work)
        kafka.start()
        pg.start()
        port = free_port()
        ingest = Process(
            "connectors.sources.http_ingest",
            port,
            work / "ingest.log",
            {"KAFKA_BOOTSTRAP": kafka.bootstrap, "KEEL_INGEST_PORT": str(port)},
        )
        log.info("HTTP ingest: %d single-event POSTs, then NDJSON batches", args.single)
        results: dict[str, Any] = bench_ingest(ingest.url, args)
        ingest.stop()
        ingest = None
        log.info("outbox: %d rows", args.rows)
        results |= bench_outbox(pg, kafka.bootstrap, work, args)
        results["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    finally:
        if ingest is not None:
            ingest.stop()
        pg.stop()
        kafka.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
