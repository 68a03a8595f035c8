"""The voice.v1 rollup (streams/domain/voice_rollup.py) says what a full recount says.

Hypothesis drives a rollup and a plain dict of facts through the same steps — new facts,
changed ones (another topic, kind, resolution, SKUs), removals, the clock moving by a
millisecond to months, and backwards — and after each step every topic's record must equal
``voice.topic_record`` over the dict. Instants cluster on window boundaries, where an
off-by-one would show.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain import voice
from streams.domain.voice_rollup import Rollup

H = voice.HOUR_MS
START = 10_000 * 24 * H
TOPICS = ("delivery", "billing", "staff")
#: offsets from "now" that sit on and next to each window's edges
EDGES = sorted({s * k * w + d for w in voice.WINDOWS.values() for k in (1, 2)
                for s in (-1,) for d in (-1, 0, 1)} | {0, 1, -1, 5 * H})  # fmt: skip


def facts(now: int) -> st.SearchStrategy[dict[str, Any]]:
    opened = st.one_of(st.sampled_from(EDGES), st.integers(-70 * 24 * H, 2 * H)).map(
        lambda d: now + d
    )
    return st.builds(
        _fact,
        contact_id=st.sampled_from([f"k-{i}" for i in range(12)]),
        topic=st.sampled_from(TOPICS),
        kind=st.sampled_from([*voice.KINDS, "UNKNOWN"]),
        channel=st.sampled_from(["email", "phone", "chat"]),
        opened_at=opened,
        resolve_after=st.one_of(st.none(), st.integers(-5_000, 3 * 24 * H)),
        skus=st.lists(st.sampled_from(["A", "B", "C"]), max_size=3, unique=True).map(sorted),
    )


def _fact(contact_id: str, topic: str, kind: str, channel: str, opened_at: int,
          resolve_after: int | None, skus: list[str]) -> dict[str, Any]:  # fmt: skip
    resolved = None if resolve_after is None else opened_at + resolve_after
    return {"contact_id": contact_id, "customer_id": "c-1", "kind": kind, "topic": topic,
            "tagged": False, "channel": channel, "opened_at": opened_at, "resolved_at": resolved,
            "open": resolved is None, "order_id": None, "skus": skus, "words": "",
            "reachable": True, "at": [opened_at, "e"]}  # fmt: skip


step = st.one_of(
    st.tuples(st.just("put"), st.data()),
    st.tuples(st.just("remove"), st.sampled_from([f"k-{i}" for i in range(12)])),
    st.tuples(st.just("tick"), st.one_of(st.sampled_from([1, H, 24 * H, 30 * 24 * H]),
                                        st.sampled_from([-e for e in EDGES if e < 0]),
                                        st.integers(-2 * H, 40 * 24 * H))),  # fmt: skip
)


@settings(max_examples=150, deadline=None)
@given(st.lists(step, min_size=1, max_size=40))
def test_the_rollup_equals_a_full_recount_after_every_step(steps: list) -> None:
    now = START
    table: dict[str, dict[str, Any]] = {}
    rollup = Rollup(now)
    for what, arg in steps:
        if what == "put":
            fact = arg.draw(facts(now))
            table[fact["contact_id"]] = fact
            changed = rollup.put(fact)
            assert fact["topic"] in changed or _all_gone(fact, now)
        elif what == "remove":
            table.pop(arg, None)
            rollup.remove(arg)
        else:
            now += arg
            rollup.advance(now)
        for topic in TOPICS:
            assert rollup.record(topic) == voice.topic_record(table.values(), topic, now)


def _all_gone(fact: dict[str, Any], now: int) -> bool:
    return fact["opened_at"] <= now - 2 * max(voice.WINDOWS.values())


def test_advance_names_exactly_the_topics_whose_windows_moved() -> None:
    now = START
    rollup = Rollup(now)
    rollup.put(_fact("k-1", "billing", "COMPLAINT", "email", now - H + 10, None, []))
    rollup.put(_fact("k-2", "delivery", "IDEA", "phone", now - 5 * H, None, []))
    assert rollup.advance(now + 5) == set()  # nothing crosses an edge in 5 ms
    assert rollup.advance(now + 10) == {"billing"}  # k-1 leaves the hour at exactly +10
    assert rollup.record("billing")["windows"][0]["previous"] == 1
    assert rollup.topics() == ["billing", "delivery"]
