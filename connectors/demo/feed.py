"""A demo feed that plays the three departments, so ``make run`` shows keel alive.

The web shop places orders (keyed by customer), shipping sends parcel events (keyed by
order only), the contact centre logs cases (keyed by case, often knowing only an e-mail,
a phone number or an order id). Events are interleaved across departments and some
arrive before the order they refer to. Planted among the ordinary customers:

- ``c-dup``   places the same basket twice within minutes (a duplicate order),
- ``c-late``  waits for a parcel whose promised date has passed,
- ``c-lost``  had a parcel marked LOST that was then delivered after all,
- ``c-again`` calls twice about the same order.

The ordinary customers' contacts say what customers say (compliments, ideas, complaints,
questions; some without a topic, for keel to tag from their words), so the Voice of the
Customer board (``/desk/voice``) has something to show.

    $ python -m connectors.demo.feed --customers 300 --rate 20
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg

from connectors.settings import ConnectorSettings
from connectors.sources.debezium_outbox import DEPARTMENT_OF_KIND, outbox_row, schema_sql, write
from streams.config import Settings
from streams.encoding.codec import get_codec
from streams.kafka.producer import ConfirmedProducer

log = logging.getLogger(__name__)

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
SKUS = ["kettle", "toaster", "mug-set", "teapot", "grinder", "scale", "blender", "whisk"]
FIRST = ["Ada", "Ben", "Chloe", "Dev", "Eva", "Femi", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea"]
LAST = ["Okafor", "Smith", "Novak", "Garcia", "Ito", "Berg", "Rossi", "Khan", "Meyer", "Silva"]

Item = tuple[str, dict]  # (kind, event)

#: (kind, topic or None: tagged from the note, note, weight) of an ordinary customer's contact
VOICES: list[tuple[str, str | None, str, int]] = [
    ("QUESTION", "where is my parcel", "Customer asks when the parcel arrives.", 6),
    ("COMPLAINT", "delivery", "The courier left the parcel in the rain.", 3),
    ("COMPLAINT", None, "Parcel arrived two days late, the tracking never updated.", 4),
    ("COMPLAINT", "billing", "Charged twice for one order.", 2),
    ("COMPLAINT", None, "The kettle is broken, the lid cracked on the first day.", 2),
    ("COMPLAINT", "website", "Checkout kept failing on the last step.", 1),
    ("COMPLIMENT", "staff", "The agent was really helpful and friendly, thank you!", 3),
    ("COMPLIMENT", None, "Super fast delivery, the parcel arrived the next morning.", 2),
    ("COMPLIMENT", "quality", "Best teapot we ever had.", 2),
    ("IDEA", "website", "Would love to save my basket for later on the website.", 2),
    ("IDEA", None, "Put a return label in the box, please.", 1),
    ("REQUEST", "returns", "Wants to exchange the toaster for another colour.", 2),
    ("QUESTION", "billing", "Asks for a copy of the invoice.", 2),
]


class Feed:
    """Seeded generator of realistic department events (timestamps in ms)."""

    def __init__(self, seed: int = 7, now_ms: int | None = None) -> None:
        self.rng = random.Random(seed)
        #: what contacts say, apart from self.rng so that the stories stay what they were
        self.voice_rng = random.Random(seed + 1)
        self.now = now_ms if now_ms is not None else int(time.time() * 1000)
        self._n = 0
        #: phone numbers given out: every customer has its own (two that drew the same one
        #: would share it, which the oracle of the fault tests cannot tell apart)
        self._phones: set[str] = set()

    def _id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _base(self, at: int, source: str) -> dict:
        return {"event_id": self._id(), "occurred_at": at, "source": source}

    def order(
        self,
        at: int,
        type_: str,
        order_id: str,
        customer: dict,
        lines: list[dict],
        promised_by: int | None = None,
        channel: str = "WEB",
    ) -> Item:
        return "order", {
            **self._base(at, "webshop" if channel == "WEB" else "erp"),
            "type": type_,
            "order_id": order_id,
            "customer_id": customer["id"],
            "channel": channel,
            "items": lines,
            "total_cents": sum(ln["quantity"] * ln["unit_price_cents"] for ln in lines),
            "currency": "EUR",
            "promised_by": promised_by,
            "customer_name": customer["name"],
            "customer_email": customer["email"],
            "customer_phone": customer["phone"],
        }

    def shipment(
        self,
        at: int,
        type_: str,
        shipment_id: str,
        order_id: str,
        expected_by: int | None = None,
        replaces: str | None = None,
        note: str | None = None,
    ) -> Item:
        return "shipment", {
            **self._base(at, "carrier-dhl"),
            "type": type_,
            "shipment_id": shipment_id,
            "order_id": order_id,
            "carrier": "DHL",
            "tracking_number": f"JD{shipment_id[-6:]}",
            "expected_by": expected_by,
            "replaces_shipment_id": replaces,
            "note": note,
        }

    def contact(
        self,
        at: int,
        type_: str,
        contact_id: str,
        *,
        kind: str = "QUESTION",
        channel: str = "PHONE",
        customer_id: str | None = None,
        email: str | None = None,
        phone: str | None = None,
        order_id: str | None = None,
        topic: str | None = None,
        note: str | None = None,
    ) -> Item:
        return "contact", {
            **self._base(at, "callcenter"),
            "type": type_,
            "contact_id": contact_id,
            "channel": channel,
            "kind": kind,
            "customer_id": customer_id,
            "email": email,
            "phone": phone,
            "order_id": order_id,
            "topic": topic,
            "agent": self.rng.choice(["amira", "bo", "carla", "dmitri"]),
            "note": note,
        }

    def customer(self, cid: str) -> dict:
        first, last = self.rng.choice(FIRST), self.rng.choice(LAST)
        phone = f"+49 30 {self.rng.randrange(10**6, 10**7)}"
        while phone in self._phones:
            phone = f"+49 30 {self.rng.randrange(10**6, 10**7)}"
        self._phones.add(phone)
        return {
            "id": cid,
            "name": f"{first} {last}",
            "email": f"{first}.{last}.{cid}@example.com".lower(),
            "phone": phone,
        }

    def lines(self) -> list[dict]:
        return [
            {
                "sku": sku,
                "quantity": self.rng.randint(1, 3),
                "unit_price_cents": self.rng.choice([999, 1999, 2499, 4999]),
            }
            for sku in self.rng.sample(SKUS, self.rng.randint(1, 3))
        ]

    def story(self, cid: str) -> list[Item]:
        """An ordinary customer: an order, its parcel's journey, maybe a question."""
        c, t0 = self.customer(cid), self.now - self.rng.randint(2 * HOUR, 3 * DAY)
        oid, sid = f"o-{cid}-1", f"s-{cid}-1"
        items = [self.order(t0, "PLACED", oid, c, self.lines(), promised_by=t0 + 4 * DAY)]
        steps = ["CREATED", "DISPATCHED", "IN_TRANSIT", "OUT_FOR_DELIVERY", "DELIVERED"]
        for i, step in enumerate(steps[: self.rng.randint(1, len(steps))]):
            items.append(
                self.shipment(t0 + (i + 1) * 3 * HOUR, step, sid, oid, expected_by=t0 + 3 * DAY)
            )
        if self.rng.random() < 0.4:
            case, at = f"k-{cid}-1", t0 + self.rng.randint(1, 20) * HOUR
            how = self.rng.choice(["email", "phone", "order_id"])
            ident = {
                "email": {"email": c["email"].upper()},
                "phone": {"phone": c["phone"]},
                "order_id": {"order_id": oid},
            }[how]
            kind, topic, note, _ = self.voice_rng.choices(VOICES, [v[3] for v in VOICES])[0]
            said: dict[str, Any] = {"kind": kind, "topic": topic,
                                    "channel": "EMAIL" if how == "email" else "PHONE"}  # fmt: skip
            items.append(self.contact(at, "OPENED", case, note=note, **said, **ident))
            if self.rng.random() < 0.6:
                answer = "Gave tracking number." if kind == "QUESTION" else "Sorted it out."
                resolved = self.contact(at + HOUR, "RESOLVED", case, note=answer, **said, **ident)
                items.append(resolved)
        return items

    def planted(self) -> list[Item]:
        """The four situations keel exists to surface."""
        out: list[Item] = []
        dup = self.customer("c-dup")
        basket, t = self.lines(), self.now - 20 * MIN
        out += [
            self.order(t, "PLACED", "o-dup-1", dup, basket, channel="WEB"),
            self.order(t + 4 * MIN, "PLACED", "o-dup-2", dup, basket, channel="PHONE"),
        ]
        late = self.customer("c-late")
        t = self.now - 5 * DAY
        out += [
            self.order(t, "PLACED", "o-late-1", late, self.lines(), promised_by=t + 3 * DAY),
            self.shipment(t + HOUR, "DISPATCHED", "s-late-1", "o-late-1", expected_by=t + 3 * DAY),
        ]
        lost = self.customer("c-lost")
        t = self.now - 40 * DAY
        out += [
            self.order(t, "PLACED", "o-lost-1", lost, self.lines(), promised_by=t + 3 * DAY),
            self.shipment(t + HOUR, "DISPATCHED", "s-lost-1", "o-lost-1"),
            self.shipment(t + 10 * DAY, "LOST", "s-lost-1", "o-lost-1"),
            self.shipment(
                t + 10 * DAY + HOUR, "DISPATCHED", "s-lost-2", "o-lost-1", replaces="s-lost-1"
            ),
            self.shipment(t + 38 * DAY, "DELIVERED", "s-lost-1", "o-lost-1", note="found in depot"),
        ]
        again = self.customer("c-again")
        t = self.now - 2 * DAY
        out += [
            self.order(t, "PLACED", "o-again-1", again, self.lines()),
            self.contact(
                t + DAY,
                "OPENED",
                "k-again-1",
                order_id="o-again-1",
                kind="COMPLAINT",
                topic="damaged",
                note="Kettle arrived dented.",
            ),
            self.contact(
                t + DAY + 2 * HOUR,
                "OPENED",
                "k-again-2",
                phone=again["phone"],
                order_id="o-again-1",
                kind="COMPLAINT",
                topic="damaged",
                note="Calling again: nobody replied.",
            ),
        ]
        return out

    def history(self, customers: int) -> list[Item]:
        """Every story, interleaved; about a tenth of shipments/contacts before their order."""
        items = self.planted()
        for i in range(customers):
            items += self.story(f"c-{i:04d}")
        items.sort(key=lambda it: it[1]["occurred_at"] + self.rng.randint(-2, 1) * HOUR)
        return items


TOPIC_OF_KIND = {"order": "orders", "shipment": "shipments", "contact": "contacts"}
KEY_OF_KIND = {"order": "customer_id", "shipment": "order_id", "contact": "contact_id"}
SCHEMA_OF_KIND = {"order": "OrderEvent", "shipment": "ShipmentEvent", "contact": "ContactEvent"}


def encoded(items: list[Item], settings: Settings) -> Iterator[tuple[str, bytes, bytes]]:
    codec = get_codec()
    for kind, event in items:
        topic = getattr(settings.topics, TOPIC_OF_KIND[kind])
        yield topic, event[KEY_OF_KIND[kind]].encode(), codec.encode(SCHEMA_OF_KIND[kind], event)


class Departments:
    """Where the feed's events go: straight to Kafka, or with ``KEEL_CDC=debezium`` the shop's
    orders and shipping's parcels into their outbox tables in PostgreSQL (``POSTGRES_URL``),
    one transaction per department and batch, for Debezium to read (contacts still go to
    Kafka: the contact centre writes there itself)."""

    def __init__(self, settings: Settings, postgres_url: str, cdc: str) -> None:
        self.settings = settings
        self.producer = ConfirmedProducer(settings.kafka_bootstrap)
        self.outboxes: psycopg.Connection[Any] | None = None
        if cdc == "debezium":
            self.outboxes = psycopg.connect(postgres_url, autocommit=True, connect_timeout=10)
            for department in set(DEPARTMENT_OF_KIND.values()):
                self.outboxes.execute(schema_sql(department))

    def send(self, items: list[Item]) -> None:
        if self.outboxes is not None:
            for kind, department in DEPARTMENT_OF_KIND.items():
                topic = getattr(self.settings.topics, TOPIC_OF_KIND[kind])
                rows = [outbox_row(kind, event, topic) for k, event in items if k == kind]
                if rows:
                    with self.outboxes.transaction():
                        write(self.outboxes, department, rows)
            items = [item for item in items if item[0] not in DEPARTMENT_OF_KIND]
        records = list(encoded(items, self.settings))
        for topic in {r[0] for r in records}:
            self.producer.publish(topic, [(k, v) for tp, k, v in records if tp == topic])

    def close(self) -> None:
        if self.outboxes is not None:
            self.outboxes.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0, help="events per second")
    parser.add_argument("--api", default="http://127.0.0.1:6066")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s demo-feed %(message)s")
    connector_settings = ConnectorSettings.from_env()
    settings = connector_settings.keel
    items = Feed(seed=args.seed).history(args.customers)
    cdc = connector_settings.cdc
    departments = Departments(settings, connector_settings.postgres_url, cdc)
    via = " (orders and shipments through their outboxes and Debezium)" if cdc else ""
    print(
        f"demo feed: {len(items)} events for {args.customers + 4} customers "
        f"at {args.rate:g}/s{via}; try, while it runs:",
        flush=True,
    )
    auth = '-H "Authorization: Bearer $KEEL_READ_TOKEN" '  # after `. .run/tokens.env`
    for cid in ("c-dup", "c-late", "c-lost", "c-again", "c-0001"):
        print(f"  curl -s {auth}{args.api}/customers/{cid}", flush=True)
    print(f"  curl -s {auth}'{args.api}/customers?email=<an address>'", flush=True)
    batch = max(1, int(args.rate))
    try:
        for start in range(0, len(items), batch):
            departments.send(items[start : start + batch])
            log.info("sent %d/%d events", min(start + batch, len(items)), len(items))
            time.sleep(1.0)
    except KeyboardInterrupt:
        return 130
    finally:
        departments.close()
    print("demo feed: done; the stack keeps running (Ctrl-C stops it)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
