"""Valid input events for tests, with every field of docs/contract.md §3 and sensible defaults."""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

T0 = 1_790_000_000_000  # 2026-09-21, a fixed event time so tests are reproducible


def _base(at: int, source: str, event_id: str | None) -> dict[str, Any]:
    return {"event_id": event_id or str(uuid.uuid4()), "occurred_at": at, "source": source}


def order(
    customer_id: str,
    order_id: str,
    type_: str = "PLACED",
    at: int = T0,
    *,
    event_id: str | None = None,
    email: str | None = None,
    phone: str | None = None,
    name: str | None = "Ada Okafor",
    lines: list[dict] | None = None,
    promised_by: int | None = None,
    channel: str = "WEB",
) -> tuple[str, dict]:
    lines = (
        lines if lines is not None else [{"sku": "kettle", "quantity": 1, "unit_price_cents": 2999}]
    )
    return "order", {
        **_base(at, "webshop", event_id),
        "type": type_,
        "order_id": order_id,
        "customer_id": customer_id,
        "channel": channel,
        "items": lines,
        "total_cents": sum(x["quantity"] * x["unit_price_cents"] for x in lines),
        "currency": "EUR",
        "promised_by": promised_by,
        "customer_name": name,
        "customer_email": email,
        "customer_phone": phone,
    }


def shipment(
    order_id: str,
    shipment_id: str,
    type_: str = "DISPATCHED",
    at: int = T0,
    *,
    event_id: str | None = None,
    expected_by: int | None = None,
    replaces: str | None = None,
    note: str | None = None,
) -> tuple[str, dict]:
    return "shipment", {
        **_base(at, "carrier-dhl", event_id),
        "type": type_,
        "shipment_id": shipment_id,
        "order_id": order_id,
        "carrier": "DHL",
        "tracking_number": "JD0001",
        "expected_by": expected_by,
        "replaces_shipment_id": replaces,
        "note": note,
    }


def contact(
    contact_id: str,
    type_: str = "OPENED",
    at: int = T0,
    *,
    event_id: str | None = None,
    customer_id: str | None = None,
    email: str | None = None,
    phone: str | None = None,
    order_id: str | None = None,
    kind: str = "QUESTION",
    channel: str = "PHONE",
    topic: str | None = None,
    note: str | None = None,
    agent: str | None = "amira",
) -> tuple[str, dict]:
    return "contact", {
        **_base(at, "callcenter", event_id),
        "type": type_,
        "contact_id": contact_id,
        "channel": channel,
        "kind": kind,
        "customer_id": customer_id,
        "email": email,
        "phone": phone,
        "order_id": order_id,
        "topic": topic,
        "agent": agent,
        "note": note,
    }


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def shuffled_stories(
    rng: random.Random, customers: int, resent: float
) -> tuple[list[tuple[str, dict]], list[tuple[str, dict]]]:
    """(history, what is sent): the demo feed's stories of ``customers`` customers, a month
    back (every deadline has long passed, so nothing depends on the clock), and the same
    shuffled across topics with a share ``resent`` of them sent twice."""
    from connectors.sources.demo_feed import Feed

    run = uuid.uuid4().hex[:6]
    feed = Feed(seed=rng.randrange(10**6), now_ms=int(time.time() * 1000) - 30 * 86_400_000)
    history: list[tuple[str, dict]] = []
    for i in range(customers):
        history += feed.story(f"c-{run}-{i:04d}")
    sent = history + rng.sample(history, k=int(len(history) * resent))
    rng.shuffle(sent)
    return history, sent
