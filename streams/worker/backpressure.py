"""The intake does not run ahead of the join: how far behind the join is, and when to wait.

The intake (streams/worker/intake.py) reads the departments' topics ten times faster than
the join can apply them. Left alone, it moves a whole backlog into keel's internal topics
within minutes: the departments' topics then look read (``keel_consumer_lag_records`` of
orders.v1 near 0, so an SRE's lag alert stays quiet) while the real queue sits in the
internal topics, and an event that arrives later waits behind all of it there as well.

So the intake asks, about every ``tuning.INTAKE_AHEAD_CHECK_S``, how many records of the
internal topics the join group (every worker's join agent, ``KEEL_APP_ID``) has not
committed yet: their end offsets (an admin client's ListOffsets) and the group's committed
offsets (a consumer's ``committed()``, under the join's group id, that never joins it: the
admin client's ``list_consumer_group_offsets`` crashed the worker with a segfault in
librdkafka 2.16 when the group's coordinator moved — an OffsetFetch answered NOT_COORDINATOR
in a client without a group, seen in test_cluster's whole-cluster outage). A partition the
join has not committed yet counts from its first offset, where the join starts reading it.
Above ``KEEL_INTAKE_AHEAD_RECORDS`` it pauses its partitions until the join is down to half
of that (it keeps polling, so it stays in its group). A backlog then waits in the
departments' topics, where the lag metric and alert see it. If Kafka cannot say, the intake
goes on (a broker outage must not also stop it once Kafka is back):

    ahead = JoinLag(bootstrap, topics, group, partitions, limit=2000)
    if ahead.wait():          # the join is too far behind: pause, poll, look again
        ...
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from streams import tuning
from streams.kafka.config import client_config
from streams.ops import metrics

log = logging.getLogger(__name__)


class JoinLag:
    """Records of the internal topics the join group has not committed, looked up now and then."""

    def __init__(
        self, bootstrap: str, topics: list[str], group: str, partitions: int, limit: int
    ) -> None:
        self.group = group
        self.limit = limit
        self.behind: int | None = None
        self.waiting = False
        self._partitions = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        self._bootstrap = bootstrap
        self._admin: AdminClient | None = None
        self._reader: Consumer | None = None
        self._at = float("-inf")  # the first call looks

    def wait(self) -> bool:
        """True while the intake should not read on: the join is more than ``limit`` records
        behind, or was and is not yet down to half of it."""
        if self.limit <= 0:
            return False
        now = time.monotonic()
        if now - self._at >= tuning.INTAKE_AHEAD_CHECK_S:
            self._at = now
            self.behind = self._look()
        if self.behind is None:
            self.waiting = False
        elif self.waiting:
            self.waiting = self.behind > self.limit // 2
        else:
            self.waiting = self.behind > self.limit
        metrics.INTAKE_WAITING.set(1 if self.waiting else 0)
        return self.waiting

    def close(self) -> None:
        """Let go of the clients (the reader commits nothing: it never joined the group)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._admin = None

    def _clients(self) -> tuple[AdminClient, Consumer]:
        if self._admin is None or self._reader is None:
            librdkafka = logging.getLogger("librdkafka")
            self._admin = AdminClient(client_config(self._bootstrap, None, logger=librdkafka))
            self._reader = Consumer(client_config(
                self._bootstrap, None, logger=librdkafka,
                **{"group.id": self.group, "enable.auto.commit": False},
            ))  # fmt: skip
        return self._admin, self._reader

    def _look(self) -> int | None:
        try:
            admin, reader = self._clients()
            ends = admin.list_offsets(
                {tp: OffsetSpec.latest() for tp in self._partitions},
                request_timeout=5,
            )
            done = {
                (tp.topic, tp.partition): tp.offset
                for tp in reader.committed(self._partitions, timeout=5)
                if tp.error is None
            }
            end = {(tp.topic, tp.partition): f.result(timeout=5).offset for tp, f in ends.items()}
            # a partition the join has not committed yet it reads from its first offset (the
            # group's auto.offset.reset): right after a start that is every partition, and a
            # backlog must wait from the first second, not from the join's first commit
            fresh = [tp for tp in self._partitions
                     if done.get((tp.topic, tp.partition), -1) < 0]  # fmt: skip
            if fresh:
                firsts = admin.list_offsets({tp: OffsetSpec.earliest() for tp in fresh},
                                            request_timeout=5)  # fmt: skip
                for tp, f in firsts.items():
                    done[(tp.topic, tp.partition)] = f.result(timeout=5).offset
            return sum(max(0, at_end - done[where]) for where, at_end in end.items())
        except (KafkaException, TimeoutError, ValueError) as exc:
            log.debug("intake: how far the join is behind is unknown (%s); reading on", exc)
            return None
        except Exception:  # noqa: BLE001 - the intake must go on whatever this lookup does
            log.exception("intake: how far the join is behind is unknown; reading on")
            return None
