"""The live feed's pub/sub (streams/worker/live.py): who is woken, and how a slow subscriber is
bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from streams.worker.live import Hub, TooManySubscribers

T = TypeVar("T")


def run(test: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(test(), 5))


def test_a_change_wakes_the_subscribers_of_that_customer_only() -> None:
    async def scenario() -> tuple[str, str, str]:
        hub = Hub()
        with (
            hub.subscribe("c-1") as one,
            hub.subscribe("c-1") as same,
            hub.subscribe("c-2") as other,
        ):
            hub.changed({"c-1", "c-3"})
            return await one.wait(1), await same.wait(1), await other.wait(0.05)

    assert run(scenario) == ("changed", "changed", "timeout")


def test_changes_while_one_is_pending_fold_into_it() -> None:
    async def scenario() -> tuple[str, str]:
        hub = Hub()
        with hub.subscribe("c-1") as sub:
            for _ in range(1000):  # a burst, or a subscriber that does not keep up
                hub.changed(["c-1"])
            return await sub.wait(1), await sub.wait(0.05)

    assert run(scenario) == ("changed", "timeout")


def test_a_change_after_waking_is_not_lost() -> None:
    async def scenario() -> list[str]:
        hub = Hub()
        with hub.subscribe("c-1") as sub:
            hub.changed(["c-1"])
            first = await sub.wait(1)
            hub.changed(["c-1"])  # arrives while the subscriber sends the first state
            return [first, await sub.wait(1)]

    assert run(scenario) == ["changed", "changed"]


def test_close_all_ends_every_stream_and_leaving_unsubscribes() -> None:
    async def scenario() -> tuple[list[str], int, int]:
        hub = Hub()
        subs = [hub.subscribe(f"c-{i % 2}") for i in range(4)]
        during = len(hub)
        hub.close_all()
        wakes = [await s.wait(1) for s in subs]
        await asyncio.wait_for(subs[0].wait_closed(), 1)
        for s in subs:
            with s:
                pass
        return wakes, during, len(hub)

    assert run(scenario) == (["closed"] * 4, 4, 0)


def test_the_number_of_subscriptions_is_capped() -> None:
    hub = Hub(max_subscribers=2)
    first = hub.subscribe("c-1")
    hub.subscribe("c-2")
    with pytest.raises(TooManySubscribers):
        hub.subscribe("c-3")
    with first:
        pass
    hub.subscribe("c-3")  # room again
    assert len(hub) == 2


def test_changes_nobody_watches_cost_nothing_and_break_nothing() -> None:
    hub = Hub()
    hub.changed(["c-1", "c-2"])
    sub = hub.subscribe("c-1")
    hub.unsubscribe(sub)
    hub.unsubscribe(sub)  # twice is harmless
    hub.changed(["c-1"])
    assert len(hub) == 0 and not sub.pending()
