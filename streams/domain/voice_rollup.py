"""voice.v1's windows kept up to date per fact and per clock tick, instead of recounted.

:func:`streams.domain.voice.topic_record` recounts a topic's windows from every fact; the
voice owner used to call it for every topic a second's batches touched, a pass over all
facts each time, so its cost grew with the facts (and stalled the event loop as they
accumulated). A :class:`Rollup` holds, per topic and window, the sums voice.v1 shows — counts,
kinds, open complaints, resolve times, products, channels — and changes them by one fact's
contribution when a fact arrives, changes or goes, or when the clock moves a fact from one
window to the next. A record then costs what it shows, not what is stored.

Windows are the ones ``topic_record`` uses: a fact opened at ``t`` is, for a window of length
``W`` at time ``now``, *ahead* (``t > now``), in the *current* window (``now - W < t <= now``),
in the *previous* one (``now - 2W < t <= now - W``) or *gone*. As ``now`` grows it passes
through them in that order, at ``t``, ``t + W`` and ``t + 2W``; a heap holds each fact's next
such instant. ``tests/unit/test_voice_rollup.py`` holds ``record`` equal to ``topic_record``
over random facts, changes, removals and clock moves.

    rollup = Rollup(now_ms)
    rollup.put(fact)                  # new or changed (the fact of its contact_id is replaced)
    rollup.remove(contact_id)
    changed = rollup.advance(now_ms)  # topics whose windows moved on
    rollup.record(topic)              # == voice.topic_record(facts, topic, now_ms)
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Iterable, Mapping
from typing import Any

from streams.domain.voice import KINDS, WINDOWS

AHEAD, CURRENT, PREVIOUS, GONE = 0, 1, 2, 3
_LENGTHS = tuple(WINDOWS.values())


def phase(opened: int, now: int, length: int) -> int:
    """Where a fact opened at ``opened`` is for a window of ``length`` ending at ``now``.

    >>> [phase(t, 100, 10) for t in (101, 100, 91, 90, 81, 80)]
    [0, 1, 1, 2, 2, 3]
    """
    if opened > now:
        return AHEAD
    if opened > now - length:
        return CURRENT
    if opened > now - 2 * length:
        return PREVIOUS
    return GONE


def _next_change(opened: int, phases: tuple[int, ...]) -> int | None:
    """The first instant at which one of the fact's phases changes (None: gone everywhere)."""
    times = [opened + (p * length if p < PREVIOUS else 2 * length)
             for p, length in zip(phases, _LENGTHS, strict=True) if p != GONE]  # fmt: skip
    return min(times) if times else None


def _add(counts: dict[str, int], key: str, n: int) -> None:
    total = counts.get(key, 0) + n
    if total:
        counts[key] = total
    else:
        counts.pop(key, None)


class _Window:
    """The sums of one topic's window: what voice.v1 shows of its current window, and the
    previous window's count."""

    __slots__ = ("count", "previous", "kinds", "open_complaints", "resolve_s", "products",
                 "channels")  # fmt: skip

    def __init__(self) -> None:
        self.count = 0
        self.previous = 0
        self.kinds: dict[str, int] = {}
        self.open_complaints = 0
        self.resolve_s: list[float] = []
        self.products: dict[str, int] = {}
        self.channels: dict[str, int] = {}

    def take(self, fact: Mapping[str, Any], where: int, n: int) -> None:
        """Add (``n`` = 1) or take away (-1) one fact's part, in the window's phase ``where``."""
        if where == PREVIOUS:
            self.previous += n
            return
        if where != CURRENT:
            return
        self.count += n
        _add(self.kinds, fact["kind"], n)
        if fact["kind"] == "COMPLAINT" and fact["open"]:
            self.open_complaints += n
        resolved = fact["resolved_at"]
        if resolved is not None and resolved >= fact["opened_at"]:
            seconds = (resolved - fact["opened_at"]) / 1000
            if n > 0:
                insort(self.resolve_s, seconds)
            else:
                del self.resolve_s[bisect_left(self.resolve_s, seconds)]
        for sku in fact["skus"]:
            _add(self.products, sku, n)
        _add(self.channels, fact["channel"], n)

    def median_resolve_s(self) -> float | None:
        values, n = self.resolve_s, len(self.resolve_s)
        if not n:
            return None
        mid = values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2
        return round(mid, 1)


class Rollup:
    """Every topic's windows, kept by fact (see the module docstring)."""

    def __init__(self, now_ms: int, facts: Iterable[Mapping[str, Any]] = ()) -> None:
        self.now = now_ms
        #: contact_id -> (the fact counted, its phase per window, its version)
        self._facts: dict[str, tuple[Mapping[str, Any], tuple[int, ...], int]] = {}
        #: topic -> one _Window per window of WINDOWS, in that order
        self._topics: dict[str, list[_Window]] = {}
        #: (instant, contact_id, version): when a fact's phase changes next
        self._due: list[tuple[int, str, int]] = []
        self._version = 0
        for fact in facts:
            self.put(fact)

    def topics(self) -> list[str]:
        """Every topic with a fact not yet gone from every window, sorted."""
        return sorted({fact["topic"] for fact, phases, _ in self._facts.values()
                       if any(p != GONE for p in phases)})  # fmt: skip

    def put(self, fact: Mapping[str, Any]) -> set[str]:
        """Count ``fact`` (replacing the contact's earlier one); the topics it changed."""
        changed = self.remove(fact["contact_id"])
        phases = tuple(phase(fact["opened_at"], self.now, length) for length in _LENGTHS)
        self._version += 1
        self._facts[fact["contact_id"]] = (fact, phases, self._version)
        self._count(fact, phases, 1)
        self._schedule(fact, phases, self._version)
        if any(p != GONE for p in phases):
            changed.add(fact["topic"])
        return changed

    def remove(self, contact_id: str) -> set[str]:
        """Stop counting the contact's fact; the topics that changed."""
        held = self._facts.pop(contact_id, None)
        if held is None:
            return set()
        fact, phases, _ = held
        self._count(fact, phases, -1)
        return {fact["topic"]} if any(p != GONE for p in phases) else set()

    def advance(self, now_ms: int) -> set[str]:
        """Move the clock to ``now_ms``; the topics whose windows changed. A clock that went
        back recounts every fact at the new time (facts gone from every window are kept for
        that, uncounted and off the heap)."""
        if now_ms < self.now:
            facts = [fact for fact, _, _ in self._facts.values()]
            self.__init__(now_ms, facts)  # type: ignore[misc]
            return {fact["topic"] for fact in facts}
        self.now = now_ms
        changed: set[str] = set()
        while self._due and self._due[0][0] <= now_ms:
            _, contact_id, version = heapq.heappop(self._due)
            held = self._facts.get(contact_id)
            if held is None or held[2] != version:
                continue  # replaced or removed since
            fact, old, _ = held
            new = tuple(phase(fact["opened_at"], now_ms, length) for length in _LENGTHS)
            self._count(fact, old, -1)
            changed.add(fact["topic"])
            self._facts[contact_id] = (fact, new, version)
            self._count(fact, new, 1)
            self._schedule(fact, new, version)
        return changed

    def record(self, topic: str) -> dict[str, Any]:
        """The voice.v1 value of ``topic`` at the rollup's clock (schema VoiceTopic)."""
        windows = self._topics.get(topic) or [_Window() for _ in _LENGTHS]
        return {"topic": topic, "as_of": self.now, "windows": [
            {
                "window": name,
                "count": w.count,
                "previous": w.previous,
                "kinds": {k: w.kinds.get(k, 0) for k in KINDS},
                "open_complaints": w.open_complaints,
                "median_resolve_s": w.median_resolve_s(),
                "products": dict(w.products),
                "channels": dict(w.channels),
            }
            for name, w in zip(WINDOWS, windows, strict=True)
        ]}  # fmt: skip

    def _count(self, fact: Mapping[str, Any], phases: tuple[int, ...], n: int) -> None:
        windows = self._topics.get(fact["topic"])
        if windows is None:
            windows = self._topics[fact["topic"]] = [_Window() for _ in _LENGTHS]
        for window, where in zip(windows, phases, strict=True):
            window.take(fact, where, n)

    def _schedule(self, fact: Mapping[str, Any], phases: tuple[int, ...], version: int) -> None:
        when = _next_change(fact["opened_at"], phases)
        if when is not None:
            heapq.heappush(self._due, (when, fact["contact_id"], version))
