"""``schemathesis run --checks all`` against a keel server's /openapi.json, as a client would.

All checks, all phases, positive and negative cases, with tests/integration/schemathesis_hooks.py
(the NDJSON serializer, the documented filtered failures). A fixed seed keeps a failure
reproducible: the output names the case and prints a curl command. Run in its own directory:
schemathesis keeps a cache of past failures in its working directory.
"""

from __future__ import annotations

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
    """What one run reports: operations tested, test cases generated, failures; its output."""

    operations: int
    cases: int
    failures: int
    seconds: float
    output: str


def run(url: str, where: Path, examples: int, seed: int, *headers: str) -> Totals:
    """Run schemathesis on ``url``/openapi.json, sending ``headers`` (``Name: value``) with
    every request; fails the test with the output unless every check passes."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "schemathesis.toml").write_text(CONFIG)
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", "schemathesis.toml",
        "run", f"{url}/openapi.json",
        "--checks", "all", "--mode", "all",
        "--max-examples", str(examples), "--seed", str(seed),
        "--workers", "1", "--generation-database", "none",
        "--max-redirects", "0",  # /desk's 302 is the answer documented, not the page behind it
        "--request-timeout", "40",  # above keel's 30 s wait for Kafka: a slow ack is a 503
        "--report", "junit", "--report-dir", str(where), "--no-color",
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
    return Totals(int(tested[1]), int(generated[1]), int(failures[1]) if failures else 0, took,
                  output)  # fmt: skip
