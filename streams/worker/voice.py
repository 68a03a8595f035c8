"""The worker side of the Voice of the Customer (streams/domain/voice.py has the rules).

Facts travel on keel-customer-events under ``voice.VOICE_KEY``, so one partition holds them
all and the worker that owns it — the *voice owner* — aggregates, publishes ``voice.v1``,
exports the gauges and answers ``GET /voice`` (other workers forward to it, streams/
voice_views.py). The join agent (streams/worker/agent.py) calls:

- :func:`on_fact` for a *voice* message (streams/worker/messages.py), inside its batch:
  the fact is merged into the ``voice-facts`` table (contact id -> fact) through the batch,
  so it is stored by the checkpoint like any table write;
- :func:`after_commit` once a batch is stored: the owner's in-memory index takes the batch's
  facts, the topics they touched are published to voice.v1 and the board is woken.

The index is a copy of the table's partition in memory, rebuilt from RocksDB whenever the
group's generation changed (a rebalance, a restart), so it only ever holds what is stored.
voice.v1 is derived from a :class:`streams.domain.voice_rollup.Rollup` beside it, which keeps
every topic's windows up to date per fact and per clock tick, so a record costs what it shows,
not a pass over every fact. Each :data:`PUBLISH_S` the topics that stored batches or the
moving clock changed are published; every topic is published again after the index is
rebuilt and every :data:`REPUBLISH_S`, which makes up for a record lost with a crash between a
batch's commit and its publication, or not confirmed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import orjson
from faust.types import TP
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.app import app, settings
from streams.domain import voice
from streams.domain.voice_rollup import Rollup
from streams.encoding.codec import get_codec
from streams.worker import live
from streams.worker import messages as msg
from streams.worker.checkpoint import Transaction
from streams.worker.emit import Emitter, emitter
from streams.worker.tables import partition_of, views_ready, voice_facts

log = logging.getLogger(__name__)

REPUBLISH_S = 30.0
#: how often the topics changed by stored batches are published to voice.v1
PUBLISH_S = 1.0
VOICE_TOPIC = settings.topics.voice
CUSTOMER_EVENTS = f"{settings.app_id}-customer-events"


def load_tagger(path: str) -> list[tuple[str, re.Pattern[str]]]:
    """The keyword -> topic map of KEEL_VOICE_KEYWORDS (a JSON file), or the defaults."""
    if not path:
        return voice.DEFAULT_TAGGER
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    if not isinstance(raw, dict) or not all(
        isinstance(words, list) and all(isinstance(w, str) for w in words)
        for words in raw.values()
    ):
        raise ValueError(f"KEEL_VOICE_KEYWORDS={path}: expected {{topic: [keyword, ...]}}")
    return voice.compile_keywords(raw)


tagger = load_tagger(settings.voice_keywords)


def now_ms() -> int:
    return int(time.time() * 1000)


# ------------------------------------------------------------------------------ the batch


def handle_fact(tx: Transaction, fact: dict[str, Any]) -> bool:
    """Merge one fact into the voice-facts table; False when it changed nothing."""
    contact_id = fact["contact_id"]
    merged = voice.merge_fact(tx.get(voice_facts, contact_id), fact)
    if merged is None:
        return False
    tx.set(voice_facts, contact_id, merged)
    return True


def on_fact(tx: Transaction, key: str, m: msg.VoiceFact) -> None:
    handle_fact(tx, m["fact"])


def forget(tx: Transaction, key: str, message: msg.VoiceForget) -> None:
    """An erased customer's facts leave the table (streams/worker/customers.py
    ``erase_customer``); a contact that moved on to another customer keeps its fact there."""
    customer_id = message["customer_id"]
    for contact_id in message["contact_ids"]:
        fact = tx.get(voice_facts, contact_id)
        if fact is not None and fact["customer_id"] == customer_id:
            tx.delete(voice_facts, contact_id)


# ------------------------------------------------------------------------------ the index


class Index:
    """The voice owner's facts in memory (contact id -> fact), valid for one generation."""

    def __init__(self) -> None:
        self.generation: int | None = None
        self.facts: dict[str, dict[str, Any]] = {}
        #: goes up with every change of ``facts``, so answers computed from them can be reused
        self.revision = 0
        #: the facts' voice.v1 windows, kept per fact (valid with the facts)
        self.rollup = Rollup(0)
        #: topics whose windows changed since voice_publish last published them
        self.dirty: set[str] = set()

    def valid(self) -> bool:
        return self.generation == app.consumer_generation_id


index = Index()


def voice_partition() -> int:
    return partition_of(voice.VOICE_KEY)


def is_owner() -> bool:
    """This worker holds the voice partition as an active (not standby) replica."""
    try:
        actives = app.assignor.assigned_actives()
    except Exception:  # noqa: BLE001 - no assignment yet
        return False
    return TP(CUSTOMER_EVENTS, voice_partition()) in actives


def facts() -> dict[str, dict[str, Any]] | None:
    """The stored facts, if this worker is the voice owner and its tables are ready."""
    if not views_ready() or not is_owner():
        return None
    if not index.valid():
        loaded: dict[str, dict[str, Any]] = {}
        for key, value in voice_facts.data._iteritems():
            loaded[key.decode()] = orjson.loads(value)
        index.facts = loaded
        index.rollup = Rollup(now_ms(), loaded.values())
        index.dirty = set(index.rollup.topics())
        index.revision += 1
        index.generation = app.consumer_generation_id
        log.info("voice: %d facts loaded", len(loaded))
    return index.facts


def after_commit(tx: Transaction, emitter: Emitter) -> None:
    """A batch is stored: take its facts into the index, publish the topics they touched.

    Never raises into the join agent: the index is then dropped and rebuilt from the table."""
    try:
        _after_commit(tx, emitter)
    except Exception:  # noqa: BLE001 - the batch is stored; only the derived copy is stale
        log.exception("voice: the index could not take a batch; it is rebuilt from the table")
        index.generation = None


def _after_commit(tx: Transaction, emitter: Emitter) -> None:
    # the batch's own writes (no re-encoding of its other tables' rows: this is the join's
    # hot path); the topics they touch are published by voice_publish, at most once a second
    rows = tx.written(voice_facts)
    if not rows or not index.valid():
        return  # nothing of ours, or the index is rebuilt from the table at the next read
    rollup = index.rollup
    for contact_id, fact in rows:
        if fact is None:
            index.facts.pop(contact_id, None)
            index.dirty |= rollup.remove(contact_id)
        else:
            index.facts[contact_id] = fact
            index.dirty |= rollup.put(fact)
    index.revision += 1
    live.changed([voice.VOICE_KEY])


def publish(emitter: Emitter, topics: list[str]) -> None:
    """voice.v1 records of ``topics`` from the rollup (at its clock), confirmed in the
    background."""
    out = emitter.outbox()
    codec = get_codec()
    for topic in topics:
        record = index.rollup.record(topic)
        out.produce(VOICE_TOPIC, topic.encode(), codec.encode("VoiceTopic", record, check=False))
    asyncio.ensure_future(_confirm(out, len(topics)))


async def _confirm(out: Any, n: int) -> None:
    try:
        await out.confirmed()
    except Exception as exc:  # noqa: BLE001 - republished at the next tick
        log.warning("voice: %d voice.v1 record(s) not confirmed (%s); republished later", n, exc)


def republish(emitter: Emitter) -> None:
    """Every topic with a fact in the last 60 days, published again (windows move)."""
    if facts() is None:
        return
    index.rollup.advance(now_ms())
    topics = index.rollup.topics()
    if topics:
        publish(emitter, topics)
    live.changed([voice.VOICE_KEY])


# ----------------------------------------------------------------------------- the gauges


class VoiceCollector(Collector):
    """``keel_voice_*`` gauges, computed from the index at scrape time, on the voice owner
    only; at most KEEL_VOICE_TOP topics by 30-day count, the rest as topic ``other topics``."""

    def collect(self) -> Iterator[Metric]:
        contacts = GaugeMetricFamily(
            "keel_voice_contacts",
            "Contacts opened in the window ending now, per topic (the KEEL_VOICE_TOP busiest "
            "of 30 days; the rest as 'other topics') and kind; exported by the voice owner",
            labels=["window", "topic", "kind"],
        )
        open_complaints = GaugeMetricFamily(
            "keel_voice_open_complaints",
            "Complaints opened in the last 30 days and not resolved, per topic",
            labels=["topic"],
        )
        resolve = GaugeMetricFamily(
            "keel_voice_median_resolve_seconds",
            "Median seconds from opened to resolved of the last 7 days' resolved contacts",
            labels=["topic"],
        )
        try:
            known = facts()
        except Exception:  # noqa: BLE001 - a scrape must not fail on a table mid-rebalance
            known = None
        if known is not None:
            yield from self._fill(list(known.values()), contacts, open_complaints, resolve)
        else:
            yield from (contacts, open_complaints, resolve)

    def _fill(self, known: list, contacts: Any, open_complaints: Any, resolve: Any
              ) -> Iterator[Metric]:  # fmt: skip
        now = now_ms()
        month = voice.aggregate(known, now, voice.WINDOWS["30d"])
        top = [t["topic"] for t in month["topics"][: settings.voice_top]]
        label = {t: t for t in top}
        for name, length in voice.WINDOWS.items():
            agg = voice.aggregate(known, now, length)
            sums: dict[tuple[str, str], int] = {}
            for row in agg["topics"]:
                topic = label.get(row["topic"], "other topics")
                for kind, n in row["kinds"].items():
                    sums[(topic, kind)] = sums.get((topic, kind), 0) + n
            for topic in [*top, "other topics"]:
                for kind in voice.KINDS:
                    contacts.add_metric([name, topic, kind], sums.get((topic, kind), 0))
        week = {t["topic"]: t for t in voice.aggregate(known, now, voice.WINDOWS["7d"])["topics"]}
        for row in month["topics"]:
            if row["topic"] in label:
                open_complaints.add_metric([row["topic"]], row["open_complaints"])
                median = week.get(row["topic"], {}).get("median_resolve_s")
                if median is not None:
                    resolve.add_metric([row["topic"]], median)
        yield from (contacts, open_complaints, resolve)


REGISTRY.register(VoiceCollector())


@app.timer(interval=PUBLISH_S)
async def voice_publish() -> None:
    """Publish the voice.v1 records of the topics that stored batches or the clock changed
    (the voice owner)."""
    if not index.valid():
        return
    index.dirty |= index.rollup.advance(now_ms())
    if not index.dirty:
        return
    topics, index.dirty = sorted(index.dirty), set()
    try:
        publish(emitter, topics)
    except Exception:  # noqa: BLE001 - a timer that raised would stop ticking
        index.dirty.update(topics)
        log.exception("voice: publishing voice.v1 failed; trying again at the next tick")


@app.timer(interval=REPUBLISH_S)
async def voice_clock() -> None:
    """Republish voice.v1 as its windows move (the voice owner only)."""
    try:
        republish(emitter)
    except Exception:  # noqa: BLE001 - a timer that raised would stop ticking
        log.exception("voice: republishing voice.v1 failed; trying again at the next tick")
