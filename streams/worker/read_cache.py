"""Table values as stored, decoded, kept for the next batch that reads them.

A batch reads ~5.5 table keys per input event (the customer's state, the references it
names, whether they are held or erased …); each read was a RocksDB get and a JSON decode,
10 % of the join thread's time under live traffic. The join agent is the tables' only writer
(streams/worker/checkpoint.py step 4), so what it stored is what RocksDB holds: this cache
keeps each value it read or stored — ``None`` for a key that is not there, the commonest
answer for the erased and held tables — and a later read is a dict lookup.

It holds only what is stored: a batch's writes enter once step 4 wrote them, never before,
so a batch that is not stored (a crash, a rebalance, Kafka refusing its records) leaves
nothing behind. It is emptied whenever the group's generation changes (faust restores tables
under a new assignment, not through keel), and whenever a batch is not stored (its
handlers may have read values they then changed in place). Bounded by
``KEEL_READ_CACHE_MB``, least recently used first out; a value's size is estimated from its
stored bytes: decoded Python objects take 5-6 times their JSON (customer states of the
200,000-event bench, ``sys.getsizeof`` summed over each object: p50 5.2, p90 6.0 times).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

MISS = object()
#: decoded Python objects per byte of their JSON (p90 measured), and what an entry costs
#: besides its value
_DECODED_PER_BYTE = 6
_ENTRY = 200


class ReadCache:
    """``(table, key) -> stored value`` of what the join read or stored, within a byte budget."""

    __slots__ = ("budget", "generation", "_rows", "_size", "hits", "misses")

    def __init__(self, budget: int) -> None:
        self.budget = budget
        #: the consumer generation the entries belong to (None: not yet any)
        self.generation: int | None = None
        self._rows: OrderedDict[tuple[int, str], tuple[Any, int]] = OrderedDict()
        self._size = 0
        self.hits = self.misses = 0

    def follow(self, generation: int) -> None:
        """Forget everything when the group's generation is not the entries' one."""
        if generation != self.generation:
            self.clear()
            self.generation = generation

    def get(self, table: Any, key: str) -> Any:
        """The stored value (None: not stored), or :data:`MISS` if it is not cached."""
        row = self._rows.get((id(table), key))
        if row is None:
            self.misses += 1
            return MISS
        self._rows.move_to_end((id(table), key))
        self.hits += 1
        return row[0]

    def put(self, table: Any, key: str, value: Any, stored_bytes: int) -> None:
        """Remember ``value`` (None: no such key) as stored, ``stored_bytes`` long."""
        if self.budget <= 0:
            return
        where = (id(table), key)
        size = _ENTRY + _DECODED_PER_BYTE * stored_bytes
        old = self._rows.pop(where, None)
        if old is not None:
            self._size -= old[1]
        self._rows[where] = (value, size)
        self._size += size
        while self._size > self.budget and self._rows:
            _, (_, dropped) = self._rows.popitem(last=False)
            self._size -= dropped

    def clear(self) -> None:
        self._rows.clear()
        self._size = 0

    def __len__(self) -> int:
        return len(self._rows)

    def items(self) -> list[tuple[tuple[int, str], Any]]:
        """``((id of the table, key), value)`` of every entry (what tests check against the
        stored rows)."""
        return [(where, row[0]) for where, row in self._rows.items()]
