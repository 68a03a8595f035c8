"""Prometheus metrics of the stream worker (served on the API's ``/metrics``).

Names follow Prometheus conventions: a ``keel_`` prefix, base units, ``_total`` for
counters, ``_seconds`` for durations.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "keel_events_total",
    "Input events by topic and outcome (applied, duplicate, held, dead_letter)",
    ["topic", "outcome"],
)
FRESHNESS = Histogram(
    "keel_event_freshness_seconds",
    "From an event's occurred_at to the moment its effect is queryable",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
SOURCE_NEWEST = Gauge(
    "keel_source_newest_event_timestamp_seconds",
    "Newest occurred_at seen per department system (lag = time() - this)",
    ["source"],
)
HELD = Gauge("keel_held_events", "Events waiting for an order or identity to become known")
STATE_PUBLISHED = Counter(
    "keel_state_published_total", "CustomerState records published to customer-state.v1"
)

_newest_ms: dict[str, int] = {}


def observe_source(source: str, occurred_at_ms: int) -> None:
    """Remember the newest event time per source system (for ``keel_source_lag``)."""
    if occurred_at_ms > _newest_ms.get(source, -1):
        _newest_ms[source] = occurred_at_ms
        SOURCE_NEWEST.labels(source).set(occurred_at_ms / 1000)
