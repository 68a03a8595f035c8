"""Voice of the Customer end to end: a week of contacts with known counts, through a real
broker and worker, checked on voice.v1, GET /voice and the gauges."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local.stack import Kafka, free_port
from streams.encoding.codec import get_codec
from tests.builders import contact, order, unique
from tests.integration.harness import (
    Cluster,
    Departments,
    Worker,
    metric_value,
    read_topic,
    wait_for,
)

pytestmark = pytest.mark.integration

H = 3_600_000
D = 24 * H
KINDS = ("COMPLAINT", "IDEA", "COMPLIMENT", "QUESTION", "REQUEST")
TOPICS = ("delivery", "billing", "returns", "quality", "staff")
WORDS = {"delivery": "my parcel is late", "billing": "charged twice on the invoice",
         "returns": "the return label", "quality": "it is broken and faulty",
         "staff": "the agent was rude"}  # fmt: skip


@pytest.fixture(scope="module")
def voice_worker(kafka: Kafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """A worker of this module's own on its own topics: the counts are only this test's."""
    base: Path = tmp_path_factory.mktemp("voice-worker")
    app_id = unique("voice")
    w = Worker(kafka.bootstrap, base / "data", free_port(), base / "worker.log",
               KEEL_APP_ID=app_id, KEEL_TOPIC_ORDERS=f"{app_id}-orders",
               KEEL_TOPIC_SHIPMENTS=f"{app_id}-shipments", KEEL_TOPIC_CONTACTS=f"{app_id}-contacts",
               KEEL_TOPIC_STATE=f"{app_id}-state", KEEL_TOPIC_VOICE=f"{app_id}-voice",
               KEEL_TOPIC_COMMANDS=f"{app_id}-commands",
               KEEL_TOPIC_COMMAND_OUTCOMES=f"{app_id}-outcomes",
               KEEL_VOICE_TOP="3")  # fmt: skip
    w.start()
    try:
        yield w
    finally:
        w.stop()


def week_of_contacts(now: int) -> tuple[list[tuple[str, dict]], list[dict]]:
    """(events to send, the contacts they describe): 150 contacts over the last 7 days."""
    rng = random.Random(15)
    events: list[tuple[str, dict]] = []
    truth: list[dict] = []
    customers = [unique("c") for _ in range(40)]
    for customer_id in customers[:10]:  # some customers have an order the contact is about
        events.append(order(customer_id, f"o-{customer_id}", at=now - 8 * D,
                            email=f"{customer_id}@example.com",
                            lines=[{"sku": "lamp", "quantity": 1, "unit_price_cents": 999}]))
    for i in range(150):
        customer_id = customers[i % len(customers)]
        topic = TOPICS[rng.randrange(len(TOPICS))]
        kind = KINDS[rng.randrange(len(KINDS))]
        opened = now - rng.randrange(1, 7 * D - H)
        tagged = i % 10 == 0  # no topic: keel tags it from the words
        contact_id = unique("k")
        with_order = customers.index(customer_id) < 10 and i % 3 == 0
        channel = "CHAT" if i % 2 else "EMAIL"
        events.append(contact(
            contact_id, at=opened, customer_id=customer_id, kind=kind,
            topic=None if tagged else topic.capitalize(), note=WORDS[topic],
            order_id=f"o-{customer_id}" if with_order else None, channel=channel))  # fmt: skip
        resolved = None
        if i % 4 == 0:
            resolved = opened + (i % 5 + 1) * H
            if resolved < now:
                events.append(contact(contact_id, "RESOLVED", at=resolved, customer_id=customer_id,
                                      kind=kind, topic=None if tagged else topic,
                                      channel=channel))  # fmt: skip
            else:
                resolved = None
        truth.append({"topic": topic, "kind": kind, "opened": opened, "resolved": resolved,
                      "sku": with_order})  # fmt: skip
    return events, truth


def expected(truth: list[dict], now: int, window: int) -> dict[str, Counter]:
    out: dict[str, Counter] = {}
    for c in truth:
        if now - window < c["opened"] <= now:
            out.setdefault(c["topic"], Counter())[c["kind"]] += 1
    return out


def test_a_week_of_contacts_counts_once_on_voice_v1_get_voice_and_the_gauges(
    kafka: Kafka, voice_worker: Worker
) -> None:
    departments = Departments(kafka.bootstrap)
    departments.topics = {"order": voice_worker.env["KEEL_TOPIC_ORDERS"],
                          "shipment": voice_worker.env["KEEL_TOPIC_SHIPMENTS"],
                          "contact": voice_worker.env["KEEL_TOPIC_CONTACTS"]}  # fmt: skip
    now = int(time.time() * 1000)
    events, truth = week_of_contacts(now)
    late = events[-20:]  # the last 20 arrive after a re-send of everything else
    departments.send(events[:-20])
    departments.send(events[:-20])  # re-sent: every event again, same event ids
    departments.send(late)
    departments.send(random.Random(2).sample(events, 30))  # and some again, out of order

    def settled() -> dict | None:
        status, body = voice_worker.get("/voice?window=7d")
        return body if status == 200 and body["total"]["count"] == len(truth) else None

    week = wait_for("/voice to count every contact once", settled, 90)
    at = week["as_of"]
    want = expected(truth, at, 7 * D)
    got = {t["topic"]: Counter({k: n for k, n in t["kinds"].items() if n}) for t in week["topics"]}
    assert got == want
    assert week["total"]["count"] == 150 and week["total"]["previous"] == 0
    for row in week["topics"]:
        topic = row["topic"]
        mine = [c for c in truth if c["topic"] == topic]
        open_complaints = sum(c["kind"] == "COMPLAINT" and c["resolved"] is None for c in mine)
        assert row["open_complaints"] == open_complaints, topic
        durations = sorted((c["resolved"] - c["opened"]) / 1000 for c in mine if c["resolved"])
        if durations:
            mid = len(durations) // 2
            median = (durations[mid] if len(durations) % 2
                      else (durations[mid - 1] + durations[mid]) / 2)  # fmt: skip
            assert row["median_resolve_s"] == pytest.approx(median, abs=0.1), topic
    products = {p["name"]: p["count"] for p in week["products"]}
    assert products == {"lamp": sum(bool(c["sku"]) for c in truth)}
    channels = {c["name"]: c["count"] for c in week["channels"]}
    assert channels == {"CHAT": 75, "EMAIL": 75}

    status, day = voice_worker.get("/voice?window=1d")
    assert status == 200
    want_day = expected(truth, day["as_of"], D)
    assert {t["topic"]: t["count"] for t in day["topics"]} == {
        t: sum(c.values()) for t, c in want_day.items()}
    assert voice_worker.get("/voice?window=2d")[0] == 400

    # the customers behind a topic, with their own words
    status, behind = voice_worker.get("/voice/customers?topic=delivery&window=7d&kind=COMPLAINT")
    assert status == 200
    words = {k["words"] for c in behind["customers"] for k in c["contacts"]}
    assert words == {WORDS["delivery"]}
    assert sum(len(c["contacts"]) for c in behind["customers"]) == want["delivery"]["COMPLAINT"]

    # voice.v1: the latest record per topic has the same week
    codec = get_codec()

    def latest_records() -> dict | None:
        latest: dict[str, dict] = {}
        for msg in read_topic(kafka.bootstrap, voice_worker.env["KEEL_TOPIC_VOICE"]):
            latest[msg.key().decode()] = codec.decode(msg.value(), "VoiceTopic")
        weeks = {t: {w["window"]: w for w in r["windows"]}["7d"] for t, r in latest.items()}
        counts = {t: w["count"] for t, w in weeks.items()}
        if counts != {t: sum(c.values()) for t, c in want.items()}:
            return None
        return weeks

    weeks = wait_for("voice.v1 to carry the week", latest_records, 30)
    for topic, w in weeks.items():
        assert {k: n for k, n in w["kinds"].items() if n} == dict(want[topic])

    # the gauges: the 3 busiest topics by name, the rest summed, every kind
    status, text = voice_worker.get("/metrics")
    assert status == 200
    top = [t["topic"] for t in sorted(week["topics"], key=lambda t: (-t["count"], t["topic"]))[:3]]
    for topic in top:
        for kind in KINDS:
            value = metric_value(text, "keel_voice_contacts", window="7d", topic=topic, kind=kind)
            assert value == want[topic][kind], (topic, kind)
    rest = sum(sum(c.values()) for t, c in want.items() if t not in top)
    assert metric_value(text, "keel_voice_contacts", window="7d", topic="other topics") == rest
    labels = {line.split('topic="')[1].split('"')[0] for line in text.splitlines()
              if line.startswith("keel_voice_contacts{")}  # fmt: skip
    assert labels == {*top, "other topics"}  # bounded: KEEL_VOICE_TOP=3 names and the rest


def test_any_worker_answers_for_the_voice_owner_and_its_successor_counts_the_same(
    cluster: Cluster, departments: Departments
) -> None:
    """Two workers: /voice and the board's stream through either; when the voice owner stops,
    the other restores the facts table and counts exactly as before, then goes on."""
    import http.client
    import json

    from tests.integration.harness import bearer

    workers = cluster(2, "voice2")
    now = int(time.time() * 1000)
    events = [contact(unique("k"), at=now - (i + 1) * 60_000, customer_id=unique("c"),
                      kind=KINDS[i % 5], topic=TOPICS[i % 3]) for i in range(20)]  # fmt: skip
    departments.send(events + events[:7])

    def total(w: Worker) -> int | None:
        status, body = w.get("/voice?window=1d")
        return body["total"]["count"] if status == 200 else None

    for w in workers:
        wait_for(f"{w.url} to count 20", lambda w=w: total(w) == 20, 90)

    def owner() -> Worker | None:
        exporting = [w for w in workers if w.child.running
                     and "keel_voice_contacts{" in str(w.get("/metrics")[1])]  # fmt: skip
        return exporting[0] if len(exporting) == 1 else None

    voice_owner = wait_for("one voice owner exporting the gauges", owner, 30)
    other = next(w for w in workers if w is not voice_owner)

    # the board's stream through the worker that does not own the voice partition
    conn = http.client.HTTPConnection("127.0.0.1", other.port, timeout=10)
    conn.request("GET", "/desk/voice/events?window=1d", headers=bearer("read"))
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
    event = None
    while event is None:
        line = resp.fp.readline().decode()
        if line.startswith("data: ") and '"total"' in line:
            event = json.loads(line[6:])
    conn.close()
    assert event["total"]["count"] == 20
    want = Counter(e["topic"] for _, e in events)
    assert {t["topic"]: t["count"] for t in event["topics"]} == dict(want)

    voice_owner.stop()
    wait_for("the survivor ready", lambda: other.get("/readyz")[0] == 200, 90)
    wait_for("the survivor to count the same 20", lambda: total(other) == 20, 90)
    departments.send([contact(unique("k"), at=int(time.time() * 1000), customer_id=unique("c"),
                              kind="IDEA", topic="delivery")])  # fmt: skip
    wait_for("and the next one", lambda: total(other) == 21, 60)
    assert "keel_voice_contacts{" in str(other.get("/metrics")[1])


def test_a_sigkill_mid_feed_and_a_lost_disk_still_count_every_contact_once(
    kafka: Kafka, tmp_path: Path
) -> None:
    """The facts are outputs of the join's batches and the voice-facts table is changelogged:
    a worker killed while it works through contacts replays them after a restart, and one that
    lost its data dir restores them, and either way every contact counts once."""
    import shutil

    app_id = unique("voicecrash")
    topics = {"KEEL_TOPIC_ORDERS": f"{app_id}-orders", "KEEL_TOPIC_SHIPMENTS": f"{app_id}-ship",
              "KEEL_TOPIC_CONTACTS": f"{app_id}-contacts", "KEEL_TOPIC_STATE": f"{app_id}-state",
              "KEEL_TOPIC_VOICE": f"{app_id}-voice", "KEEL_TOPIC_COMMANDS": f"{app_id}-cmd",
              "KEEL_TOPIC_COMMAND_OUTCOMES": f"{app_id}-out"}  # fmt: skip
    data = tmp_path / "data"
    worker = Worker(kafka.bootstrap, data, free_port(), tmp_path / "w.log", KEEL_APP_ID=app_id,
                    **topics)  # fmt: skip
    departments = Departments(kafka.bootstrap)
    departments.topics = {"order": topics["KEEL_TOPIC_ORDERS"],
                          "shipment": topics["KEEL_TOPIC_SHIPMENTS"],
                          "contact": topics["KEEL_TOPIC_CONTACTS"]}  # fmt: skip
    now = int(time.time() * 1000)
    events = [contact(unique("k"), at=now - (i + 1) * 10_000, customer_id=f"c-{i % 97}",
                      kind=KINDS[i % 5], topic=TOPICS[i % 5]) for i in range(1500)]  # fmt: skip

    def total() -> int | None:
        status, body = worker.get("/voice?window=1d")
        return body["total"]["count"] if status == 200 else None

    try:
        worker.start()
        departments.send(events[:300])
        wait_for("the first 300", lambda: total() == 300, 60)
        departments.send(events[300:])
        wait_for("the worker in the middle of the rest", lambda: 300 < (total() or 0), 60)
        seen = total()
        worker.kill()  # SIGKILL, mid-feed
        print(f"\nkilled at {seen} of 1500 contacts counted")
        departments.send(events[:100])  # and some re-sent while it is down
        worker.start()
        wait_for("every contact once after the restart", lambda: total() == 1500, 120)
        worker.stop()
        shutil.rmtree(data)  # the disk is gone: the tables come back from their changelogs
        worker.start()
        wait_for("every contact once from the changelogs", lambda: total() == 1500, 120)
        status, week = worker.get("/voice?window=7d")
        assert {t["topic"]: t["count"] for t in week["topics"]} == {t: 300 for t in TOPICS}
    finally:
        worker.stop()
