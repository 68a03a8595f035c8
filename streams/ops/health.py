"""Whether the worker is still doing its job: what ``/healthz`` and ``keel_worker_healthy`` say.

A part of the worker that cannot go on (Kafka refused its outputs, a table write failed, the
intake thread died) calls :func:`fail` and stops *without* acknowledging what it had not
finished, so nothing is committed past it. The process keeps running, answering ``/healthz``
with 500 and the reason, so that an orchestrator restarts it (the restart replays from the
committed offsets) instead of a dead agent serving stale state as ready.

    health.fail("join", "Kafka did not confirm 3 records: ...")
    health.failures()   # {"join": "Kafka did not confirm ..."}
"""

from __future__ import annotations

import asyncio
import logging
import threading

from prometheus_client import Gauge

log = logging.getLogger(__name__)

HEALTHY = Gauge(
    "keel_worker_healthy",
    "1 while every part of the worker works; 0 once one has failed and stopped (it does not "
    "acknowledge unfinished input, /healthz answers 500 with the reason): restart the worker",
)
HEALTHY.set(1)

_lock = threading.Lock()
_failures: dict[str, str] = {}


def fail(part: str, reason: str) -> None:
    """Record that ``part`` has stopped for ``reason`` (the first reason per part is kept)."""
    with _lock:
        _failures.setdefault(part, reason)
    HEALTHY.set(0)
    log.error(
        "%s stopped: %s; the worker reports itself unhealthy and must be restarted", part, reason
    )


def failures() -> dict[str, str]:
    with _lock:
        return dict(_failures)


async def halt() -> None:
    """Wait forever: what a failed agent does instead of returning (which would let faust
    restart it past its unfinished batch)."""
    await asyncio.Event().wait()
