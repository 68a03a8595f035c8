"""A seeded generator of a realistic mixed department history, for the benchmarks.

Events follow the life of orders, parcels and cases of ``customers`` customers, drawn so that
about half are order events, 30 % shipment events and 20 % contact events. Each department keys
its topic by the id it knows (docs/contract.md §1), so shipments reach keel keyed by
``order_id`` and contacts by ``contact_id``; more than half the contacts carry no
``customer_id`` and must be joined through their order, e-mail or phone, so the joins do real
work. On top of that a few
per cent of events are re-sent (same ``event_id``) and some arrive late, after events that
happened after them.

The same seed always gives the same history, byte for byte, so runs are comparable::

    history = History(customers=1000, seed=7)
    for item in history.backlog(10_000):   # Item(kind, event, customer_id)
        ...
    live = history.live(now_ms)            # one more event, happening now

Activity is mildly skewed: 10 % of draws go to 2 % of the customers, the rest are uniform.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any, NamedTuple

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR

MIX = (("order", 0.5), ("shipment", 0.3), ("contact", 0.2))
SKUS = [f"sku-{i:03d}" for i in range(200)]
PRICES = [499, 999, 1499, 1999, 2499, 4999, 9999]
FIRST = ["Ada", "Ben", "Chloe", "Dev", "Eva", "Femi", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea"]
LAST = ["Okafor", "Smith", "Novak", "Garcia", "Ito", "Berg", "Rossi", "Khan", "Meyer", "Silva"]
AGENTS = ["amira", "bo", "carla", "dmitri", "eli", "fatou"]
TOPICS = ["where is my parcel", "invoice", "damaged item", "change address", "return", "refund"]
CARRIERS = ["DHL", "UPS", "DPD", "GLS"]
PARCEL_STEPS = ("CREATED", "DISPATCHED", "IN_TRANSIT", "OUT_FOR_DELIVERY", "DELIVERED")


class Item(NamedTuple):
    """One generated event: its kind, its body and the customer it belongs to."""

    kind: str
    event: dict[str, Any]
    customer_id: str


@dataclass
class _Order:
    order_id: str
    customer: int
    lines: list[dict[str, Any]]
    channel: str
    promised_by: int
    cancelled: bool = False


@dataclass
class _Parcel:
    shipment_id: str
    order_id: str
    customer: int
    carrier: str
    step: int = 0
    replaces: str | None = None


@dataclass
class _Case:
    contact_id: str
    customer: int
    ident: dict[str, Any]  # how the contact centre knows the customer on this case
    channel: str
    kind: str
    topic: str
    order_id: str | None
    resolved: bool = False


@dataclass
class _Customer:
    index: int
    name: str
    open_orders: list[str] = field(default_factory=list)
    order_ids: list[str] = field(default_factory=list)
    cases: list[str] = field(default_factory=list)


class History:
    """The evolving world of ``customers`` customers; every call moves it forward."""

    def __init__(self, customers: int, seed: int = 7, start_ms: int = 1_790_000_000_000) -> None:
        if customers < 1:
            raise ValueError("customers must be at least 1")
        self.rng = random.Random(seed)
        self.now = start_ms
        self.customers = [
            _Customer(i, f"{self.rng.choice(FIRST)} {self.rng.choice(LAST)}")
            for i in range(customers)
        ]
        self._hot = max(1, customers // 50)
        self.orders: dict[str, _Order] = {}
        self.parcels: dict[str, _Parcel] = {}
        self.cases: dict[str, _Case] = {}
        self._shippable: list[str] = []  # orders whose parcel has not arrived yet
        self._next = {"o": 0, "s": 0, "k": 0}

    # --- identities -----------------------------------------------------------------------

    @staticmethod
    def customer_id(index: int) -> str:
        return f"c-{index:07d}"

    @staticmethod
    def email(index: int) -> str:
        return f"customer.{index}@example.com"

    @staticmethod
    def phone(index: int) -> str:
        return f"+49 151 {index // 10000:04d} {index % 10000:04d}"

    def _new_id(self, prefix: str) -> str:
        self._next[prefix] += 1
        return f"{prefix}-{self._next[prefix]:08d}"

    def _event_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _pick_customer(self) -> _Customer:
        rng = self.rng
        if rng.random() < 0.1:
            return self.customers[rng.randrange(self._hot)]
        return self.customers[rng.randrange(len(self.customers))]

    # --- the three departments ------------------------------------------------------------

    def _order_event(self, at: int) -> Item:
        rng, c = self.rng, self._pick_customer()
        if c.open_orders and rng.random() < 0.55:
            order = self.orders[rng.choice(c.open_orders)]
            r = rng.random()
            type_ = "AMENDED" if r < 0.2 else "CANCELLED" if r < 0.32 else "COMPLETED"
            if type_ == "AMENDED":
                order.lines = self._lines()
            else:
                c.open_orders.remove(order.order_id)
                order.cancelled = type_ == "CANCELLED"  # its parcel stops (see below)
        else:
            channel = rng.choice(("WEB", "WEB", "WEB", "PHONE", "STORE", "PARTNER"))
            order = _Order(self._new_id("o"), c.index, self._lines(), channel, at + 4 * DAY)
            self.orders[order.order_id] = order
            c.open_orders.append(order.order_id)
            c.order_ids.append(order.order_id)
            if channel != "STORE":
                self._shippable.append(order.order_id)
            type_ = "PLACED"
        with_identity = type_ == "PLACED" or rng.random() < 0.5
        event = {
            "event_id": self._event_id(),
            "occurred_at": at,
            "source": "webshop" if order.channel == "WEB" else "erp",
            "type": type_,
            "order_id": order.order_id,
            "customer_id": self.customer_id(c.index),
            "channel": order.channel,
            "items": order.lines,
            "total_cents": sum(ln["quantity"] * ln["unit_price_cents"] for ln in order.lines),
            "currency": "EUR",
            "promised_by": order.promised_by if rng.random() < 0.9 else None,
            "customer_name": c.name if with_identity else None,
            "customer_email": self.email(c.index) if with_identity else None,
            "customer_phone": self.phone(c.index) if with_identity else None,
        }
        return Item("order", event, self.customer_id(c.index))

    def _lines(self) -> list[dict[str, Any]]:
        rng = self.rng
        return [
            {"sku": sku, "quantity": rng.randint(1, 3), "unit_price_cents": rng.choice(PRICES)}
            for sku in rng.sample(SKUS, rng.randint(1, 4))
        ]

    def _shipment_event(self, at: int) -> Item | None:
        rng, shippable = self.rng, self._shippable
        while True:
            if not shippable:
                return None
            # Parcels move soon after their order: pick among the most recent orders.
            slot = len(shippable) - 1 - rng.randrange(min(len(shippable), 4000))
            order_id = shippable[slot]
            if not self.orders[order_id].cancelled:
                break
            shippable[slot] = shippable[-1]
            shippable.pop()
        parcel = self.parcels.get(order_id)
        if parcel is None:
            order = self.orders[order_id]
            parcel = _Parcel(self._new_id("s"), order_id, order.customer, rng.choice(CARRIERS))
            self.parcels[order_id] = parcel
            type_ = "CREATED"
        else:
            r = rng.random()
            if parcel.step == 2 and r < 0.05:
                type_ = "DELAYED"
            elif parcel.step >= 2 and r < 0.02:
                type_ = "LOST"
            elif parcel.step == 3 and r < 0.05:
                type_ = "RETURNED"
            else:
                parcel.step += 1
                type_ = PARCEL_STEPS[parcel.step]
        if type_ in ("DELIVERED", "RETURNED"):
            shippable[slot] = shippable[-1]
            shippable.pop()
        event = {
            "event_id": self._event_id(),
            "occurred_at": at,
            "source": f"carrier-{parcel.carrier.lower()}",
            "type": type_,
            "shipment_id": parcel.shipment_id,
            "order_id": order_id,
            "carrier": parcel.carrier,
            "tracking_number": f"{parcel.carrier}{parcel.shipment_id[2:]}",
            "expected_by": at + 3 * DAY if type_ in ("CREATED", "DELAYED") else None,
            "replaces_shipment_id": parcel.replaces,
            "note": "parcel not found at depot" if type_ == "LOST" else None,
        }
        if type_ == "LOST":  # a replacement parcel goes out for the same order
            self.parcels[order_id] = _Parcel(
                self._new_id("s"),
                order_id,
                parcel.customer,
                parcel.carrier,
                replaces=parcel.shipment_id,
            )
        return Item("shipment", event, self.customer_id(parcel.customer))

    def _contact_event(self, at: int) -> Item:
        rng, c = self.rng, self._pick_customer()
        open_cases = [k for k in c.cases if not self.cases[k].resolved]
        if open_cases and rng.random() < 0.6:
            case = self.cases[rng.choice(open_cases)]
            r = rng.random()
            type_ = "NOTE_ADDED" if r < 0.4 else "ESCALATED" if r < 0.5 else "RESOLVED"
            case.resolved = type_ == "RESOLVED"
        elif c.cases and rng.random() < 0.05:
            case = self.cases[rng.choice(c.cases)]
            type_, case.resolved = "REOPENED", False
        else:
            case = self._new_case(c)
            type_ = "OPENED"
        agent = rng.choice(AGENTS)
        event = {
            "event_id": self._event_id(),
            "occurred_at": at,
            "source": "callcenter",
            "type": type_,
            "contact_id": case.contact_id,
            "channel": case.channel,
            "kind": case.kind,
            "customer_id": None,
            "email": None,
            "phone": None,
            "order_id": case.order_id if type_ == "OPENED" or rng.random() < 0.5 else None,
            "topic": case.topic if type_ == "OPENED" else None,
            "agent": agent,
            "note": f"{type_.lower()} by {agent}" if rng.random() < 0.8 else None,
            **case.ident,
        }
        return Item("contact", event, self.customer_id(c.index))

    def _new_case(self, c: _Customer) -> _Case:
        rng = self.rng
        order_id = rng.choice(c.order_ids) if c.order_ids and rng.random() < 0.6 else None
        r = rng.random()
        # A reference only joins once an order made it known, so the ones that need an
        # order are used only for customers who have one (otherwise the case would wait
        # forever and the state never became final).
        if not c.order_ids or r < 0.3:
            ident: dict[str, Any] = {"customer_id": self.customer_id(c.index)}
        elif r < 0.6:
            ident, order_id = {}, order_id or rng.choice(c.order_ids)
        elif r < 0.85:
            ident = {"email": f"  {self.email(c.index).upper()} "}
        else:
            ident = {"phone": self.phone(c.index).replace(" ", "-")}
        case = _Case(
            self._new_id("k"),
            c.index,
            ident,
            channel="EMAIL" if "email" in ident else rng.choice(("PHONE", "CHAT", "WEB")),
            kind=rng.choice(("QUESTION",) * 5 + ("REQUEST",) * 2 + ("COMPLAINT",) * 2 + ("IDEA",)),
            topic=rng.choice(TOPICS),
            order_id=order_id,
        )
        self.cases[case.contact_id] = case
        c.cases.append(case.contact_id)
        return case

    # --- streams of events ------------------------------------------------------------------

    def next(self, at: int) -> Item:
        """The next event of the world, happening at ``at`` (ms)."""
        r = self.rng.random()
        if r < MIX[0][1]:
            return self._order_event(at)
        if r < MIX[0][1] + MIX[1][1]:
            item = self._shipment_event(at)
            if item is not None:
                return item
            return self._order_event(at)
        return self._contact_event(at)

    def backlog(
        self,
        events: int,
        span_ms: int = 30 * DAY,
        duplicates: float = 0.03,
        late: float = 0.08,
        late_by: int = 20_000,
    ) -> list[Item]:
        """``events`` events spread over ``span_ms`` up to now, in arrival order.

        ``duplicates`` of them are re-sends of an earlier event (same event_id) arriving up
        to ``late_by`` events later; ``late`` of the others arrive up to ``late_by`` events
        after their place (a parcel scanned before its order reached keel, a note before
        its case was opened).
        """
        rng = self.rng
        unique = max(1, round(events / (1 + duplicates)))
        start = self.now
        step = max(1, span_ms // unique)
        keyed: list[tuple[int, int, Item]] = []
        for i in range(unique):
            item = self.next(start + i * step + rng.randrange(step))
            delay = rng.randrange(1, late_by) if rng.random() < late else 0
            keyed.append((i + delay, i, item))
        for n in range(events - unique):
            _, i, item = keyed[rng.randrange(unique)]
            keyed.append((i + rng.randrange(1, late_by), unique + n, item))
        keyed.sort(key=lambda k: (k[0], k[1]))
        self.now = start + span_ms
        return [item for _, _, item in keyed]

    def continue_with(self, known: set[str]) -> None:
        """Go on with only what keel has seen: the customers in ``known``, no open orders or cases.

        After a backlog was cut short (the rest skipped), events about orders or cases keel
        never saw would wait for them forever and read as keel being slow. From here on the
        world places new orders for customers keel knows, ships those and opens new cases.
        """
        kept = [c for c in self.customers if self.customer_id(c.index) in known]
        if not kept:
            raise ValueError("no known customer to continue with")
        for c in kept:
            c.open_orders, c.order_ids, c.cases = [], [], []
        self.customers = kept
        self._hot = max(1, len(kept) // 50)
        self._shippable = []

    def live(self, now_ms: int) -> Item:
        """One event happening now, for the freshness runs: ``occurred_at`` is ``now_ms``."""
        self.now = max(self.now, now_ms)
        return self.next(now_ms)
