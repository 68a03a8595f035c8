"""What the worker measures about itself for ``/metrics``, without slowing the stream down.

streams/ops/metrics.py declares the metrics; this module fills the ones that need faust:

- **Readiness** (:func:`ready`): the single definition ``/readyz`` and ``keel_worker_ready``
  share.
- **Consumer lag**, every :data:`LAG_INTERVAL` seconds: end offsets come from a ListOffsets
  request that faust runs on its consumer thread (``consumer.highwaters``), so the event loop
  never waits on the broker; committed offsets are the ones this worker committed itself.
- **Table census**, after every rebalance and every :data:`CENSUS_MIN_INTERVAL` seconds (more
  seldom for big tables): customers, active signals by type and held events, counted over the
  partitions this worker owns. RocksDB has no exact cheap count, so the census iterates, in
  slices of :data:`CENSUS_SLICE` records with a yield to the loop in between, and gives up
  when a rebalance starts (the tables are being reassigned under it). It replaces the
  ``keel_held_events`` value the agents move by ±1, which makes that gauge right after a
  restart, when the agents' in-memory count starts at zero but the held tables do not.
- **API timings**, through a faust sensor: every view's duration by route template.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
from faust import Sensor
from faust.types import TP, AppT
from faust.web import Request, Response, View

from streams.app import app, settings
from streams.errors import KeelError
from streams.ops import metrics
from streams.worker.intake import intake
from streams.worker.tables import customers, held, views_ready

log = logging.getLogger(__name__)

LAG_INTERVAL = 5.0
"""Seconds between consumer-lag refreshes (one ListOffsets request per refresh)."""

CENSUS_MIN_INTERVAL = 15.0
"""Seconds between table censuses at least; more when a census itself takes long."""

CENSUS_COST_SHARE = 0.05
"""A census may use at most this share of the worker's time: the next one waits
``duration / CENSUS_COST_SHARE`` (1 s of counting -> 20 s until the next)."""

CENSUS_SLICE = 2000
"""Records counted between two yields to the event loop (a few milliseconds of work)."""

_EMPTY_SIGNALS = b'"signals":[]'


def ready() -> bool:
    """True once table recovery finished and the worker is not rebalancing or stopping.

    faust sets ``rebalancing`` when the group starts a rebalance and clears it only after
    the tables of the new assignment are recovered, so this is False for the whole window
    in which a worker's answers could come from an incomplete or no-longer-owned table. A
    stopping worker closes its tables first and its web server last: in between it would
    answer 404 for every customer (found by tests/integration/test_failover.py).
    """
    return views_ready()


def _rebalances() -> int:
    return int(getattr(app, "rebalancing_count", 0))


metrics.snapshot.ready = ready
metrics.snapshot.rebalances = _rebalances
metrics.declare_inputs(settings.topics.inputs())


# ---------------------------------------------------------------------------------- API timing


class ApiTimingSensor(Sensor):
    """Observes every query API request into ``keel_api_request_duration_seconds``.

    A faust sensor sees each view's start and end, including forwarded requests and errors
    (a view that raised has no response: counted as 500). The route label is aiohttp's
    route template, so ``/customers/c-1`` and ``/customers/c-2`` share one series.
    """

    def on_web_request_start(
        self, app: AppT, request: Request, *, view: View | None = None
    ) -> dict:
        return {"started": time.perf_counter()}

    def on_web_request_end(
        self,
        app: AppT,
        request: Request,
        response: Response | None,
        state: dict,
        *,
        view: View | None = None,
    ) -> None:
        status = str(response.status) if response is not None else "500"
        metrics.API_DURATION.labels(_route_template(request), status).observe(
            time.perf_counter() - state["started"]
        )


def _route_template(request: Any) -> str:
    try:
        return str(request.match_info.route.resource.canonical)
    except AttributeError:  # no matched resource: not one of keel's routes
        return "unmatched"


app.sensors.add(ApiTimingSensor())


# -------------------------------------------------------------------------------- consumer lag


async def refresh_consumer_lag() -> None:
    """Measure end offset minus committed offset for every assigned non-changelog partition,
    and add the intake's (the department topics, read outside faust).

    Changelog partitions are left out: standbys and recovering tables read them without
    committing, so "committed" means nothing there. A partition this worker has not committed
    yet counts from the partition's earliest offset, as a newly joined consumer group would.
    """
    consumer = app.consumer
    changelogs = set(app.tables.changelog_topics)
    assigned = sorted(tp for tp in consumer.assignment() if tp.topic not in changelogs)
    if not assigned:
        metrics.snapshot.consumer_lag = intake.lag()
        return
    ends = await consumer.highwaters(*assigned)
    # faust's record of the offsets it committed (and read back on assignment); a private
    # attribute, but asking the broker instead would be one more request per refresh.
    own: Mapping[TP, int | None] = consumer._committed_offset  # type: ignore[attr-defined]
    committed = {tp: own.get(tp) for tp in assigned}
    uncommitted = [tp for tp, offset in committed.items() if offset is None]
    starts = await consumer.earliest_offsets(*uncommitted) if uncommitted else {}
    lag: dict[tuple[str, int], int] = {}
    for tp in assigned:
        end = ends.get(tp)
        if end is None:
            continue
        done = committed[tp]
        if done is None:
            done = starts.get(tp) or 0
        lag[(tp.topic, tp.partition)] = max(0, end - done)
    lag.update(intake.lag())
    metrics.snapshot.consumer_lag = lag


@app.task
async def _consumer_lag_loop() -> None:
    """Refresh ``keel_consumer_lag_records`` for as long as the worker runs."""
    while True:
        await asyncio.sleep(LAG_INTERVAL)
        try:
            await asyncio.wait_for(refresh_consumer_lag(), timeout=LAG_INTERVAL * 2)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed measurement must not stop the worker
            # During start-up and rebalances the consumer may not be ready; the next round
            # measures again. The last values stay, so a graph shows a plateau, not a gap.
            log.debug("consumer lag not measured: %r", exc)


# ------------------------------------------------------------------------------- table census


class _Interrupted(KeelError):
    """A rebalance began while counting: the partitions being counted may have moved."""


def _raw_items(table: Any) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) bytes of the partitions this worker owns, without deserialising."""
    return table.data._iteritems()  # type: ignore[no-any-return]


async def _sliced(items: Iterator[tuple[bytes, bytes]], generation: int) -> Any:
    """Yield from ``items``, giving the loop a turn every slice; stop if a rebalance starts."""
    for n, item in enumerate(items, 1):
        yield item
        if n % CENSUS_SLICE == 0:
            await asyncio.sleep(0)
            if app.rebalancing or app.consumer_generation_id != generation:
                raise _Interrupted


def signal_types(raw_state: bytes) -> list[str]:
    """Types of the active signals in a stored customer state (orjson bytes).

    Most customers have none, and the stored layout is compact JSON, so a byte search for
    ``"signals":[]`` skips parsing them.

        >>> signal_types(b'{"customer_id":"c-1","signals":[]}')
        []
        >>> signal_types(b'{"signals":[{"type":"SHIPMENT_LATE","order_id":"o-1"}]}')
        ['SHIPMENT_LATE']
    """
    if _EMPTY_SIGNALS in raw_state:
        return []
    state = orjson.loads(raw_state)
    return [
        s["type"]
        for s in state.get("signals") or ()
        if isinstance(s, dict) and isinstance(s.get("type"), str)
    ]


async def census() -> None:
    """Count customers, active signals and held events on this worker's partitions."""
    generation = app.consumer_generation_id
    count = 0
    signals: Counter[str] = Counter()
    async for _, value in _sliced(_raw_items(customers), generation):
        count += 1
        signals.update(signal_types(value))
    waiting = 0
    for table in held.values():
        async for _, value in _sliced(_raw_items(table), generation):
            waiting += len(orjson.loads(value))
    if app.rebalancing or app.consumer_generation_id != generation:
        raise _Interrupted
    metrics.snapshot.customers = count
    metrics.snapshot.signals = dict(signals)
    metrics.HELD.set(waiting)
    metrics.snapshot.census_at = time.time()


@app.task
async def _census_loop() -> None:
    """Run :func:`census` once the worker is ready, after each rebalance and periodically."""
    counted_generation: int | None = None
    next_due = 0.0
    while True:
        await asyncio.sleep(1.0)
        if not ready():
            continue
        generation = app.consumer_generation_id
        if generation == counted_generation and time.monotonic() < next_due:
            continue
        started = time.monotonic()
        try:
            await census()
        except asyncio.CancelledError:
            raise
        except _Interrupted:
            continue  # counted again once the rebalance is over
        except Exception:  # noqa: BLE001 - a failed count must not stop the worker
            log.exception("table census failed; the census metrics keep their last values")
            counted_generation, next_due = generation, time.monotonic() + CENSUS_MIN_INTERVAL
            continue
        took = time.monotonic() - started
        counted_generation = generation
        next_due = time.monotonic() + max(CENSUS_MIN_INTERVAL, took / CENSUS_COST_SHARE)
        log.debug("table census took %.3fs", took)
