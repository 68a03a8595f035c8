"""The join agent waits out a Kafka outage instead of halting (streams/worker/agent.py store_batch).

Found by tests/integration/test_cluster.py under load: the whole cluster was down longer than
the emitter's ``message.timeout.ms`` (60 s), the batch's records timed out, and the worker
reported itself failed and stopped for good. A retriable failure now makes it handle and
produce the batch again; one that would fail again (a record Kafka refuses) still halts.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from confluent_kafka import KafkaError

from streams import tuning
from streams.worker import agent as agents
from streams.worker import emit
from streams.worker.emit import EmitError


class _Err:
    def __init__(self, code: int) -> None:
        self._code = code

    def code(self) -> int:
        return self._code

    def str(self) -> str:
        return f"code {self._code}"

    def retriable(self) -> bool:
        return False


class _Outbox:
    def produce(self, *args: Any) -> None:
        raise AssertionError("the stand-in handler produces nothing")


def _run(monkeypatch: pytest.MonkeyPatch, failures: list[EmitError]) -> tuple[Any, int]:
    handled = []

    async def handle_batch(tx: Any, records: Any) -> None:
        handled.append(tx)

    async def commit(tx: Any, emitter: Any, current: Any) -> bool:
        if failures:
            raise failures.pop(0)
        return True

    async def no_sleep(_: float) -> None:
        return None

    monkeypatch.setattr(agents, "handle_batch", handle_batch)
    monkeypatch.setattr(agents, "commit", commit)
    monkeypatch.setattr(agents.emitter, "outbox", lambda: _Outbox())
    monkeypatch.setattr(agents.asyncio, "sleep", no_sleep)
    result = asyncio.run(agents.store_batch([]))
    return result, len(handled)


def test_a_batch_kafka_timed_out_is_handled_and_produced_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    timed_out = [EmitError("3 record(s) not written: Local: Message timed out", True)] * 3
    tx, attempts = _run(monkeypatch, list(timed_out))
    assert tx is not None and attempts == 4


def test_a_record_kafka_refuses_still_halts(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(EmitError):
        _run(monkeypatch, [EmitError("1 record(s) not written: Broker: too large", False)])


def test_an_outage_longer_than_the_limit_halts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning, "KAFKA_OUTAGE_RETRY_S", -1.0)
    with pytest.raises(EmitError):
        _run(monkeypatch, [EmitError("timed out", True)])


def test_which_delivery_errors_count_as_passing() -> None:
    loop = asyncio.new_event_loop()
    try:
        for code, retriable in [(KafkaError._MSG_TIMED_OUT, True),
                                (KafkaError.NOT_ENOUGH_REPLICAS, True),
                                (KafkaError.MSG_SIZE_TOO_LARGE, False)]:  # fmt: skip
            outbox = emit.Outbox(None, loop)  # type: ignore[arg-type]
            outbox.produced = 1

            class _Msg:
                def topic(self) -> str:
                    return "t"

            outbox.on_delivery(_Err(code), _Msg())  # type: ignore[arg-type]
            with pytest.raises(EmitError) as raised:
                loop.run_until_complete(outbox.confirmed())
            assert raised.value.retriable is retriable, code
    finally:
        loop.close()
