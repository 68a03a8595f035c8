"""In-process pub/sub of "this customer's state changed", for the desk console's live feed.

The worker calls :func:`changed` once per batch, after the batch's states are stored in the
customers table and Kafka confirmed them (streams/worker/agent.py ``on_internal``, after step 4 of
streams/worker/checkpoint.py). A subscriber
(an open Server-Sent Events stream, streams/api/desk.py) is woken and reads the *stored* state
itself, so what it sends is always the latest state, never a queued old copy:

    >>> import asyncio
    >>> async def demo() -> str:
    ...     hub = Hub()
    ...     with hub.subscribe("c-1") as sub:
    ...         hub.changed(["c-1", "c-2"])
    ...         hub.changed(["c-1"])            # coalesces with the pending wake-up
    ...         return f"{await sub.wait(1.0)} {sub.pending()}"
    >>> asyncio.run(demo())
    'changed False'

Bounded per subscriber: each subscription holds at most one pending wake-up. Changes that
arrive while one is pending (a slow client, a burst of events) fold into it — "latest state"
semantics: a slow subscriber skips intermediate states, it never falls behind or grows a
queue. The number of subscriptions per worker is capped (:data:`MAX_SUBSCRIBERS`).

Everything here runs on the worker's event loop (faust's web server shares it unless
``web_in_thread`` is set, which keel does not); nothing blocks and nothing is awaited in
:meth:`Hub.changed`, so the agents pay a dict lookup per published customer and nothing
more when nobody watches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType
from typing import Literal

from streams.errors import KeelError

MAX_SUBSCRIBERS = 1000
"""Open live streams per worker; one more is refused (the page falls back to reconnecting)."""

Wake = Literal["changed", "closed", "timeout"]


class TooManySubscribers(KeelError):
    """The worker already serves :data:`MAX_SUBSCRIBERS` live streams."""


class Subscription:
    """One live stream's interest in one customer; use as a context manager to unsubscribe."""

    __slots__ = ("customer_id", "_hub", "_wake", "_closed")

    def __init__(self, hub: Hub, customer_id: str) -> None:
        self.customer_id = customer_id
        self._hub = hub
        # maxsize=1: the one pending wake-up; put_nowait on a full queue means "already told".
        self._wake: asyncio.Queue[None] = asyncio.Queue(maxsize=1)
        self._closed = asyncio.Event()

    def notify(self) -> None:
        if not self._wake.full():
            self._wake.put_nowait(None)

    def close(self) -> None:
        """End the stream (shutdown, rebalance): the next :meth:`wait` returns ``"closed"``."""
        self._closed.set()
        self.notify()

    def pending(self) -> bool:
        return self._wake.full()

    async def wait(self, timeout: float) -> Wake:
        """Until the customer changed, the subscription was closed, or ``timeout`` seconds."""
        if not self._closed.is_set():
            try:
                await asyncio.wait_for(self._wake.get(), timeout)
            except TimeoutError:
                return "timeout"
        return "closed" if self._closed.is_set() else "changed"

    async def wait_closed(self) -> None:
        """Until :meth:`close` (a forwarded stream has nothing else to wait for)."""
        await self._closed.wait()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._hub.unsubscribe(self)


class Hub:
    """Subscriptions by customer id."""

    def __init__(self, max_subscribers: int = MAX_SUBSCRIBERS) -> None:
        self.max_subscribers = max_subscribers
        self._subs: dict[str, set[Subscription]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def subscribe(self, customer_id: str) -> Subscription:
        if self._count >= self.max_subscribers:
            raise TooManySubscribers(
                f"this worker already serves {self._count} live streams (the most it serves)"
            )
        sub = Subscription(self, customer_id)
        self._subs.setdefault(customer_id, set()).add(sub)
        self._count += 1
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.customer_id)
        if subs is None or sub not in subs:
            return
        subs.discard(sub)
        self._count -= 1
        if not subs:
            del self._subs[sub.customer_id]

    def changed(self, customer_ids: Iterable[str]) -> None:
        """Wake every subscription to one of ``customer_ids``; never blocks."""
        subs = self._subs
        if not subs:
            return
        for customer_id in customer_ids:
            for sub in subs.get(customer_id, ()):
                sub.notify()

    def close_all(self) -> None:
        """End every stream, e.g. when partitions move: clients reconnect to the new owner."""
        for subs in self._subs.values():
            for sub in subs:
                sub.close()


hub = Hub()


def changed(customer_ids: Iterable[str]) -> None:
    """The worker's hook: these customers' states were stored (and Kafka confirmed them)."""
    hub.changed(customer_ids)
