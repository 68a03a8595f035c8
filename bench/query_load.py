"""Query load from a process of its own: GET /customers/{id} and the e-mail lookup at a fixed rate.

Open loop: every thread keeps its own schedule (``rate / threads`` requests per second) and
sends late rather than skipping, so a slow answer cannot hide the ones queued behind it; the
latency is from sending a request to having read its whole answer, over keep-alive
connections. Half the requests ask by id, half by e-mail (the lookup goes through the e-mail
reference table first). ::

    KEEL_READ_TOKEN=… python -m bench.query_load PLAN.json   # prints one JSON object

The token comes from the environment, as a client has it after ``. .run/tokens.env``.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from bench.stats import latency_summary


def worker(plan: dict, index: int, start: float, out: dict[str, list], errors: list) -> None:
    host, port = plan["api_url"].removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    keys = plan["customers"]
    headers = {"Authorization": f"Bearer {os.environ['KEEL_READ_TOKEN']}"}
    per_thread = plan["rate"] / plan["threads"]
    total = int(per_thread * plan["duration_s"])
    offset = index / plan["rate"]
    for n in range(total):
        target = start + offset + n / per_thread
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        cid, email = keys[(n * plan["threads"] + index) % len(keys)]
        by_email = n % 2 == 1
        path = f"/customers?email={urllib.parse.quote(email)}" if by_email else f"/customers/{cid}"
        sent = time.perf_counter()
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            resp.read()
            status = resp.status
        except (OSError, http.client.HTTPException) as exc:
            errors.append(type(exc).__name__)
            conn.close()
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            continue
        took = time.perf_counter() - sent
        out["lateness"].append(max(0.0, sent - target))
        if status == 200:  # latencies of answers with a state; anything else is an error
            out["by_email" if by_email else "by_id"].append(took)
        else:
            errors.append(str(status))


def run(plan: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, list] = {"by_id": [], "by_email": [], "lateness": []}
    errors: list[str] = []
    start = time.perf_counter() + 0.1
    threads = [
        threading.Thread(target=worker, args=(plan, i, start, out, errors), daemon=True)
        for i in range(plan["threads"])
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(plan["duration_s"] + 60)
    elapsed = time.perf_counter() - start
    done = len(out["lateness"])
    return {
        "target_per_s": plan["rate"],
        "achieved_per_s": done / elapsed if elapsed > 0 else 0.0,
        "requests": done,
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
        "by_id": latency_summary(out["by_id"]),
        "by_email": latency_summary(out["by_email"]),
        "all": latency_summary(out["by_id"] + out["by_email"]),
        "send_lateness": latency_summary(out["lateness"]),
    }


if __name__ == "__main__":
    print(json.dumps(run(json.loads(Path(sys.argv[1]).read_text()))))
