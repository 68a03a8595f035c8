"""The Voice of the Customer's rules (streams/domain/voice.py): facts from the join, windows by
event
time, late contacts, re-sends, replays and moves counted once, keyword tagging."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from streams.domain import voice
from streams.domain.commands import Refused
from streams.domain.state import apply_event, empty_state
from tests.builders import T0, contact, order

H = voice.HOUR_MS
D = 24 * H
NOW = T0 + 60 * D


class Pipeline:
    """The join's part in miniature: states per customer, facts sent, the facts table."""

    def __init__(self, tagger: Any = voice.DEFAULT_TAGGER) -> None:
        self.states: dict[str, dict] = {}
        self.table: dict[str, dict] = {}
        self.sent: list[dict] = []
        self.tagger = tagger

    def apply(self, customer_id: str, event: tuple[str, dict]) -> None:
        kind, body = event
        before = self.states.get(customer_id)
        after, changed = apply_event(before or empty_state(customer_id), kind, body, NOW)
        if not changed:
            return
        self.states[customer_id] = after
        for fact in voice.facts_to_send(before, after, kind, body, self.tagger):
            self.sent.append(fact)
            self.receive(fact)

    def receive(self, fact: dict) -> bool:
        merged = voice.merge_fact(self.table.get(fact["contact_id"]), fact)
        if merged is not None:
            self.table[fact["contact_id"]] = merged
        return merged is not None

    def agg(self, window: str, now: int = NOW) -> dict:
        return voice.aggregate(self.table.values(), now, voice.WINDOWS[window])

    def topic(self, window: str, topic: str) -> dict:
        rows = {r["topic"]: r for r in self.agg(window)["topics"]}
        return rows[topic]


def complaint(contact_id: str, at: int, **kw: Any) -> tuple[str, dict]:
    kw.setdefault("kind", "COMPLAINT")
    kw.setdefault("customer_id", "c-1")
    return contact(contact_id, at=at, **kw)


def test_windows_count_by_event_time_and_compare_with_the_window_before() -> None:
    p = Pipeline()
    ages = {"k-30m": H // 2, "k-90m": 3 * H // 2, "k-3d": 3 * D, "k-10d": 10 * D,
            "k-40d": 40 * D, "k-70d": 70 * D}  # fmt: skip
    for contact_id, age in ages.items():
        p.apply("c-1", complaint(contact_id, NOW - age, topic="delivery", note="late"))
    counts = {w: (p.topic(w, "delivery")["count"], p.topic(w, "delivery")["previous"])
              for w in ("1h", "1d", "7d", "30d")}  # fmt: skip
    # 1h: (now-1h, now] holds k-30m; the hour before holds k-90m.
    # 1d: k-30m, k-90m; the day before: none. 7d: + k-3d; before: k-10d. 30d: + k-10d; before: k-40d
    assert counts == {"1h": (1, 1), "1d": (2, 0), "7d": (3, 1), "30d": (4, 1)}
    week = p.topic("7d", "delivery")
    assert week["change"] == 2.0 and week["trend"] == "up"
    assert week["kinds"]["COMPLAINT"] == 3 and week["open_complaints"] == 3
    assert p.topic("1d", "delivery")["change"] is None  # nothing the day before


def test_a_window_boundary_belongs_to_the_later_window() -> None:
    p = Pipeline()
    p.apply("c-1", complaint("k-edge", NOW - H, topic="delivery"))
    assert p.topic("1h", "delivery")["count"] == 0
    assert p.topic("1h", "delivery")["previous"] == 1
    assert p.topic("1d", "delivery")["count"] == 1


def test_a_late_contact_lands_in_the_window_it_happened_in() -> None:
    p = Pipeline()
    p.apply("c-1", complaint("k-now", NOW - 60_000, topic="billing"))
    p.apply("c-1", complaint("k-late", NOW - 5 * D, topic="billing"))  # arrives last
    assert p.topic("1d", "billing")["count"] == 1
    assert p.topic("7d", "billing")["count"] == 2
    # ... and a contact whose OPENED arrives after a note dates itself by the OPENED
    p.apply("c-1", complaint("k-opened-late", NOW - 2 * H, type_="NOTE_ADDED", topic="billing"))
    assert p.topic("1h", "billing")["previous"] == 0
    p.apply("c-1", complaint("k-opened-late", NOW - 3 * D, topic="billing"))
    assert p.topic("1d", "billing")["count"] == 1
    assert p.topic("7d", "billing")["count"] == 3


def test_re_sends_replays_and_a_contacts_later_events_count_once() -> None:
    p = Pipeline()
    opened = complaint("k-1", NOW - 2 * H, topic="delivery", note="where is my parcel")
    p.apply("c-1", opened)
    p.apply("c-1", opened)  # re-sent: the state does not change, no fact is sent
    assert len(p.sent) == 1
    assert p.receive(p.sent[0]) is False  # a replayed fact changes nothing
    p.apply("c-1", complaint("k-1", NOW - H, type_="NOTE_ADDED", topic="delivery", note="again"))
    p.apply("c-1", complaint("k-1", NOW - H // 2, type_="RESOLVED", topic="delivery"))
    week = p.topic("7d", "delivery")
    assert week["count"] == 1 and week["open_complaints"] == 0
    assert week["median_resolve_s"] == 1.5 * 3600
    # every fact replayed in any order: the table ends where it was
    table = dict(p.table)
    for fact in random.Random(7).sample(p.sent, len(p.sent)):
        p.receive(fact)
    assert p.table == table


def test_a_contact_that_moves_to_another_customer_counts_once_with_its_new_customer() -> None:
    p = Pipeline()
    event = complaint("k-1", NOW - H, topic="delivery", customer_id=None)
    p.apply("c-1", event)
    p.apply("c-2", event)  # the same event, now joined to its strongest reference's customer
    week = voice.aggregate(p.table.values(), NOW, voice.WINDOWS["7d"])
    assert week["total"]["count"] == 1
    behind = voice.customers_behind(p.table.values(), "delivery", NOW, voice.WINDOWS["7d"])
    assert [c["customer_id"] for c in behind] == ["c-2"]


def test_a_contact_without_topic_is_tagged_from_its_words() -> None:
    p = Pipeline()
    p.apply("c-1", complaint("k-1", NOW - H, note="The parcel arrived two weeks LATE"))
    p.apply("c-1", complaint("k-2", NOW - H, note="I was charged twice, refund please"))
    p.apply("c-1", complaint("k-3", NOW - H, note="Nothing in particular"))
    p.apply("c-1", complaint("k-4", NOW - H, topic="  Delivery ", note="invoice"))
    p.apply("c-1", complaint("k-5", NOW - H))  # no words at all
    topics = {f["contact_id"]: (f["topic"], f["tagged"]) for f in p.table.values()}
    assert topics == {
        "k-1": ("delivery", True),
        "k-2": ("billing", True),
        "k-3": ("other", True),
        "k-4": ("delivery", False),  # the department's topic wins, normalised
        "k-5": ("other", True),
    }


def test_the_keyword_map_is_configurable_whole_words_and_most_hits_win() -> None:
    tagger = voice.compile_keywords({"Packaging": ["box", "bubble wrap"], "noise": ["loud"]})
    assert voice.tag("the box was crushed, the bubble wrap torn", tagger) == "packaging"
    assert voice.tag("boxing day", tagger) == "other"  # whole words only
    assert voice.tag("loud loud box", tagger) == "noise"
    p = Pipeline(tagger)
    p.apply("c-1", complaint("k-1", NOW - H, note="A loud fan"))
    assert p.table["k-1"]["topic"] == "noise"


def test_products_come_from_the_contacts_order_even_when_the_order_arrives_later() -> None:
    p = Pipeline()
    lines = [{"sku": "lamp", "quantity": 1, "unit_price_cents": 100},
             {"sku": "bulb", "quantity": 2, "unit_price_cents": 10}]  # fmt: skip
    p.apply("c-1", complaint("k-1", NOW - H, topic="quality", order_id="o-1"))
    assert p.table["k-1"]["skus"] == []
    p.apply("c-1", order("c-1", "o-1", at=NOW - 2 * D, lines=lines))
    assert p.table["k-1"]["skus"] == ["bulb", "lamp"]
    p.apply("c-1", complaint("k-2", NOW - H, topic="quality", order_id="o-1", channel="CHAT"))
    products = {r["name"]: r["count"] for r in p.agg("7d")["products"]}
    channels = {r["name"]: r["count"] for r in p.agg("7d")["channels"]}
    assert products == {"bulb": 2, "lamp": 2} and channels == {"PHONE": 1, "CHAT": 1}


def test_kinds_and_the_topics_dominant_kind() -> None:
    p = Pipeline()
    for i, kind in enumerate(["COMPLIMENT", "COMPLIMENT", "COMPLAINT", "IDEA"]):
        p.apply("c-1", complaint(f"k-{i}", NOW - H, topic="staff", kind=kind))
    week = p.agg("7d")
    assert week["kinds"]["COMPLIMENT"]["count"] == 2 and week["kinds"]["IDEA"]["count"] == 1
    assert week["topics"][0]["kind"] == "COMPLIMENT"
    assert week["total"]["count"] == 4


def test_the_voice_v1_record_has_every_window_and_encodes() -> None:
    from streams.encoding.codec import get_codec

    p = Pipeline()
    p.apply("c-1", complaint("k-1", NOW - 2 * D, topic="delivery", channel="EMAIL"))
    p.apply("c-1", complaint("k-2", NOW - 20 * D, topic="delivery"))
    record = voice.topic_record(p.table.values(), "delivery", NOW)
    by_window = {w["window"]: w for w in record["windows"]}
    assert [by_window[w]["count"] for w in ("1h", "1d", "7d", "30d")] == [0, 0, 1, 2]
    assert by_window["7d"]["channels"] == {"EMAIL": 1}
    codec = get_codec()
    assert codec.decode(codec.encode("VoiceTopic", record), "VoiceTopic") == record


@pytest.mark.parametrize("text", ["", None])
def test_no_words_is_other(text: str | None) -> None:
    assert voice.tag(text) == "other"


# ----------------------------------------------------------------------------- announcements


def announcement(**kw: Any) -> dict:
    body = {"announcement_id": "a-1", "topic": "Delivery", "window": "1d", "text": "fixed"}
    return voice.announcement_of({**body, **kw})


def test_an_announcement_goes_to_each_complaining_reachable_customer_once() -> None:
    p = Pipeline()
    for customer_id, email in (("c-1", "a@example.com"), ("c-2", None), ("c-3", "c@example.com")):
        p.apply(customer_id, complaint(f"k-{customer_id}", NOW - H, customer_id=customer_id,
                                       email=email, topic="delivery"))  # fmt: skip
    p.apply("c-1", complaint("k-c-1b", NOW - 2 * H, topic="delivery"))  # c-1 twice: told once
    p.apply("c-4", complaint("k-c-4", NOW - H, customer_id="c-4", email="d@example.com",
                             topic="delivery", kind="COMPLIMENT"))  # not a complaint
    p.apply("c-5", complaint("k-c-5", NOW - 3 * D, customer_id="c-5", email="e@example.com",
                             topic="delivery"))  # outside the window
    request = announcement()
    assert request["topic"] == "delivery" and request["kind"] == "COMPLAINT"
    commands, skipped = voice.announce_commands(p.table.values(), request, "rep-7", NOW)
    assert sorted(c["customer_id"] for c in commands) == ["c-1", "c-3"]
    assert skipped == {"no_contact_identifier": 1}  # c-2: no e-mail, no phone
    assert {c["type"] for c in commands} == {"ANNOUNCE"} and {c["note"] for c in commands} == {
        "fixed"}
    again, _ = voice.announce_commands(p.table.values(), request, "rep-7", NOW + 5)
    assert [c["command_id"] for c in again] == [c["command_id"] for c in commands]
    other, _ = voice.announce_commands(p.table.values(), announcement(announcement_id="a-2"),
                                       "rep-7", NOW)  # fmt: skip
    assert not {c["command_id"] for c in other} & {c["command_id"] for c in commands}
    from streams.encoding.codec import get_codec

    codec = get_codec()
    for command in commands:
        assert codec.decode(codec.encode("DeskCommand", command), "DeskCommand") == command


@pytest.mark.parametrize(("body", "field"), [
    ({"text": ""}, "text"), ({"window": "2d"}, "window"), ({"kind": "RANT"}, "kind"),
    ({"topic": None}, "topic"), ({"extra": 1}, "extra"),
    ({"announcement_id": 5}, "announcement_id"),
])  # fmt: skip
def test_an_announcement_that_makes_no_sense_is_refused(body: dict, field: str) -> None:
    from streams.domain.commands import Refused

    with pytest.raises(Refused) as refused:
        announcement(**body)
    assert refused.value.status == 400 and refused.value.field == field


def test_a_customer_told_shows_what_and_when_and_is_never_a_pending_command() -> None:
    from streams.domain.commands import apply_command
    from streams.domain.signals import active_signals, next_check_ms

    p = Pipeline()
    p.apply("c-1", complaint("k-1", NOW - H, email="a@example.com", topic="delivery"))
    [command] = voice.announce_commands(p.table.values(), announcement(), "rep-7", NOW)[0]
    state, changed = apply_command(p.states["c-1"], command, NOW)
    assert changed and apply_command(state, command, NOW + 1) == (state, False)
    signals = active_signals(state, NOW + 3 * D)  # long after any command timeout
    assert [s["type"] for s in signals] == ["COMPLAINT_UNRESOLVED", "CUSTOMER_TOLD"]
    told = signals[1]
    day = time.strftime("%Y-%m-%d", time.gmtime(NOW / 1000))
    assert told["detail"] == f"told on {day}: fixed (announcement a-1 about delivery, by rep-7)."
    assert told["raised_at"] == NOW
    assert next_check_ms(state, NOW) is not None  # the open complaint's window, not the command
    assert next_check_ms(state, NOW + 3 * D) is None


# ------------------------------------------ through the real join agent (tests/join_harness.py)


@pytest.mark.parametrize("crash_rate", [0.0, 0.3])
def test_through_the_join_a_contact_that_moves_and_is_re_sent_is_one_fact_of_its_last_customer(
    crash_rate: float,
) -> None:
    """streams/worker/agent.py's handlers on a real checkpoint.Transaction (crashed batches
    replayed): the contact is first placed through its e-mail on B, then moves to A, the
    customer of its order, and is re-sent; the voice-facts table holds it once, as A's."""
    from tests.builders import order as order_event
    from tests.join_harness import Worker

    a = order_event("c-ann", "o-ann", at=NOW - 2 * H, event_id="e-oa")
    b = order_event("c-bo", "o-bo", at=NOW - 2 * H, event_id="e-ob", email="bo@example.com")
    complaint_ = contact("k-1", at=NOW - H, event_id="e-k1", order_id="o-ann",
                         email="BO@example.com", kind="COMPLAINT", note="the parcel is late")
    for seed in range(12):
        worker = Worker(seed, crash_rate=crash_rate, start_ms=NOW)
        worker.run([complaint_], NOW).run([b], NOW)
        assert {f["customer_id"] for f in worker.table("voice-facts").values()} == {"c-bo"}
        worker.run([a], NOW).run([complaint_, complaint_], NOW)
        facts = worker.table("voice-facts")
        assert list(facts) == ["k-1"], seed
        assert facts["k-1"]["customer_id"] == "c-ann" and facts["k-1"]["topic"] == "delivery"
        assert facts["k-1"]["skus"] == ["kettle"]  # the order's, once the contact is on A
        week = voice.aggregate(facts.values(), NOW, voice.WINDOWS["7d"])
        assert week["total"]["count"] == 1 and week["total"]["open_complaints"] == 1


def test_an_announcement_with_a_window_or_kind_that_is_no_string_is_refused() -> None:
    """Found by schemathesis: {"window": {}} was a 500 (a dict is unhashable)."""
    body = {"announcement_id": "a-1", "topic": "delivery", "text": "sorry"}
    for field in ("window", "kind"):
        with pytest.raises(Refused) as refused:
            voice.announcement_of({**body, field: {}})
        assert (refused.value.status, refused.value.field) == (400, field)
