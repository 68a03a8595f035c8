"""One record of what the local stack runs, whichever target started it.

``make run`` (in the foreground) and ``make up`` (detached) both write ``<run dir>/stack.json``
once everything is started: who started it, the launcher's pid (``make run``'s, which stops
the whole stack on SIGTERM), and every process with its pid, the marker its command line
carries (so a reused pid is never taken for it) and how to ask it whether it is well::

    {"started_by": "make run", "launcher": 4242, "at": "2026-12-07T10:00:00Z",
     "processes": [{"name": "worker", "pid": 4300, "marker": "streams",
                    "check": "http://127.0.0.1:6066/readyz"}, ...]}

``make status`` lists each process with its health answer, ``make down`` stops whatever is
running, and a second start says the stack is already running and how to stop it. The
record goes when the stack stops.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deploy.local.stack import is_running

NAME = "stack.json"


@dataclass(frozen=True)
class Process:
    name: str
    pid: int
    marker: str
    #: ``http://…`` (a health endpoint: its status and body), ``tcp://host:port`` (it accepts
    #: connections) or "" (nothing to ask: it runs or it does not)
    check: str = ""

    def alive(self) -> bool:
        return is_running(self.pid, self.marker.encode())

    def health(self, timeout: float = 2.0) -> tuple[bool, str]:
        """(well, what it answered)."""
        if not self.check:
            return True, "running"
        if self.check.startswith("tcp://"):
            host, _, port = self.check.removeprefix("tcp://").rpartition(":")
            try:
                with socket.create_connection((host, int(port)), timeout=timeout):
                    return True, f"accepting connections on {host}:{port}"
            except OSError as exc:
                return False, f"not accepting connections on {host}:{port} ({exc.strerror})"
        try:
            with urllib.request.urlopen(self.check, timeout=timeout) as resp:
                body = resp.read(300).decode(errors="replace").strip()
                return True, f"{self.check} {resp.status} {body}"
        except urllib.error.HTTPError as exc:
            body = exc.read(300).decode(errors="replace").strip()
            return False, f"{self.check} {exc.code} {body}"
        except (urllib.error.URLError, OSError) as exc:
            return False, f"{self.check} not answering ({exc})"


def write(run_dir: Path, started_by: str, launcher: int | None, processes: list[Process]) -> None:
    at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    record = {"started_by": started_by, "launcher": launcher, "at": at,
              "processes": [asdict(p) for p in processes]}  # fmt: skip
    path = run_dir / NAME
    path.with_suffix(".part").write_text(json.dumps(record, indent=2))
    path.with_suffix(".part").rename(path)


def read(run_dir: Path) -> dict[str, Any] | None:
    """The record, with ``processes`` as :class:`Process` objects; None if there is none."""
    try:
        record = json.loads((run_dir / NAME).read_text())
    except (OSError, ValueError):
        return None
    record["processes"] = [Process(**p) for p in record.get("processes", [])]
    return dict(record)


def clear(run_dir: Path) -> None:
    (run_dir / NAME).unlink(missing_ok=True)


def running(run_dir: Path) -> dict[str, Any] | None:
    """The record if any process it names still runs (else None, and a stale record goes)."""
    record = read(run_dir)
    if record is None:
        return None
    launcher = record.get("launcher")
    if any(p.alive() for p in record["processes"]) or (
        launcher and is_running(launcher, b"deploy.local.run")
    ):
        return record
    clear(run_dir)
    return None
