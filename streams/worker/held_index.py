"""An in-memory index of the held tables by hold time, so the held-event clock never scans.

A held event expires (streams/domain/join.py ``expired_held``) once it has waited KEEL_HOLD_MAX_S by
its reference partition's event time *and* by the wall clock. The wall-clock half only ever
becomes true, so rows are kept in a heap by the earliest wall-clock hold time among their
messages that can expire; a tick moves the rows whose time has come to a *ripe* set and
checks only those against their partition's event time. With the default of 7 days nothing
is ripe in normal operation and a tick costs O(1), where the scan it replaces cost every held
row, JSON-decoded, every 10 s on the event loop.

- :meth:`HeldIndex.note` after every stored batch, for each held row it wrote (None: deleted);
- :meth:`HeldIndex.take` at every tick: ``(ns, ref, before)`` like ``held_expiry``;
- :meth:`HeldIndex.rebuild` from one scan of the held tables after an assignment.

    >>> m = {"kind": "shipment", "event": {"order_id": "o-1", "occurred_at": 0},
    ...      "held_at": 0, "held_wall": 100}
    >>> index = HeldIndex()
    >>> index.note("order", "o-1", [m])
    >>> index.take(lambda ns, ref: 50, hold_max_ms=10, wall_now_ms=105)  # not held 10 ms yet
    []
    >>> index.take(lambda ns, ref: 50, hold_max_ms=10, wall_now_ms=111)
    [('order', 'o-1', 40)]
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable

from streams.domain.join import chain_starts_at

Key = tuple[str, str]
#: (held_at, held_wall) of each message of a row that can expire
Clocks = tuple[tuple[int, int], ...]


def row_clocks(ns: str, ref: str, waiting: list[dict] | None) -> Clocks:
    """The hold times of the messages of a held row that :func:`expired_held` may expire."""
    out = []
    for m in waiting or ():
        if m.get("unmatched"):  # never expires (streams/domain/unmatched.py)
            continue
        if m.get("placed_on") or chain_starts_at(ns, ref, m):
            held_at = m.get("held_at", m["event"]["occurred_at"])
            out.append((held_at, m.get("held_wall", held_at)))
    return tuple(out)


class HeldIndex:
    """Hold times by held row, a heap of their earliest wall-clock time, and the ripe rows."""

    def __init__(self) -> None:
        self.current: dict[Key, Clocks] = {}
        self._heap: list[tuple[int, str, str]] = []
        #: rows held long enough by the wall clock: checked against event time every tick
        self.ripe: set[Key] = set()
        self.generation: int | None = None
        self._during: dict[Key, Clocks] | None = None

    def __len__(self) -> int:
        return len(self.current)

    def note(self, ns: str, ref: str, waiting: list[dict] | None) -> None:
        clocks = row_clocks(ns, ref, waiting)
        if self._during is not None:
            self._during[(ns, ref)] = clocks
        self._set((ns, ref), clocks)

    def _set(self, key: Key, clocks: Clocks) -> None:
        if self.current.get(key, ()) == clocks:
            return
        self.ripe.discard(key)
        if not clocks:
            self.current.pop(key, None)
            return
        self.current[key] = clocks
        heapq.heappush(self._heap, (_earliest(clocks), *key))
        if len(self._heap) > 2 * len(self.current) + 1024:  # mostly stale: compact
            self._heapify()

    def _heapify(self) -> None:
        self._heap = [(_earliest(c), *key) for key, c in self.current.items()]
        heapq.heapify(self._heap)

    def begin_rebuild(self) -> None:
        """A scan of the tables starts; :meth:`rebuild` ends it (writes noted meanwhile win)."""
        self._during = {}

    def rebuild(
        self, rows: Iterable[tuple[str, str, list[dict]]], generation: int | None = None
    ) -> None:
        """Start again from the held tables' rows (after an assignment)."""
        during, self._during = self._during or {}, None
        self.current = {}
        self.ripe.clear()
        for ns, ref, waiting in rows:
            clocks = row_clocks(ns, ref, waiting)
            if clocks:
                self.current[(ns, ref)] = clocks
        for key, clocks in during.items():
            if clocks:
                self.current[key] = clocks
            else:
                self.current.pop(key, None)
        self._heapify()
        self.generation = generation

    def take(
        self,
        clock: Callable[[str, str], int | None],
        hold_max_ms: int,
        wall_now_ms: int,
        limit: int = 10_000,
    ) -> list[tuple[str, str, int]]:
        """``(ns, ref, before)`` of at most ``limit`` rows with something to expire now.

        ``clock(ns, ref)``: the event time of the partition of ``ref`` (None: nothing seen);
        ``before`` is that minus ``hold_max_ms``, the cutoff the ``expire`` carries. A row
        stays ripe until a batch rewrites it, so an expire that was lost is sent again.
        """
        wall_before = wall_now_ms - hold_max_ms
        while self._heap and self._heap[0][0] < wall_before:
            when, ns, ref = heapq.heappop(self._heap)
            clocks = self.current.get((ns, ref))
            if clocks and _earliest(clocks) == when:
                self.ripe.add((ns, ref))
        out = []
        for ns, ref in self.ripe:
            now = clock(ns, ref)
            if now is None:
                continue
            before = now - hold_max_ms
            if any(at < before and wall < wall_before for at, wall in self.current[(ns, ref)]):
                out.append((ns, ref, before))
                if len(out) >= limit:
                    break
        return out


def _earliest(clocks: Clocks) -> int:
    return min(wall for _, wall in clocks)
