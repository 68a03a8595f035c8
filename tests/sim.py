"""A pure in-memory run of keel's agents, so property tests can check routing + merge + signals.

It does what streams/agents.py does, with the same pure functions (streams.join.route /
add_held / new_refs, streams.state.apply_event / view, streams.signals.apply_signals /
next_check_ms), but with dicts for the tables and queues for the topics:

- ``customers`` is the customers table; ``owners[ns]`` and ``held[ns]`` the reference tables.
- Every internal message (a customer event, a bind, an onward lookup) goes through a FIFO per
  (topic, key), as Kafka keeps one key's records in order, and a seeded random choice picks
  which FIFO, or the next input event, is served next. So internal messages interleave with
  each other and with the input in any way a real deployment could produce, reproducibly.
- Messages are JSON round-tripped like the agents' orjson bodies, so nothing is shared by
  reference between the input, the queues and the tables.
- The clock moves forward by a random step per message, up to ``until_ms``. Each time it
  passes a multiple of ``timer_ms`` the timer asks every customer whose ``next_check_ms`` has
  come to re-check, by a "recheck" message through customer-events like the worker's
  ``signal_clock``; once the queues are empty the timer fires once more at ``until_ms``.
- Signals as in ``apply_to_customer``/``recheck_signals``: after an event changed a state,
  ``apply_signals`` at the same clock and one version for both; a recheck that moves a
  signal is a change of its own; every stored state is re-scheduled in ``due``.

    >>> from tests.builders import order
    >>> sim = Pipeline(seed=1).run([order("c-1", "o-1")], until_ms=0)
    >>> [o["order_id"] for o in sim.views()["c-1"]["orders"]]
    ['o-1']
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.join import NAMESPACES, Route, add_held, new_refs, remove_held, route, unhold_refs
from streams.signals import DEFAULT_WINDOWS, Windows, apply_signals, next_check_ms
from streams.state import DEFAULT_LIMITS, Limits, State, apply_event, empty_state, view

KindEvent = tuple[str, dict[str, Any]]
Message = dict[str, Any]

TOPIC_OF_KIND = {"order": "orders.v1", "shipment": "shipments.v1", "contact": "contacts.v1"}
CUSTOMER_EVENTS = "customer-events"


def _refs_topic(ns: str) -> str:
    return f"{ns}-refs"


@dataclass
class Pipeline:
    """One worker's tables and topics, driven step by step by a seeded random scheduler."""

    seed: int
    limits: Limits = DEFAULT_LIMITS
    windows: Windows = DEFAULT_WINDOWS
    start_ms: int = 0
    max_step_ms: int = 0
    timer_ms: int = 10_000
    customers: dict[str, State] = field(default_factory=dict)
    owners: dict[str, dict[str, str]] = field(default_factory=lambda: {ns: {} for ns in NAMESPACES})
    held: dict[str, dict[str, list[Message]]] = field(
        default_factory=lambda: {ns: {} for ns in NAMESPACES}
    )
    due: dict[str, int] = field(default_factory=dict)  # customer -> next_check_ms
    signals: list[dict[str, Any]] = field(default_factory=list)  # customer-signals.v1
    published: list[dict[str, Any]] = field(default_factory=list)  # customer-state.v1
    released: int = 0  # held messages a bind sent on (how often the hold path was taken)

    def __post_init__(self) -> None:
        self.now = self.start_ms
        self._rng = random.Random(self.seed)
        self._queues: dict[tuple[str, str], deque[bytes]] = {}

    # --- driving it ----------------------------------------------------------------------

    def run(self, events: Iterable[KindEvent], until_ms: int) -> Pipeline:
        """Feed ``events`` in this order, interleaved with internal messages; drain them; then
        let the clock reach ``until_ms``, fire the timer and drain what that sends.

        Returns the pipeline, so runs chain: ``run(first, t).run(later, t)`` delivers every
        consequence of ``first`` before any event of ``later`` arrives.
        """
        inputs = deque(events)
        while inputs or self._queues:
            choices = sorted(self._queues)
            pick = self._rng.randrange(len(choices) + (1 if inputs else 0))
            before = self.now
            self.now = min(until_ms, before + self._rng.randint(0, self.max_step_ms))
            if self.now // self.timer_ms > before // self.timer_ms:
                self.timer()
            if pick == len(choices):
                kind, event = inputs.popleft()
                self._on_input(kind, orjson.loads(orjson.dumps(event)))
            else:
                self._deliver(choices[pick])
        if self.now < until_ms or self._due_now():
            self.now = max(self.now, until_ms)
            self.timer()
            self.run((), until_ms)
        return self

    def views(self) -> dict[str, dict[str, Any]]:
        """Every customer's public CustomerState, as customer-state.v1 last carried it."""
        return {customer_id: view(state) for customer_id, state in sorted(self.customers.items())}

    def timer(self) -> None:
        """``signal_clock``: ask each customer whose next check has come to re-check."""
        for customer_id in self._due_now():
            self._send(CUSTOMER_EVENTS, customer_id, {"kind": "recheck"})

    def _due_now(self) -> list[str]:
        return [customer_id for customer_id, at in sorted(self.due.items()) if at <= self.now]

    # --- the agents ----------------------------------------------------------------------

    def _on_input(self, kind: str, event: dict[str, Any]) -> None:
        """on_orders applies in place; on_shipments/on_contacts start the lookup chain."""
        topic = TOPIC_OF_KIND[kind]
        if kind == "order":
            self._apply_to_customer(event["customer_id"], kind, event)
            return
        r: Route = route(kind, event)
        message: Message = {"kind": kind, "event": event, "topic": topic}
        if r.customer_id is not None:
            self._forward(r.customer_id, message)
            return
        (ns, ref), *rest = r.refs
        self._lookup(ns, ref, {**message, "refs": rest})

    def _deliver(self, queue: tuple[str, str]) -> None:
        topic, key = queue
        fifo = self._queues[queue]
        m = orjson.loads(fifo.popleft())
        if not fifo:
            del self._queues[queue]
        if topic == CUSTOMER_EVENTS:
            if m["kind"] == "recheck":
                self._recheck_signals(key)
            else:
                self._apply_to_customer(key, m["kind"], m["event"])
            return
        ns = topic.removesuffix("-refs")
        if m["op"] == "bind":
            self._bind(ns, key, m["customer_id"])
        elif m["op"] == "unhold":
            rest = remove_held(self.held[ns].get(key), m["event_id"], m.get("at"))
            if rest is not None:
                if rest:
                    self.held[ns][key] = rest
                else:
                    del self.held[ns][key]
        else:
            self._lookup(ns, key, m)

    def _apply_to_customer(self, customer_id: str, kind: str, event: dict[str, Any]) -> None:
        before = self.customers.get(customer_id)
        state, changed = apply_event(
            before or empty_state(customer_id), kind, event, self.now, self.limits
        )
        if not changed:
            return
        version = state["version"]
        state, changes = apply_signals(state, self.now, self.windows)
        state = {**state, "version": version}  # one change, one version
        self._save_and_publish(customer_id, state, changes)
        public = view(state)
        old_public = view(before) if before is not None else None
        for ns, ref in new_refs(old_public, public):
            self._send(_refs_topic(ns), ref, {"op": "bind", "customer_id": customer_id})
        for ns, ref in unhold_refs(kind, event):
            unhold = {"op": "unhold", "event_id": event["event_id"], "at": event["occurred_at"]}
            self._send(_refs_topic(ns), ref, unhold)

    def _recheck_signals(self, customer_id: str) -> None:
        stored = self.customers.get(customer_id)
        if stored is None:
            self.due.pop(customer_id, None)
            return
        state, changes = apply_signals(stored, self.now, self.windows)
        if state is not stored:
            self._save_and_publish(customer_id, state, changes)
        else:
            self._schedule(customer_id, state)

    def _forward(self, customer_id: str, message: Message) -> None:
        body = {"kind": message["kind"], "event": message["event"], "topic": message["topic"]}
        self._send(CUSTOMER_EVENTS, customer_id, body)

    def _lookup(self, ns: str, ref: str, message: Message) -> None:
        owner = self.owners[ns].get(ref)
        if owner is not None:
            self._forward(owner, message)
            return
        waiting = add_held(self.held[ns].get(ref), message)
        if waiting is None:
            return
        self.held[ns][ref] = waiting
        rest = message["refs"]
        if rest:
            (next_ns, next_ref), *after = rest
            self._send(_refs_topic(next_ns), next_ref, {**message, "op": "lookup", "refs": after})

    def _bind(self, ns: str, ref: str, customer_id: str) -> None:
        owner = self.owners[ns].setdefault(ref, customer_id)  # first bind wins
        for message in self.held[ns].pop(ref, None) or ():
            self.released += 1
            self._forward(owner, message)

    # --- plumbing ------------------------------------------------------------------------

    def _send(self, topic: str, key: str, value: Message) -> None:
        self._queues.setdefault((topic, key), deque()).append(orjson.dumps(value))

    def _save_and_publish(
        self, customer_id: str, state: State, changes: list[dict[str, Any]]
    ) -> None:
        self.customers[customer_id] = state
        self._schedule(customer_id, state)
        self.published.append(view(state))
        self.signals.extend(changes)

    def _schedule(self, customer_id: str, state: State) -> None:
        due = next_check_ms(state, self.now, self.windows)
        if due is None:
            self.due.pop(customer_id, None)
        else:
            self.due[customer_id] = due
