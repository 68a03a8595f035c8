"""``schemathesis run --checks all`` against a keel server's /openapi.json, as a client would.

All checks, all phases, positive and negative cases, with tests/integration/schemathesis_hooks.py
(the NDJSON serializer, the documented filtered failures). A fixed seed keeps a failure
reproducible: the output names the case and prints a curl command. Run in its own directory:
schemathesis keeps a cache of past failures in its working directory.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.integration.harness import ROOT

CONFIG = """\
# An event stream never ends: read it up to its first event (the state a desk would show).
max-stream-events = 1
"""


@dataclass(frozen=True)
class Totals:
    """What one run reports: operations tested, test cases generated, failures; its output,
    and every request it sent as (method, URL, status), from its HAR report."""

    operations: int
    cases: int
    failures: int
    seconds: float
    output: str
    exchanges: list[tuple[str, str, int]]

    def answered(self, method: str, status: int, *parts: str) -> int:
        """How many ``method`` requests whose URL has each of ``parts`` got ``status``."""
        return sum(
            1
            for m, url, got in self.exchanges
            if m == method and got == status and all(p in url for p in parts)
        )


def run(url: str, where: Path, examples: int, seed: int, *headers: str, config: str = "") -> Totals:
    """Run schemathesis on ``url``/openapi.json, sending ``headers`` (``Name: value``) with
    every request; fails the test with the output unless every check passes. ``config``: more
    of schemathesis.toml (e.g. dictionaries of known ids)."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "schemathesis.toml").write_text(CONFIG + config)
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", "schemathesis.toml",
        "run", f"{url}/openapi.json",
        "--checks", "all", "--mode", "all",
        "--max-examples", str(examples), "--seed", str(seed),
        "--workers", "1", "--generation-database", "none",
        "--max-redirects", "0",  # /desk's 302 is the answer documented, not the page behind it
        "--request-timeout", "40",  # above keel's 30 s wait for Kafka: a slow ack is a 503
        "--report", "junit,har", "--report-dir", str(where), "--no-color",
    ]  # fmt: skip
    for header in headers:
        command += ["--header", header]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.integration.schemathesis_hooks",
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    began = time.monotonic()
    result = subprocess.run(
        command, cwd=where, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    took = time.monotonic() - began
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"schemathesis failed after {took:.0f}s:\n{output[-20000:]}"
    tested = re.search(r"Tested: (\d+)", output)
    generated = re.search(r"(\d+) generated", output)
    failures = re.search(r"(\d+) failures?", output)
    assert tested and generated, output[-3000:]
    exchanges = [
        (e["request"]["method"], e["request"]["url"], e["response"]["status"])
        for har in where.glob("har-*.json")
        for e in json.loads(har.read_text())["log"]["entries"]
    ]
    return Totals(int(tested[1]), int(generated[1]), int(failures[1]) if failures else 0, took,
                  output, exchanges)  # fmt: skip
