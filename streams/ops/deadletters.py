"""Dead letters as a queue an operator works through: list, show, replay, mark handled.

A dead letter keeps the original key and value bytes plus headers saying why and where from
(docs/contract.md §1). Once the cause is fixed — the producer's schema added to ``schemas/``, a
worker's ``KEEL_MAX_RECORD_BYTES`` raised — replaying puts the very same bytes back on the
source topic, where the workers try them again::

    $ keel deadletters list [--topic orders.v1] [--reason schema] [--since 2h] [--status open]
    $ keel deadletters show 0:17            # headers, the value as JSON (if it is) and hex
    $ keel deadletters replay 0:17 0:18     # partition:offset in deadletter.v1
    $ keel deadletters handle 0:19 --note "test data from the shop's staging, ignored"

What happened to each letter is kept in Kafka, in the compacted ``deadletter-status.v1``
(key: the letter's ``partition:offset``; value: JSON ``{"status": "replayed" | "handled",
"by", "at", "note"}``), so every operator and the console (``/desk/deadletters``, admin role)
see the same queue. A replayed record that fails again becomes a new letter whose
``x-replay-of`` header names the letter it was replayed from (the replay carries
``x-replayed-from``; the intake copies it): the list shows it as the original's successor,
not as an unrelated new failure.
"""

from __future__ import annotations

import json
import logging
import re
import string
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from confluent_kafka import Consumer, Message, TopicPartition

from streams.config import Settings
from streams.errors import KeelError
from streams.kafka.config import client_config
from streams.kafka.producer import ConfirmedProducer


class DeadLetterError(KeelError, RuntimeError):
    """A requested dead letter does not exist, cannot be replayed, or a filter is wrong."""


REPLAYED_FROM = "x-replayed-from"
"""Header of a replayed record: ``deadletter.v1:<partition>:<offset>`` of its letter."""
REPLAY_OF = "x-replay-of"
"""Header of a dead letter of a replayed record: the letter it was replayed from."""
STATUSES = ("open", "replayed", "handled")


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def reason(self) -> str:
        return self.headers.get("x-error", "(no reason recorded)")

    @property
    def source_topic(self) -> str | None:
        return self.headers.get("x-source-topic")

    @property
    def failed_at(self) -> datetime | None:
        try:
            return datetime.fromisoformat(self.headers["x-failed-at"].replace("Z", "+00:00"))
        except (KeyError, ValueError):
            return None

    @property
    def replay_of(self) -> str | None:
        """The position of the letter this one's record was replayed from, if it was
        (``x-replay-of`` is ``deadletter.v1:<partition>:<offset>``)."""
        origin = self.headers.get(REPLAY_OF)
        if not origin:
            return None
        partition, offset = origin.split(":")[-2:] if origin.count(":") >= 2 else ("", "")
        return f"{partition}:{offset}" if partition.isdigit() and offset.isdigit() else None

    def summary(self) -> dict[str, object]:
        return {
            "position": self.position,
            "source": f"{self.source_topic}[{self.headers.get('x-source-partition')}]"
            f"@{self.headers.get('x-source-offset')}",
            "failed_at": self.headers.get("x-failed-at"),
            "key": self.key.decode(errors="replace") if self.key is not None else None,
            "bytes": len(self.value) if self.value is not None else 0,
            "reason": self.reason,
            "replay_of": self.replay_of,
        }

    def views(self, limit: int = 4096) -> dict[str, Any]:
        """The value as a person reads it: JSON (decoded from keel's Avro, or as sent) if it
        is any, and a hex dump of its first ``limit`` bytes."""
        return {"json": as_json(self.value), "hex": hexdump(self.value or b"", limit),
                "bytes": len(self.value or b"")}  # fmt: skip


@dataclass(frozen=True)
class QueueEntry:
    """A dead letter with what became of it (its status record, the letters its replays
    produced)."""

    letter: DeadLetter
    status: dict[str, Any] = field(default_factory=lambda: {"status": "open"})
    replays: tuple[str, ...] = ()

    def summary(self) -> dict[str, Any]:
        return {**self.letter.summary(), **self.status, "replays": list(self.replays)}


@dataclass(frozen=True)
class Filter:
    """Which letters to list: each given criterion must hold."""

    topic: str | None = None
    reason: str | None = None  # a part of the reason, any case
    since: datetime | None = None
    status: str = "open"  # open | replayed | handled | all

    def __post_init__(self) -> None:
        if self.status not in (*STATUSES, "all"):
            raise DeadLetterError(f"status must be one of {', '.join(STATUSES)} or all")

    def admits(self, entry: QueueEntry) -> bool:
        letter = entry.letter
        if self.topic and letter.source_topic != self.topic:
            return False
        if self.reason and self.reason.casefold() not in letter.reason.casefold():
            return False
        if self.since and (letter.failed_at is None or letter.failed_at < self.since):
            return False
        return self.status == "all" or entry.status.get("status") == self.status


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``2h``, ``30m``, ``7d`` ago, or an ISO-8601 time (UTC unless it says otherwise).

    >>> parse_since("2h", datetime(2026, 12, 1, 12, tzinfo=UTC)).isoformat()
    '2026-12-01T10:00:00+00:00'
    """
    now = now or datetime.now(UTC)
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if re.fullmatch(r"[0-9]+[smhd]", text):  # ASCII digits: "²h".isdigit() is True too
        try:
            return now - timedelta(seconds=int(text[:-1]) * units[text[-1]])
        except OverflowError:  # further back than year 1: every letter
            return datetime.min.replace(tzinfo=UTC)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise DeadLetterError(
            f"since {text!r}: give a time ago (30m, 2h, 7d) or an ISO-8601 time"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def as_json(value: bytes | None) -> Any:
    """The value as JSON: keel's Avro decoded with the schema its header names, else the bytes
    parsed as JSON, else None."""
    if not value:
        return None
    from streams.encoding.codec import CodecError, get_codec
    from streams.encoding.jsonconv import to_json

    codec = get_codec()
    name = codec.name_of(value)
    if name is not None:
        try:
            return to_json(name, codec.decode(value, name))
        except CodecError:
            pass  # a body its schema cannot read: shown as bytes
    try:
        return json.loads(value)
    except ValueError:
        return None


def hexdump(data: bytes, limit: int = 4096) -> str:
    """16 bytes a line: offset, hex, and the printable characters."""
    printable = set(string.printable) - set("\t\n\r\x0b\x0c")
    lines = []
    for at in range(0, min(len(data), limit), 16):
        chunk = data[at : at + 16]
        text = "".join(chr(b) if chr(b) in printable else "." for b in chunk)
        lines.append(f"{at:08x}  {chunk.hex(' '):<47}  {text}")
    if len(data) > limit:
        lines.append(f"… {len(data) - limit} more bytes")
    return "\n".join(lines)


def _consumer(settings: Settings) -> Consumer:
    return Consumer(
        {
            **client_config(settings.kafka_bootstrap),
            "group.id": f"keel-deadletters-{uuid.uuid4()}",  # read-only: never commits
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "logger": logging.getLogger("librdkafka"),  # not raw on stderr
        }
    )


def read_dead_letters(settings: Settings, timeout: float = 10.0) -> Iterator[DeadLetter]:
    """Every dead letter currently in the topic, oldest first per partition."""
    for msg in _read_all(settings, settings.topics.deadletter, timeout):
        pairs = cast(list[tuple[str, bytes | None]], msg.headers() or [])
        headers = {k: (v or b"").decode(errors="replace") for k, v in pairs}
        yield DeadLetter(int(msg.partition() or 0), int(msg.offset() or 0),
                         _bytes(msg.key()), _bytes(msg.value()), headers)  # fmt: skip


def read_statuses(settings: Settings, timeout: float = 10.0) -> dict[str, dict[str, Any]]:
    """position -> the newest status record of that letter (deadletter-status.v1)."""
    topic = settings.topics.deadletter_status
    out: dict[str, dict[str, Any]] = {}
    for msg in _read_all(settings, topic, timeout):
        key, value = _bytes(msg.key()), _bytes(msg.value())
        if key is None:
            continue
        position = key.decode(errors="replace")
        if value is None:
            out.pop(position, None)
            continue
        try:
            out[position] = json.loads(value)
        except ValueError:
            continue
    return out


def _read_all(settings: Settings, topic: str, timeout: float) -> Iterator[Message]:
    """Every record of ``topic`` up to its end offsets as they were when asked, oldest first
    per partition (a read-only consumer that never commits)."""
    consumer = _consumer(settings)
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None:
            return
        ends = {}
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        deadline = time.monotonic() + timeout
        while ends and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            yield msg
            partition, offset = int(msg.partition() or 0), int(msg.offset() or 0)
            if offset + 1 >= ends[partition]:
                del ends[partition]
    finally:
        consumer.close()


def _bytes(data: str | bytes | None) -> bytes | None:
    return data.encode() if isinstance(data, str) else data


def entries(
    letters: Iterable[DeadLetter], statuses: dict[str, dict[str, Any]]
) -> list[QueueEntry]:
    """Every letter with its status and the letters its replays became, oldest first."""
    letters = list(letters)
    replays: dict[str, list[str]] = {}
    for letter in letters:
        if letter.replay_of:
            replays.setdefault(letter.replay_of, []).append(letter.position)
    return [
        QueueEntry(letter, statuses.get(letter.position, {"status": "open"}),
              tuple(replays.get(letter.position, ())))  # fmt: skip
        for letter in letters
    ]


def queue(settings: Settings, wanted: Filter | None = None) -> list[QueueEntry]:
    """The letters ``wanted`` admits (default: the open ones), with their status."""
    wanted = wanted or Filter()
    found = entries(read_dead_letters(settings), read_statuses(settings))
    return [e for e in found if wanted.admits(e)]


def find(settings: Settings, positions: Iterable[str]) -> list[DeadLetter]:
    """The letters at ``positions``; :class:`DeadLetterError` for a malformed or missing one."""
    wanted = set(positions)
    for p in wanted:
        part, _, off = p.partition(":")
        if not (part.isdigit() and off.isdigit()):
            raise DeadLetterError(f"{p!r} is not partition:offset (e.g. 0:17)")
    found = [d for d in read_dead_letters(settings) if d.position in wanted]
    missing = wanted - {d.position for d in found}
    if missing:
        raise DeadLetterError(f"no dead letter at {', '.join(sorted(missing))}")
    return found


def mark(settings: Settings, positions: Iterable[str], status: str, by: str,
         note: str = "") -> None:  # fmt: skip
    """Record ``status`` for the letters at ``positions`` in deadletter-status.v1."""
    if status not in STATUSES:
        raise DeadLetterError(f"status must be one of {', '.join(STATUSES)}")
    at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    value = {"status": status, "by": by, "at": at, "note": note}
    producer = ConfirmedProducer(settings.kafka_bootstrap)
    try:
        producer.publish(
            settings.topics.deadletter_status,
            [(p.encode(), json.dumps(value).encode()) for p in positions],
        )
    finally:
        producer.close()


def handle(settings: Settings, positions: list[str], by: str, note: str) -> list[DeadLetter]:
    """Mark letters handled (nothing to replay: e.g. test data), with why."""
    if not note.strip():
        raise DeadLetterError("say why the letter needs no replay (--note)")
    found = find(settings, positions)
    mark(settings, [d.position for d in found], "handled", by, note)
    return found


def replay(settings: Settings, positions: list[str], by: str = "keel") -> list[DeadLetter]:
    """Re-publish the dead letters at ``partition:offset`` positions to their source topics,
    then mark them replayed."""
    found = find(settings, positions)
    for letter in found:
        if not letter.source_topic:
            raise DeadLetterError(f"dead letter {letter.position} has no x-source-topic header")
        if "x-truncated-from" in letter.headers:
            raise DeadLetterError(
                f"dead letter {letter.position} holds only the first bytes of a record of "
                f"{letter.headers['x-truncated-from']} bytes; replay the original from "
                f"{letter.source_topic} (its x-source-partition/offset headers) instead"
            )
    producer = ConfirmedProducer(settings.kafka_bootstrap)
    for letter in found:
        producer.publish(
            cast(str, letter.source_topic),  # checked above
            [(letter.key, letter.value)],
            headers=[
                (REPLAYED_FROM, f"{settings.topics.deadletter}:{letter.position}".encode())
            ],
        )
    producer.close()
    mark(settings, [d.position for d in found], "replayed", by)
    return found
