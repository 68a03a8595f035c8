"""An in-memory index of the signal-due table by due time, so the signal clock never scans.

The join agent writes the due table (customer -> when its time-based signals next change);
the signal clock (streams/worker/timers.py ``signal_clock``) asks for the customers whose time
has come. Listing the whole table every tick costs O(customers) on the event loop; this index
costs O(log n) per write and O(due) per tick:

- :meth:`DueIndex.note` after every stored batch, for each due key it wrote (None: deleted);
- :meth:`DueIndex.take` at every tick: at most ``limit`` customers whose time has come,
  earliest first, each once per due time; one whose recheck did not move its due time within
  ``resend_after_s`` (lost with a crashed batch) is offered again;
- :meth:`DueIndex.rebuild` from one scan of the table after the partitions were (re)assigned.

Stale heap entries (a due time that moved or was deleted) are dropped lazily: an entry counts
only while ``current[customer]`` still equals its time.

    >>> index = DueIndex()
    >>> index.note("c-1", 50); index.note("c-2", 5)
    >>> index.take(now_ms=10, now_s=0.0)
    ['c-2']
    >>> index.take(now_ms=10, now_s=1.0)  # on its way: not again every tick
    []
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable


class DueIndex:
    """Due times by customer, and a heap of them (see the module doc)."""

    def __init__(self) -> None:
        self.current: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        #: customer -> (due time its recheck was sent for, monotonic s it was sent)
        self._sent: dict[str, tuple[int, float]] = {}
        self.generation: int | None = None
        #: what :meth:`note` saw while a rebuild's scan ran (newer than the scan may be)
        self._during: dict[str, int | None] | None = None

    def __len__(self) -> int:
        return len(self.current)

    def note(self, customer_id: str, when: int | None) -> None:
        if self._during is not None:
            self._during[customer_id] = when
        if when is None:
            self.current.pop(customer_id, None)
            self._sent.pop(customer_id, None)
            return
        if self.current.get(customer_id) == when:
            return
        self.current[customer_id] = when
        self._sent.pop(customer_id, None)
        heapq.heappush(self._heap, (when, customer_id))
        if len(self._heap) > 2 * len(self.current) + 1024:  # mostly stale: compact
            self._heap = [(w, c) for c, w in self.current.items()]
            heapq.heapify(self._heap)

    def begin_rebuild(self) -> None:
        """A scan of the table starts; :meth:`rebuild` ends it (writes noted meanwhile win)."""
        self._during = {}

    def rebuild(self, items: Iterable[tuple[str, int]], generation: int | None = None) -> None:
        """Start again from the table's rows (after an assignment)."""
        during, self._during = self._during or {}, None
        self.current = dict(items)
        for customer_id, when in during.items():
            if when is None:
                self.current.pop(customer_id, None)
            else:
                self.current[customer_id] = when
        self._heap = [(w, c) for c, w in self.current.items()]
        heapq.heapify(self._heap)
        self._sent.clear()
        self.generation = generation

    def take(
        self, now_ms: int, now_s: float, limit: int = 10_000, resend_after_s: float = 60.0
    ) -> list[str]:
        """Customers whose due time passed and whose recheck is not already on its way."""
        out: list[str] = []
        for customer_id, (when, at) in list(self._sent.items()):
            if now_s - at >= resend_after_s:  # lost? offer it again
                del self._sent[customer_id]
                if self.current.get(customer_id) == when:
                    heapq.heappush(self._heap, (when, customer_id))
        while self._heap and len(out) < limit and self._heap[0][0] <= now_ms:
            when, customer_id = heapq.heappop(self._heap)
            if self.current.get(customer_id) != when or customer_id in self._sent:
                continue  # stale, or already on its way
            self._sent[customer_id] = (when, now_s)
            out.append(customer_id)
        return out

    def unsent(self, customer_ids: Iterable[str]) -> None:
        """The rechecks of ``customer_ids`` could not be sent: offer them at the next tick."""
        for customer_id in customer_ids:
            sent = self._sent.pop(customer_id, None)
            if sent is not None and self.current.get(customer_id) == sent[0]:
                heapq.heappush(self._heap, (sent[0], customer_id))
