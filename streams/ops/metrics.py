"""Prometheus metrics of the stream worker (served on the API's ``/metrics``).

Names follow Prometheus conventions: a ``keel_`` prefix, base units, ``_total`` for
counters, ``_seconds`` for durations. Each help text says what a person reading a graph
needs: what is counted and when it moves.

Two kinds live here. Instruments the agents update as events flow (``EVENTS``,
``FRESHNESS`` via ``observe_applied``, ``HELD``, ``STATE_PUBLISHED``), and snapshot metrics
that describe the worker's current state (consumer lag, table sizes, readiness). The
snapshots are filled by streams/worker/monitoring.py, which knows faust; this module imports
nothing from faust so the agents and unit tests can use it without an app::

    metrics.EVENTS.labels("orders.v1", "applied").inc()
    metrics.observe_source("webshop", occurred_at_ms)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# No ``*_created`` series: they double the exposition and no keel alert or graph uses them.
disable_created_metrics()

#: The signal types of docs/contract.md §6, exported as 0 until one is active, so that a
#: dashboard shows a flat line rather than "no data" for a type that never fired.
SIGNAL_TYPES = (
    "DUPLICATE_ORDER",
    "SHIPMENT_LATE",
    "LOST_SHIPMENT_DELIVERED",
    "REPEAT_CONTACT",
    "COMPLAINT_UNRESOLVED",
)

EVENTS = Counter(
    "keel_events_total",
    "Input events handled, by input topic and outcome: applied (changed a customer's state), "
    "duplicate (already applied: a re-send or a replay after a crash), held (waiting for an "
    "order or identity that is not known yet), erased (of a customer erased after it "
    "happened: dropped) or dead_letter (could not be decoded or used; the record is in the "
    "dead-letter topic with the reason)",
    ["topic", "outcome"],
)
FRESHNESS = Histogram(
    "keel_event_freshness_seconds",
    "Seconds from an event's occurred_at (in the department's system) to the moment its "
    "effect is queryable here (stored, with everything it caused confirmed by Kafka), by "
    "source system; includes the department's own delay and time spent held. Replays of old "
    "events land in the top buckets. The first 16 sources a worker sees get a label of their "
    "own, later ones share source=\"other\"",
    ["source"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
APPLY_LAG = Histogram(
    "keel_event_apply_seconds",
    "Seconds from Kafka appending an input event to the moment its effect is queryable here "
    "(stored, with everything it caused confirmed by Kafka), by source system: keel's own "
    "delay, what an SRE calls stale (the KeelCustomerViewStale alert). Unlike "
    "keel_event_freshness_seconds it does not count how late a department sent the event",
    ["source"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
#: distinct ``source`` label values of FRESHNESS at most (a series per value)
MAX_SOURCE_LABELS = 16
HELD = Gauge(
    "keel_held_events",
    "Events held on this worker's partitions until the order or identity they refer to "
    "becomes known; an event waiting on several references (order, e-mail, phone) counts "
    "once per reference. Recounted from the held tables after every rebalance and "
    "periodically, so it is right after a restart too",
)
INTAKE_WAITING = Gauge(
    "keel_intake_waiting",
    "1 while this worker's intake does not read the departments' topics because the join is "
    "more than KEEL_INTAKE_AHEAD_RECORDS internal records behind (the backlog waits in the "
    "departments' topics, where keel_consumer_lag_records shows it)",
)
ANNOUNCED = Counter(
    "keel_voice_announced_total",
    "ANNOUNCE commands published to commands.v1 from the Voice of the Customer board (one per "
    "customer an announcement reached; a repeated announcement publishes nothing)",
)
STATES_BOUNDED = Counter(
    "keel_states_bounded_total",
    "Times a customer's state outgrew KEEL_MAX_STATE_BYTES and shed its oldest parts "
    "(the customer shows STATE_BOUNDED)",
)
ERASURES = Counter(
    "keel_customers_erased_total",
    "Customers whose state keel deleted on an erasure request"
    " (erasures.v1; streams/domain/erasure.py)",
)
CONTACTS_MOVED = Counter(
    "keel_contacts_moved_total",
    "Contacts moved to another customer because a stronger reference of theirs (an order "
    "after an e-mail, an e-mail after a phone) turned out to name it (docs/contract.md §4)",
)
IDENTIFIERS_SHARED = Counter(
    "keel_identifiers_shared_total",
    "E-mails and phones that became shared: seen with more customer ids than "
    "KEEL_IDENTITY_SHARED_AFTER, they link no one from then on (streams/domain/links.py)",
)
STATE_PUBLISHED = Counter(
    "keel_state_published_total",
    "CustomerState records this worker published to the customer-state topic",
)
CONTACTS_UNMATCHED = Counter(
    "keel_contacts_unmatched_total",
    "Contacts that went to the unmatched list (GET /unmatched): they resolve only through an "
    "e-mail or phone that is shared or links several customers (streams/domain/unmatched.py)",
)
COMMANDS = Counter(
    "keel_desk_commands_total",
    "Desk commands (POST /customers/{id}/commands) answered by this worker, by type and "
    "outcome: published (Kafka acknowledged it, 202), duplicate (a command_id seen lately, 202 "
    "and nothing published), refused (4xx, nothing published) or unavailable (503)",
    ["type", "outcome"],
)
API_DURATION = Histogram(
    "keel_api_request_duration_seconds",
    "Query API request durations by route template (e.g. /customers/{customer_id}) and "
    "HTTP status; includes forwarding to the worker that owns the customer",
    ["route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

OUTCOMES = ("applied", "duplicate", "held", "dead_letter")


def declare_inputs(topics: Iterable[str]) -> None:
    """Export ``keel_events_total`` at 0 for every input topic and outcome from the start.

    A labelled series that first appears at 1 looks like no increase to ``increase()`` and
    ``rate()``: the first dead letter after a start would not fire KeelDeadLetters.
    """
    for topic in topics:
        for outcome in OUTCOMES:
            EVENTS.labels(topic, outcome)


_event_counters: dict[tuple[str, str], Any] = {}


def count_event(topic: str, outcome: str) -> None:
    """``keel_events_total{topic, outcome}`` + 1 (its series looked up once, not per event)."""
    counter = _event_counters.get((topic, outcome))
    if counter is None:
        counter = _event_counters[topic, outcome] = EVENTS.labels(topic, outcome)
    counter.inc()


_newest_ms: dict[str, int] = {}


def observe_source(source: str, occurred_at_ms: int) -> None:
    """Remember the newest event time per source system (for ``keel_source_lag_seconds``)."""
    if occurred_at_ms > _newest_ms.get(source, -1):
        _newest_ms[source] = occurred_at_ms


_source_labels: set[str] = set()


def source_label(source: str) -> str:
    """``source`` as a label value: itself for the first MAX_SOURCE_LABELS seen, else other."""
    if source in _source_labels:
        return source
    if len(_source_labels) < MAX_SOURCE_LABELS:
        _source_labels.add(source)
        return source
    return "other"


def observe_applied(applied: Iterable[tuple[str, int, int | None]], now_s: float) -> None:
    """Events whose effect became queryable at ``now_s``: (source, occurred_at ms, Kafka
    append time ms or None) each."""
    for source, occurred_at_ms, appended_ms in applied:
        label = source_label(source)
        FRESHNESS.labels(label).observe(max(0.0, now_s - occurred_at_ms / 1000))
        if appended_ms is not None:
            APPLY_LAG.labels(label).observe(max(0.0, now_s - appended_ms / 1000))
        observe_source(source, occurred_at_ms)


@dataclass
class Snapshot:
    """The worker's current state as streams/worker/monitoring.py last measured it.

    ``None`` means "not measured yet": the metric is left out rather than reported as 0,
    so a restarting worker does not draw a drop to zero customers on the dashboard.
    """

    #: (topic, partition) -> records after the committed offset, for assigned partitions
    consumer_lag: dict[tuple[str, int], int] | None = None
    customers: int | None = None
    signals: dict[str, int] | None = None
    #: wall-clock time of the last completed table census
    census_at: float | None = None
    #: callables answering at scrape time; set by streams/worker/monitoring.py
    ready: Callable[[], bool] | None = None
    rebalances: Callable[[], int] | None = None


snapshot = Snapshot()


class _SnapshotCollector(Collector):
    """Exports ``snapshot`` and the per-source lag, computed when Prometheus scrapes.

    A custom collector rather than labelled Gauges: series of partitions this worker no
    longer owns, or of stale sources, disappear with the next scrape instead of lingering
    with their last value.
    """

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        lag = GaugeMetricFamily(
            "keel_source_lag_seconds",
            "Seconds since the newest occurred_at this worker has applied from each source "
            "system (now minus newest event time). Grows when a department stops sending or "
            "keel stops applying its events; each worker sees only its own partitions, so "
            "take the minimum across workers",
            labels=["source"],
        )
        for source, ms in sorted(_newest_ms.items()):
            lag.add_metric([source], now - ms / 1000)
        yield lag

        consumer = GaugeMetricFamily(
            "keel_consumer_lag_records",
            "Records in each input or internal topic partition assigned to this worker that "
            "are not processed and committed yet (end offset minus committed offset), "
            "refreshed every few seconds",
            labels=["topic", "partition"],
        )
        for (topic, partition), records in sorted((snapshot.consumer_lag or {}).items()):
            consumer.add_metric([topic, str(partition)], records)
        yield consumer

        if snapshot.customers is not None:
            yield GaugeMetricFamily(
                "keel_customers",
                "Customers in the table partitions this worker owns (counted in the "
                "background after every rebalance and at least every 15 s)",
                value=snapshot.customers,
            )
        if snapshot.signals is not None:
            signals = GaugeMetricFamily(
                "keel_signals_active",
                "Active signals by type on the customers this worker owns (counted with "
                "keel_customers)",
                labels=["type"],
            )
            for kind, count in sorted(_with_known_types(snapshot.signals).items()):
                signals.add_metric([kind], count)
            yield signals
        if snapshot.census_at is not None:
            yield GaugeMetricFamily(
                "keel_table_census_age_seconds",
                "Seconds since keel_customers, keel_signals_active and keel_held_events "
                "were last recounted from the tables",
                value=now - snapshot.census_at,
            )
        if snapshot.ready is not None:
            yield GaugeMetricFamily(
                "keel_worker_ready",
                "1 when this worker's tables are recovered and it owns its partitions (what "
                "/readyz answers 200 for), 0 while it starts, recovers or rebalances",
                value=1.0 if snapshot.ready() else 0.0,
            )
        if snapshot.rebalances is not None:
            yield CounterMetricFamily(
                "keel_rebalances",
                "Consumer group rebalances this worker went through since it started; "
                "steady increase means workers keep joining and leaving",
                value=snapshot.rebalances(),
            )


def _with_known_types(counts: Mapping[str, int]) -> dict[str, int]:
    return {**dict.fromkeys(SIGNAL_TYPES, 0), **counts}


REGISTRY.register(_SnapshotCollector())
