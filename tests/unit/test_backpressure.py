"""When the intake waits for the join (streams/worker/backpressure.py ``JoinLag.wait``): above
the limit, until the join is down to half of it, never when Kafka cannot say or without a
limit. The lookup itself runs against a real broker in tests/integration/test_backpressure.py.
"""

from __future__ import annotations

import pytest

from streams import tuning
from streams.worker.backpressure import JoinLag


def _lag(limit: int, looks: list[int | None]) -> list[bool]:
    lag = JoinLag("127.0.0.1:1", ["t"], "g", 1, limit)
    script = iter(looks)
    lag._look = lambda: next(script)  # type: ignore[method-assign]
    out = []
    for _ in looks:
        lag._at = float("-inf")  # every call looks again
        out.append(lag.wait())
    return out


def test_it_waits_above_the_limit_until_the_join_is_down_to_half_of_it() -> None:
    assert _lag(100, [50, 101, 90, 51, 50, 99, 101]) == [
        False, True, True, True, False, False, True]  # fmt: skip


def test_it_reads_on_when_kafka_cannot_say_or_there_is_no_limit() -> None:
    assert _lag(100, [500, None, 500]) == [True, False, True]
    assert _lag(0, [10**9]) == [False]


def test_between_two_looks_the_last_answer_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning, "INTAKE_AHEAD_CHECK_S", 3600.0)
    lag = JoinLag("127.0.0.1:1", ["t"], "g", 1, 10)
    looks = iter([11, 0])
    lag._look = lambda: next(looks)  # type: ignore[method-assign]
    assert lag.wait() and lag.wait()  # looked once: 11
