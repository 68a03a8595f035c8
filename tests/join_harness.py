"""The worker's real join agent on in-memory tables and topics, with an adversarial scheduler.

What runs is streams/worker/agent.py's :func:`~streams.worker.agent.handle_batch` (so every
handler of ``agents.HANDLERS``: streams/worker/customers.py, references.py, unmatched.py) on
a real :class:`streams.worker.checkpoint.Transaction`, made durable by the real
:func:`streams.worker.checkpoint.commit`. Only the edges are stand-ins:

- the tables: one dict, read by ``tables.read`` and written by ``tables.write`` (orjson in
  between, like RocksDB), patched while a run lasts; the join's read cache
  (streams/worker/read_cache.py) runs for real above them, checked against the dict after
  every batch, and emptied by a crash as a new process would start empty;
- Kafka: every internal record goes to a FIFO per (topic, partition), as Kafka keeps one
  partition in order; the intake's first hop (streams/worker/intake.py ``first_hop``) is how an
  input event enters, one record each;
- the clock (streams/worker/clock.py ``now_ms``), which moves by a random step per batch, and
  the signal timer, which sends a recheck for every customer whose due time passed, from a
  :class:`streams.worker.due_index.DueIndex` kept after every stored batch, as ``signal_clock``.

A seeded random scheduler picks each batch: records from the heads of one or several
partitions' FIFOs, up to a few of each, interleaved with the next input events, so messages
of different partitions overtake each other in any way a deployment could produce. It also
*crashes* batches: before anything was produced (the batch is lost), or after its outputs
were confirmed but before its table writes (:mod:`streams.worker.checkpoint` step 3 fails); either
way its input records are delivered again, as faust would after a restart.

    >>> from tests.builders import order
    >>> run = Worker(seed=1).run([order("c-1", "o-1")], until_ms=0)
    >>> [o["order_id"] for o in run.views()["c-1"]["orders"]]
    ['o-1']
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.domain.join import NAMESPACES
from streams.domain.signals import DEFAULT_WINDOWS, Windows
from streams.domain.state import DEFAULT_LIMITS, Limits, State, view
from streams.domain.unmatched import UNMATCHED_KEY, page
from streams.encoding.codec import get_codec
from streams.worker import agent as agents
from streams.worker import checkpoint, clock, emit, params, tables
from streams.worker.due_index import DueIndex
from streams.worker.intake import first_hop

KindEvent = tuple[str, dict[str, Any]]

TOPIC_OF_KIND = {"order": "orders.v1", "shipment": "shipments.v1", "contact": "contacts.v1",
                 "erasure": "erasures.v1"}  # fmt: skip
NAMES = {"customer": emit.CUSTOMER_EVENTS, **emit.REF_TOPIC}
ASSIGN = emit.CUSTOMER_EVENTS
INTERNAL = set(NAMES.values())


class _Crash(Exception):
    """A simulated crash between a batch's confirmed outputs and its table writes."""


@dataclass
class _Message:
    topic: str
    partition: int
    key: None = None
    offset: int = -1


@dataclass
class _Record:
    message: _Message
    value: bytes


class _Outbox:
    """What Kafka would take: records held until :meth:`confirmed` delivers them."""

    def __init__(self, worker: Worker, fail: bool = False) -> None:
        self.worker, self.fail = worker, fail
        self.offsets: dict[tuple[str, int], int] = {}
        self._pending: list[tuple[str, Any, Any, int | None]] = []

    def produce(self, topic: str, key: Any, value: Any, headers: Any = None,
                partition: int | None = None) -> None:  # fmt: skip
        if self.fail:
            raise _Crash("the worker died while it wrote the changelogs")
        self._pending.append((topic, key, value, partition))
        self.offsets[(topic, partition or 0)] = 0

    async def confirmed(self) -> None:
        for topic, key, value, partition in self._pending:
            self.worker._delivered(topic, key, value, partition)
        self._pending.clear()


class _Emitter:
    def __init__(self, worker: Worker, fail: bool) -> None:
        self.worker, self.fail = worker, fail

    def outbox(self) -> _Outbox:
        return _Outbox(self.worker, self.fail)


@dataclass
class Worker:
    """One worker's join agent on dicts and FIFOs, driven by a seeded adversarial scheduler."""

    seed: int
    limits: Limits = DEFAULT_LIMITS
    windows: Windows = DEFAULT_WINDOWS
    start_ms: int = 0
    max_step_ms: int = 0
    timer_ms: int = 10_000
    crash_rate: float = 0.0
    max_batches: int | None = None  # a run that takes more is stuck (messages going round)
    rows: dict[tuple[str, str], bytes] = field(default_factory=dict)
    signals: list[dict[str, Any]] = field(default_factory=list)  # customer-signals.v1
    published: list[dict[str, Any]] = field(default_factory=list)  # customer-state.v1
    deadletters: list[tuple[Any, Any]] = field(default_factory=list)
    held_seen: int = 0  # the most messages ever held at once (was the hold path taken?)
    batches: int = 0
    crashes: int = 0

    def __post_init__(self) -> None:
        self.now = self.start_ms
        self._rng = random.Random(self.seed)
        self._queues: dict[tuple[str, int], deque[bytes]] = {}
        self.due_index = DueIndex()

    # --- driving it ----------------------------------------------------------------------

    def run(self, events: Iterable[KindEvent], until_ms: int) -> Worker:
        """Feed ``events`` in this order, interleaved with internal messages; drain them; then
        let the clock reach ``until_ms``, fire the timer and drain what that sends.

        Returns the worker, so runs chain: ``run(first, t).run(later, t)`` delivers every
        consequence of ``first`` before any event of ``later`` arrives.
        """
        with self._patched():
            asyncio.run(self._run(deque(events), until_ms))
        return self

    def views(self) -> dict[str, dict[str, Any]]:
        """Every customer's public CustomerState, as stored."""
        return {key: view(state) for key, state in sorted(self.table("customers").items())}

    def table(self, name: str) -> dict[str, Any]:
        return {k: orjson.loads(v) for (t, k), v in self.rows.items() if t == name}

    def unmatched(self) -> list[dict[str, Any]]:
        """``GET /unmatched``: every open unmatched contact, by contact id."""
        table = self.table("unmatched")
        rows = [v for k, v in table.items() if k.startswith("k:")]
        return page(rows, None, len(rows) + 1, table)[0]

    def held_messages(self) -> list[dict[str, Any]]:
        """Every message waiting in a held table."""
        return [m for ns in NAMESPACES for v in self.table(f"{ns}-held").values() for m in v]

    def held_count(self) -> int:
        return len(self.held_messages())

    # --- the loop ------------------------------------------------------------------------

    async def _run(self, inputs: deque[KindEvent], until_ms: int) -> None:
        while inputs or self._queues:
            before = self.now
            self.now = min(until_ms, before + self._rng.randint(0, self.max_step_ms))
            if self.now // self.timer_ms > before // self.timer_ms:
                self._timer()
            while inputs and (not self._queues or self._rng.random() < 0.3):
                kind, event = inputs.popleft()
                if kind == "assign":  # an agent's assign_contact (streams/api/unmatched.py)
                    topic, key = ASSIGN, UNMATCHED_KEY
                    message = {"kind": "assign", "command": event}
                else:
                    topic, key, message = first_hop(kind, event, TOPIC_OF_KIND[kind], NAMES)
                self._send(topic, key, message)
            if self._queues:
                if self.max_batches is not None and self.batches >= self.max_batches:
                    raise AssertionError(f"still busy after {self.batches} batches")
                await self._batch()
        self.now = max(self.now, until_ms)
        if self._timer():
            await self._run(deque(), until_ms)

    async def _batch(self) -> None:
        """One batch: the heads of some partitions' FIFOs, maybe crashed (then read again)."""
        queues = sorted(self._queues)
        picked = self._rng.sample(queues, self._rng.randint(1, min(3, len(queues))))
        heads: list[deque[tuple[tuple[str, int], bytes]]] = []
        for where in picked:
            fifo = self._queues[where]
            n = min(len(fifo), self._rng.randint(1, 3))
            heads.append(deque((where, fifo.popleft()) for _ in range(n)))
            if not fifo:
                del self._queues[where]
        taken: list[tuple[tuple[str, int], bytes]] = []
        while heads:  # a random merge: partitions interleave, each one's records in order
            head = self._rng.choice(heads)
            taken.append(head.popleft())
            if not head:
                heads = [h for h in heads if h is not head]
        records = [_Record(_Message(t, p), value) for (t, p), value in taken]
        crash = self._rng.random() < self.crash_rate
        crash_late = crash and self._rng.random() < 0.5
        tx = checkpoint.Transaction(_Outbox(self))  # type: ignore[arg-type]
        await agents.handle_batch(tx, records)  # type: ignore[arg-type]
        self.batches += 1
        stored = False
        if not crash or crash_late:
            try:
                emitter = _Emitter(self, fail=crash_late)
                stored = await checkpoint.commit(tx, emitter, lambda: True)  # type: ignore[arg-type]
            except _Crash:
                stored = False
        if stored:
            for customer_id, when in tx.written(tables.due):
                self.due_index.note(customer_id, when)
            for customer_id, state in tx._published.items():  # None: a tombstone
                self.published.append(
                    {"customer_id": customer_id, "tombstone": True} if state is None
                    else view(state) | {"customer_id": customer_id}
                )  # fmt: skip
        else:  # a crash: faust delivers the batch's records again after the restart
            checkpoint.read_cache.clear()  # a new process: nothing in memory
            self.crashes += 1
            for where, value in reversed(taken):
                self._queues.setdefault(where, deque()).appendleft(value)
        self._check_read_cache()
        self.held_seen = max(self.held_seen, self.held_count())

    def _timer(self) -> int:
        """``signal_clock``: ask each customer whose next check has come to re-check."""
        customer_ids = self.due_index.take(self.now, float(self.batches))
        for customer_id in customer_ids:
            self._send(emit.CUSTOMER_EVENTS, customer_id, {"kind": "recheck"})
        return len(customer_ids)

    # --- the stand-ins -------------------------------------------------------------------

    def _send(self, topic: str, key: str, message: dict[str, Any]) -> None:
        where = (topic, tables.partition_of(key))
        self._queues.setdefault(where, deque()).append(orjson.dumps([[key, message]]))

    def _delivered(self, topic: str, key: Any, value: Any, partition: int | None) -> None:
        if topic in INTERNAL:
            assert partition is not None
            self._queues.setdefault((topic, partition), deque()).append(value)
        elif topic == emit.SIGNAL_TOPIC:
            self.signals.append(get_codec().decode(value, "CustomerSignal"))
        elif topic == emit.DEADLETTER_TOPIC:
            self.deadletters.append((key, value))

    def _read(self, table: Any, partition: int, key: str) -> tuple[Any, int]:
        raw = self.rows.get((table.name, key))
        return (None, 0) if raw is None else (orjson.loads(raw), len(raw))

    def _check_read_cache(self) -> None:
        """Every value the join's read cache holds is what is stored (nothing it read was
        changed in place, nothing of a batch that was not stored is in it)."""
        names = {id(t): t.name for t in tables.TABLES}
        for (table, key), value in checkpoint.read_cache.items():
            raw = self.rows.get((names[table], key))
            assert value == (None if raw is None else orjson.loads(raw)), (names[table], key)

    def _write(self, table: Any, partition: int, changed: list, offset: int) -> None:
        for key, value in changed:
            if value is None:
                self.rows.pop((table.name, key.decode()), None)
            else:
                self.rows[(table.name, key.decode())] = value

    @contextlib.contextmanager
    def _patched(self) -> Iterator[None]:
        saved = (tables.read, tables.write, clock.now_ms, params.windows, params.limits,
                 clock.event_clock)  # fmt: skip
        tables.read, tables.write = self._read, self._write  # type: ignore[assignment]
        clock.now_ms = lambda: self.now  # type: ignore[assignment]
        params.windows, params.limits, clock.event_clock = self.windows, self.limits, {}
        checkpoint.read_cache.clear()  # another worker's process
        try:
            yield
        finally:
            (tables.read, tables.write, clock.now_ms, params.windows, params.limits,
             clock.event_clock) = saved  # type: ignore[assignment]  # fmt: skip


def assign(command_id: str, contact_id: str, customer_id: str, at: int = 0,
           agent: str = "rep-7", reason: str = "called back") -> KindEvent:
    """An agent's assign_contact, as the HTTP side publishes it."""
    return "assign", {"command_id": command_id, "contact_id": contact_id,
                      "customer_id": customer_id, "agent": agent, "reason": reason,
                      "requested_at": at}  # fmt: skip


def stored_state(worker: Worker, customer_id: str) -> State | None:
    return worker.table("customers").get(customer_id)
