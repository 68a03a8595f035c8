"""How the join agent shapes what it took into batches (streams/worker/agent.py by_bytes):
in order, each within the byte budget unless one record alone is bigger."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from streams import tuning
from streams.worker.agent import by_bytes


def records(sizes: list[int]) -> list[SimpleNamespace]:
    return [SimpleNamespace(message=SimpleNamespace(value=b"x" * n), n=i)
            for i, n in enumerate(sizes)]  # fmt: skip


@given(st.lists(st.integers(min_value=0, max_value=300), max_size=60),
       st.integers(min_value=1, max_value=500))  # fmt: skip
def test_batches_keep_the_order_and_the_budget(sizes: list[int], budget: int) -> None:
    taken = records(sizes)
    batches = list(by_bytes(taken, budget))  # type: ignore[arg-type]
    assert [r for b in batches for r in b] == taken  # nothing lost, reordered or repeated
    for batch in batches:
        assert batch
        size = sum(len(r.message.value) for r in batch)
        assert size <= budget or len(batch) == 1


def test_live_traffic_is_one_batch_and_a_backlog_several_of_the_usual_size() -> None:
    live = records([400] * 300)  # 300 small records: a few ms of live events
    assert len(list(by_bytes(live, tuning.JOIN_BATCH_BYTES))) == 1  # type: ignore[arg-type]
    backlog = records([32 * 1024] * tuning.JOIN_TAKE_RECORDS)  # full packs
    sizes = [len(b) for b in by_bytes(backlog, tuning.JOIN_BATCH_BYTES)]  # type: ignore[arg-type]
    assert sizes == [64] * (tuning.JOIN_TAKE_RECORDS // 64)
