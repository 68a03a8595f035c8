"""The batch transaction and the order in which it is made durable (streams/worker/checkpoint.py).

A recording stand-in for Kafka (the emitter) and for RocksDB (``tables.write``) shows the order
of what happens: every output confirmed before any changelog record is produced, the changelog
confirmed before anything is stored, nothing stored when the batch is no longer current or when
Kafka refuses a record. The kill test (tests/integration/test_faults.py) checks the same on
the real stack.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams.domain.state import empty_state
from streams.worker import checkpoint, tables
from streams.worker.emit import EmitError
from streams.worker.tables import customers, due


class _Outbox:
    def __init__(self, log: list[str], name: str, fail: bool) -> None:
        self.log, self.name, self.fail = log, name, fail
        self.offsets: dict[tuple[str, int], int] = {}

    def produce(self, topic: str, key: Any, value: Any, headers: Any = None,
                partition: int | None = None) -> None:
        self.log.append(f"{self.name} produce {topic}")
        self.offsets[(topic, partition or 0)] = self.offsets.get((topic, partition or 0), 9) + 1

    async def confirmed(self) -> None:
        self.log.append(f"{self.name} confirmed")
        if self.fail:
            raise EmitError("1 record(s) not written: too big")


class _Emitter:
    """Hands out outboxes: the batch's own (``out``), then one per changelog round."""

    def __init__(self, log: list[str], fail_changelog: bool = False) -> None:
        self.log, self.fail_changelog = log, fail_changelog

    def outbox(self) -> _Outbox:
        return _Outbox(self.log, "changelog", self.fail_changelog)


@pytest.fixture
def stored(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, list, int]]:
    rows: list[tuple[str, int, list, int]] = []
    monkeypatch.setattr(tables, "read", lambda table, partition, key: (None, 0))
    monkeypatch.setattr(
        tables, "write",
        lambda table, partition, r, offset: rows.append((table.name, partition, r, offset)),
    )  # fmt: skip
    return rows


def _batch(log: list[str], fail: bool = False) -> checkpoint.Transaction:
    return checkpoint.Transaction(_Outbox(log, "outputs", fail))  # type: ignore[arg-type]


def test_outputs_are_confirmed_before_changelogs_and_changelogs_before_the_store(
    stored: list,
) -> None:
    log: list[str] = []
    batch = _batch(log)
    batch.at(3)
    state = {**empty_state("c-1"), "version": 1}
    batch.set(customers, "c-1", state)
    batch.publish_state("c-1", state)
    batch.internal.send("keel-order-refs", "o-1", {"op": "bind", "customer_id": "c-1"})
    log.append("handled")
    assert asyncio.run(checkpoint.commit(batch, _Emitter(log), lambda: True)) is True  # type: ignore[arg-type]
    log.append(f"stored {len(stored)}")
    steps = [line.split(" produce ")[0] + (" produce" if " produce " in line else "")
             for line in log]
    assert steps == [
        "handled",
        "outputs produce",  # the pack of internal messages
        "outputs produce",  # the customer's state
        "outputs confirmed",
        "changelog produce",
        "changelog confirmed",
        "stored 1",
    ]
    [(table, partition, rows, offset)] = stored
    assert (table, partition, offset) == ("customers", 3, 10)
    assert rows[0][0] == b"c-1"


def test_a_key_changed_many_times_is_written_once_with_its_last_value(stored: list) -> None:
    log: list[str] = []
    batch = _batch(log)
    batch.at(0)
    for version in range(1, 6):
        batch.set(due, "c-1", version)
        assert batch.get(due, "c-1") == version  # reads see the batch's own writes
    batch.delete(due, "c-2")
    assert batch.get(due, "c-2") is None
    asyncio.run(checkpoint.commit(batch, _Emitter(log), lambda: True))  # type: ignore[arg-type]
    assert sum(1 for line in log if line.startswith("changelog produce")) == 2  # one per key
    [(_, _, rows, _)] = stored
    assert rows == [(b"c-1", b"5"), (b"c-2", None)]


def test_nothing_is_stored_when_kafka_refuses_an_output_or_a_changelog(stored: list) -> None:
    for fail_outputs, fail_changelog in ((True, False), (False, True)):
        log: list[str] = []
        batch = _batch(log, fail=fail_outputs)
        batch.set(customers, "c-1", empty_state("c-1"))
        emitter = _Emitter(log, fail_changelog=fail_changelog)
        with pytest.raises(EmitError):
            asyncio.run(checkpoint.commit(batch, emitter, lambda: True))  # type: ignore[arg-type]
        if fail_outputs:
            assert not any(line.startswith("changelog") for line in log)
    assert stored == []


def test_a_batch_that_outlived_its_assignment_is_not_stored(stored: list) -> None:
    answers = iter([True, False])  # still current before the changelog, not before the store
    log: list[str] = []
    batch = _batch(log)
    batch.set(customers, "c-1", empty_state("c-1"))
    done = asyncio.run(checkpoint.commit(batch, _Emitter(log), lambda: next(answers)))  # type: ignore[arg-type]
    assert done is False and stored == []
    log2: list[str] = []
    batch = _batch(log2)
    batch.set(customers, "c-1", empty_state("c-1"))
    assert asyncio.run(checkpoint.commit(batch, _Emitter(log2), lambda: False)) is False  # type: ignore[arg-type]
    assert not any(line.startswith("changelog") for line in log2)  # refused before step 3
    assert stored == []


def test_a_message_of_pack_size_travels_alone() -> None:
    sent: list[tuple[str, int, bytes]] = []
    packer = checkpoint.Packer(lambda topic, key, value, headers, partition:
                               sent.append((topic, partition, value)))
    packer.send("t", "k-1", {"small": 1})
    packer.send("t", "k-1", {"big": "x" * checkpoint.tuning.PACK_BYTES})
    assert len(sent) == 1 and b'"big"' in sent[0][2] and b'"small"' not in sent[0][2]
    packer.flush()
    assert len(sent) == 2 and b'"small"' in sent[1][2]
