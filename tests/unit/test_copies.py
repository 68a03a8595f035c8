"""How current a worker's copies of table partitions are (streams/worker/copies.py): what its
answers while partitions move are marked with, and when it has no copy to answer from."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest
from faust.types import TP

from streams import tuning
from streams.worker import copies
from streams.worker.tables import CHANGELOG_TOPIC, customers, partition_of

TOPIC = CHANGELOG_TOPIC[customers]


class Recovery:
    """faust's Recovery as far as copies.py reads it."""

    def __init__(self, standbys: dict[int, int], in_recovery: bool = False) -> None:
        self.standby_tps = {TP(TOPIC, p) for p in standbys}
        self.standby_offsets = Counter({TP(TOPIC, p): off for p, off in standbys.items()})
        self.in_recovery = in_recovery
        self.flushed = 0

    def flush_buffers(self) -> None:
        self.flushed += 1


class DB(dict):
    def get(self, key: bytes, default: Any = None) -> Any:
        return super().get(key, default)


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> dict[int, DB]:
    monkeypatch.setattr(copies, "_as_of", {})
    monkeypatch.setattr(copies, "_ends", {})
    dbs: dict[int, DB] = {}
    monkeypatch.setattr(customers.data, "_dbs", dbs)
    return dbs


def test_an_active_copy_is_current_only_while_the_worker_is_ready(clean: dict[int, DB]) -> None:
    clean[0] = DB()
    copies.keep_current(100.0, True, [TP(TOPIC, 0)], Recovery({}), lambda tp: 0)
    copies.keep_current(101.0, False, [TP(TOPIC, 0)], Recovery({}), lambda tp: 0)
    assert copies.as_of(customers, 0) == 100.0  # rebalancing at 101: still as of 100


def test_a_standby_is_current_once_it_applied_up_to_the_end_it_fetched(
    clean: dict[int, DB],
) -> None:
    clean[1], clean[2] = DB(), DB()
    ends = {TP(TOPIC, 1): 10, TP(TOPIC, 2): 10}
    recovery = Recovery({1: 9, 2: 7})
    copies.keep_current(200.0, True, [], recovery, ends.__getitem__)
    assert recovery.flushed == 1  # what faust buffered is applied first
    assert copies.as_of(customers, 1) == 200.0
    assert copies.as_of(customers, 2) is None  # 2 records behind: not known to be current
    recovery.standby_offsets[TP(TOPIC, 2)] = 9
    copies.keep_current(201.0, True, [], recovery, ends.__getitem__)
    ends[TP(TOPIC, 1)] = 12  # new changes fetched, not applied yet: stays as of 201
    copies.keep_current(202.0, True, [], recovery, ends.__getitem__)
    assert (copies.as_of(customers, 1), copies.as_of(customers, 2)) == (201.0, 202.0)


def test_nothing_is_applied_or_noted_for_standbys_while_faust_recovers(
    clean: dict[int, DB],
) -> None:
    clean[1] = DB()
    recovery = Recovery({1: 9}, in_recovery=True)
    copies.keep_current(300.0, True, [], recovery, lambda tp: 10)
    assert recovery.flushed == 0 and copies.as_of(customers, 1) is None


def test_a_closed_partition_is_no_copy_and_a_read_says_how_current(
    clean: dict[int, DB],
) -> None:
    key = "c-1"
    partition = partition_of(key)
    clean[partition] = DB({key.encode(): orjson.dumps({"customer_id": key})})
    copies.keep_current(400.0, True, [TP(TOPIC, partition)], Recovery({}), lambda tp: 0)
    assert copies.read(customers, key) == ({"customer_id": key}, 400.0)
    other = next(f"c-{n}" for n in range(2, 99) if partition_of(f"c-{n}") == partition)
    assert copies.read(customers, other) == (None, 400.0)  # not in the copy: the caller's 503
    del clean[partition]  # revoked: faust closed its database
    assert copies.as_of(customers, partition) is None
    assert copies.read(customers, key) is None


def test_ready_waits_for_every_standby_to_be_known_current_once_for_at_most_a_while(
    clean: dict[int, DB], monkeypatch: pytest.MonkeyPatch
) -> None:
    clean[1] = DB()
    recovery = Recovery({1: 5})
    cold = copies.keep_current(10.0, True, [], recovery, lambda tp: 10)
    assert cold == 1
    monkeypatch.setattr(copies, "_cold_standbys", cold)
    monkeypatch.setattr(copies, "_ready_since", None)
    assert not copies.warm(now=0.0)  # not ready at all
    monkeypatch.setattr(copies, "_ready_since", 100.0)
    assert not copies.warm(now=101.0)
    assert copies.warm(now=100.0 + tuning.WARMUP_MAX_S)  # bounded: never kept out for good
    recovery.standby_offsets[TP(TOPIC, 1)] = 9
    monkeypatch.setattr(copies, "_cold_standbys", copies.keep_current(11.0, True, [], recovery,
                                                                     lambda tp: 10))  # fmt: skip
    assert copies.warm(now=101.0)


def test_under_steady_traffic_a_standby_is_current_as_of_the_tick_whose_end_it_passed(
    clean: dict[int, DB],
) -> None:
    clean[3] = DB()
    recovery = Recovery({3: 0})
    tp = TP(TOPIC, 3)
    for tick, (applied, end) in enumerate([(4, 10), (12, 20), (25, 30), (33, 40)]):
        recovery.standby_offsets[tp] = applied
        copies.keep_current(500.0 + tick, True, [], recovery, lambda _tp, e=end: e)
    # it never reached the newest end, but passed 10 (seen at 500), 20 (501) and 30 (502)
    assert copies.as_of(customers, 3) == 502.0
