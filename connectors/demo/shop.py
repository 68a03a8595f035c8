"""A simulated web shop that honours the desk's cancel commands, so `make run` shows the loop.

    desk "Cancel" ─► POST /customers/{id}/commands ─► commands.v1 ─┬─► inbox connector ──┐
                                                                    └─► webhook ─► this shop ─┤
        ┌───────────────────────────────────────────────────────────────────── keel_inbox ◄┘
        ▼
    this shop ─► keel_outbox (CANCELLED, same transaction) ─► outbox connector ─► orders.v1
                 (KEEL_CDC=debezium: webshop.keel_outbox ─► Debezium in Kafka Connect)
        ─► keel's CustomerState ─► the desk page

The shop knows its orders by reading ``orders.v1`` (the demo feed plays the shop's and the
ERP's order events there) and which of them have shipped from ``shipments.v1``. Every
``KEEL_OUTBOX_POLL_MS`` it takes the CANCEL_ORDER rows of ``keel_inbox`` it has not handled
and, in **one transaction** per row:

- an order it knows that is still PLACED/AMENDED and has not shipped: writes the order's
  CANCELLED event into ``keel_outbox`` (the outbox connector publishes it to orders.v1) and
  records the command in ``demo_shop_handled`` as ``cancelled``;
- an order already CANCELLED/COMPLETED, or one with a parcel on its way (any shipment event
  but CREATED; in ``make run``: ``o-late-1`` of ``c-late``): records ``rejected: <why>``;
- an order it has not seen (yet): leaves the row for the next poll, and after
  :data:`UNKNOWN_ORDER_GIVE_UP_S` records ``rejected: the shop does not know order …``.

The CANCELLED event's ``event_id`` is derived from the command id, so a command delivered twice
(inbox and webhook, or a redelivery) cancels once and keel applies it once. Other commands
(notes, resolving contacts) are the contact centre's, not the shop's: it leaves them.

It also receives the webhook (``POST /keel/commands`` on ``KEEL_SHOP_PORT``, default 8093): it
checks ``X-Keel-Signature`` against ``KEEL_WEBHOOK_SECRET`` (401 if wrong) and puts the command
into the same ``keel_inbox`` (``ON CONFLICT DO NOTHING``), so both delivery paths end in the
same place and are deduplicated by ``command_id``. A cancel it can already tell it will not
carry out is refused in the answer, so keel hears why (the webhook connector turns a final
4xx into a REJECTED outcome): 409 ``{"error": "order o-… has already shipped …"}`` or
``"… is already COMPLETED"``, 422 for an order it does not know after
:data:`UNKNOWN_ORDER_WEBHOOK_S` from the request (503 with ``Retry-After`` before that: its
view of orders.v1 may lag). The refusal is recorded in ``demo_shop_handled`` in the same
transaction, so the inbox path settles the command the same way; a command settled before is
answered as it was.

    $ python -m connectors.demo.shop        # POSTGRES_URL, KAFKA_BOOTSTRAP, KEEL_SHOP_PORT
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import sys
import threading
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError

from connectors.loops import Backoff, Stopper
from connectors.runner import Job, run
from connectors.settings import ConnectorSettings
from connectors.sinks.postgres_inbox import COLUMNS
from connectors.sinks.postgres_inbox import SCHEMA_SQL as INBOX_SQL
from connectors.sinks.webhook import COMMAND_ID_HEADER, SIGNATURE_HEADER, sign
from connectors.sources.debezium_outbox import DEPARTMENT_OF_KIND, outbox_row, schema_sql, write
from connectors.sources.postgres_outbox import SCHEMA_SQL as OUTBOX_SQL
from streams.encoding.codec import CodecError, get_codec
from streams.encoding.jsonconv import JsonFieldError, from_json, to_json
from streams.kafka.config import client_config

log = logging.getLogger("connectors.demo.shop")

__all__ = ["Shop", "main"]

UNKNOWN_ORDER_GIVE_UP_S = 60
#: the webhook waits for an answer (503, retried) and holds up the commands behind it, so the
#: shop gives up on an order it does not know sooner there
UNKNOWN_ORDER_WEBHOOK_S = 10
SHOP_SQL = """
CREATE TABLE IF NOT EXISTS demo_shop_handled (
    command_id text PRIMARY KEY,
    outcome    text NOT NULL,
    handled_at timestamptz NOT NULL DEFAULT now()
);
"""
_PENDING = """
SELECT i.command_id, i.order_id, i.customer_id, extract(epoch FROM now() - i.received_at)
FROM keel_inbox i
WHERE i.type = 'CANCEL_ORDER'
  AND NOT EXISTS (SELECT 1 FROM demo_shop_handled h WHERE h.command_id = i.command_id)
ORDER BY i.received_at, i.command_id
LIMIT 100
"""
_LOCK = "SELECT 1 FROM keel_inbox WHERE command_id = %s FOR UPDATE SKIP LOCKED"
_HANDLED = "INSERT INTO demo_shop_handled (command_id, outcome) VALUES (%s, %s)"
_OUTBOX = "INSERT INTO keel_outbox (topic, key, payload) VALUES (%s, %s, %s)"
_INBOX = (
    f"INSERT INTO keel_inbox ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) "
    "ON CONFLICT (command_id) DO NOTHING"
)
_SCHEMA_LOCK = int.from_bytes(b"keel-inb", "big")  # the inbox connector's: one DDL at a time
CANCEL_NAMESPACE = uuid.UUID("6f0d2c3e-7f7e-4b8e-9d0a-6b2a3c4d5e6f")


class Orders:
    """The shop's orders: the latest event of each order seen on orders.v1, and the parcels
    that left for each (shipments.v1); a thread reads both."""

    def __init__(self, bootstrap: str, topic: str, shipments_topic: str = "shipments.v1") -> None:
        self.topic = topic
        self.shipments_topic = shipments_topic
        self._lock = threading.Lock()
        self._latest: dict[str, dict[str, Any]] = {}
        #: shipment_id -> (stamp, order_id, type) of its latest event
        self._parcels: dict[str, tuple[tuple[int, str], str, str]] = {}
        self._consumer = Consumer(
            {
                **client_config(bootstrap),
                "group.id": f"keel-demo-shop-{uuid.uuid4().hex[:8]}",  # no commits: from start
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "logger": logging.getLogger("librdkafka"),
            }
        )

    def get(self, order_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._latest.get(order_id)

    def shipped(self, order_id: str) -> tuple[str, str] | None:
        """(shipment_id, status) of a parcel of the order that left the warehouse, if any."""
        with self._lock:
            gone = sorted((sid, kind) for sid, (_, oid, kind) in self._parcels.items()
                          if oid == order_id and kind != "CREATED")  # fmt: skip
        return gone[0] if gone else None

    def run(self, stopper: Stopper) -> None:
        codec = get_codec()
        self._consumer.subscribe([self.topic, self.shipments_topic])
        try:
            while not stopper.stopping:
                for message in self._consumer.consume(500, 0.5):
                    error = message.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            log.warning("orders consumer: %s", error.str())
                        continue
                    is_order = message.topic() == self.topic
                    try:
                        event = codec.decode(
                            message.value() or b"", "OrderEvent" if is_order else "ShipmentEvent"
                        )
                    except CodecError:
                        continue  # keel dead-letters it; not the shop's business
                    if is_order:
                        self._keep(event)
                    else:
                        self._parcel(event)
        finally:
            self._consumer.close()

    def _keep(self, event: dict[str, Any]) -> None:
        stamp = (event["occurred_at"], event["event_id"])
        with self._lock:
            old = self._latest.get(event["order_id"])
            if old is None or (old["occurred_at"], old["event_id"]) < stamp:
                self._latest[event["order_id"]] = event


    def _parcel(self, event: dict[str, Any]) -> None:
        stamp = (event["occurred_at"], event["event_id"])
        with self._lock:
            old = self._parcels.get(event["shipment_id"])
            if old is None or old[0] < stamp:
                self._parcels[event["shipment_id"]] = (stamp, event["order_id"], event["type"])


def cancel_event_id(command_id: str) -> str:
    """The event_id of the CANCELLED the shop writes for a command: one per command id."""
    return str(uuid.uuid5(CANCEL_NAMESPACE, command_id))


def cancelled_event(order: dict[str, Any], command_id: str, now_ms: int) -> dict[str, Any]:
    """The CANCELLED OrderEvent for ``order`` (its latest event), one per command id."""
    return {
        **order,
        "event_id": cancel_event_id(command_id),
        "occurred_at": max(now_ms, order["occurred_at"] + 1),
        "source": "webshop",
        "type": "CANCELLED",
    }


class Shop:
    """Handles the CANCEL_ORDER rows of keel_inbox; see the module docstring."""

    def __init__(self, settings: ConnectorSettings, orders: Orders) -> None:
        self.url = settings.inbox_postgres_url
        self.topic = settings.keel.topics.orders
        self.orders = orders
        #: KEEL_CDC: "debezium" sends the cancellations through Debezium (see _publish)
        self.cdc = settings.cdc
        self._conn: psycopg.Connection[Any] | None = None
        self.handled = 0

    def connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                conn.execute(INBOX_SQL)
                conn.execute(OUTBOX_SQL)
                conn.execute(schema_sql(DEPARTMENT_OF_KIND["order"]))
                conn.execute(SHOP_SQL)
            self._conn = conn
        return self._conn

    def poll(self) -> int:
        """Handle what is pending; return how many commands were settled."""
        conn = self.connection()
        settled = 0
        for command_id, order_id, customer_id, age in conn.execute(_PENDING).fetchall():
            with conn.transaction():
                if conn.execute(_LOCK, (command_id,)).fetchone() is None:
                    continue  # another shop instance has it
                if conn.execute(
                    "SELECT 1 FROM demo_shop_handled WHERE command_id = %s", (command_id,)
                ).fetchone():
                    continue
                outcome = self._decide(command_id, order_id, customer_id, float(age or 0))
                if outcome is None:
                    continue
                if outcome == "cancelled":
                    order = self.orders.get(order_id)
                    assert order is not None
                    event = cancelled_event(order, command_id, int(time.time() * 1000))
                    self._publish(conn, event)
                conn.execute(_HANDLED, (command_id, outcome))
            log.info("command %s for order %s: %s", command_id, order_id, outcome)
            settled += 1
        self.handled += settled
        return settled

    def _publish(self, conn: psycopg.Connection[Any], event: dict[str, Any]) -> None:
        """The CANCELLED into the shop's outbox, in the caller's transaction: keel_outbox
        (JSON, for keel's poller) or with ``KEEL_CDC=debezium`` webshop.keel_outbox (Avro,
        for Debezium)."""
        if self.cdc == "debezium":
            write(conn, DEPARTMENT_OF_KIND["order"], [outbox_row("order", event, self.topic)])
        else:
            payload = json.dumps(to_json("OrderEvent", event))
            conn.execute(_OUTBOX, (self.topic, event["customer_id"], payload))

    def _decide(
        self, command_id: str, order_id: str, customer_id: str, age: float,
        give_up_s: float = UNKNOWN_ORDER_GIVE_UP_S,
    ) -> str | None:  # fmt: skip
        """``cancelled``, ``rejected: <why>``, or None while the order is not known yet."""
        order = self.orders.get(order_id)
        if order is None or order["customer_id"] != customer_id:
            if age > give_up_s:
                return f"rejected: the shop does not know order {order_id} of {customer_id}"
            return None
        if order["type"] == "CANCELLED" and order["event_id"] == cancel_event_id(command_id):
            return "cancelled"  # by this very command (the other delivery path was first)
        if order["type"] in ("CANCELLED", "COMPLETED"):
            return f"rejected: order {order_id} is already {order['type']}"
        parcel = self.orders.shipped(order_id)
        if parcel is not None:
            return (f"rejected: order {order_id} has already shipped (parcel {parcel[0]} is "
                    f"{parcel[1]}); arrange a return instead")  # fmt: skip
        return "cancelled"

    def receive(self, command: dict[str, Any]) -> tuple[int, str | None]:
        """A command that came by webhook: into keel_inbox, like the inbox connector does.

        Returns ``(status, refusal)`` for the answer: 200 when the shop takes it (the poll
        cancels it), 409/422 with the reason when it will not, 503 while it cannot tell yet.
        """
        # a connection of its own: the poll's transactions run on the shop's, in another thread
        # (before the first poll made the tables this fails: a 503, and the webhook retries)
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            return self._receive(conn, command)

    def _receive(self, conn: psycopg.Connection[Any], command: dict[str, Any]
                 ) -> tuple[int, str | None]:  # fmt: skip
        row = tuple(command[c] for c in COLUMNS)
        if command["type"] != "CANCEL_ORDER":
            conn.execute(_INBOX, row)  # the contact centre's: not the shop's to judge
            return 200, None
        command_id = command["command_id"]
        with conn.transaction():
            conn.execute(_INBOX, row)
            conn.execute("SELECT 1 FROM keel_inbox WHERE command_id = %s FOR UPDATE",
                         (command_id,))  # fmt: skip
            settled = conn.execute(
                "SELECT outcome FROM demo_shop_handled WHERE command_id = %s", (command_id,)
            ).fetchone()
            if settled is not None:
                outcome = str(settled[0])
            else:
                age = time.time() - command["requested_at"].timestamp()
                decided = self._decide(command_id, command["order_id"], command["customer_id"],
                                       age, give_up_s=UNKNOWN_ORDER_WEBHOOK_S)  # fmt: skip
                if decided is None:
                    return 503, None
                outcome = decided
                if outcome.startswith("rejected"):
                    conn.execute(_HANDLED, (command_id, outcome))
                    log.info("command %s for order %s: %s", command_id, command["order_id"],
                             outcome)  # fmt: skip
        if not outcome.startswith("rejected"):
            return 200, None
        why = outcome.removeprefix("rejected:").strip()
        return (422 if "does not know" in why else 409), why


def _handler(shop: Shop, secret: bytes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.split("?")[0] == "/healthz":
                self._send(200, {"status": "ok", "handled": shop.handled})
            else:
                self._send(404, {"error": "try POST /keel/commands or GET /healthz"})

        def do_POST(self) -> None:  # noqa: N802
            if self.path.split("?")[0] != "/keel/commands":
                self._send(404, {"error": "commands go to POST /keel/commands"})
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            given = self.headers.get(SIGNATURE_HEADER) or ""
            if not hmac.compare_digest(sign(secret, body), given):
                self._send(401, {"error": f"bad or missing {SIGNATURE_HEADER}"})
                return
            try:
                command = from_json("DeskCommand", json.loads(body))
            except (ValueError, JsonFieldError) as exc:
                self._send(422, {"error": f"not a DeskCommand: {exc}"})
                return
            if command["command_id"] != self.headers.get(COMMAND_ID_HEADER):
                self._send(422, {"error": f"{COMMAND_ID_HEADER} differs from the body"})
                return
            command["requested_at"] = datetime.fromtimestamp(command["requested_at"] / 1000, UTC)
            try:
                status, refusal = shop.receive(command)
            except psycopg.Error as exc:
                shop._conn = None
                self._send(503, {"error": f"the shop's database: {exc}"})
                return
            if status == 503:
                self._send(503, {"error": f"order {command['order_id']} is not known here "
                                 "yet; try again"}, {"Retry-After": "1"})  # fmt: skip
            elif refusal is not None:
                self._send(status, {"error": refusal})
            else:
                self._send(200, {"received": command["command_id"]})

        def _send(self, code: int, body: dict[str, Any], headers: dict[str, str] | None = None
                  ) -> None:  # fmt: skip
            raw = json.dumps(body).encode()
            self.send_response(code)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("shop http: " + format, *args)

    return Handler


def main(argv: list[str] | None = None) -> int:
    return run("demo-shop", log, build)


def build(settings: ConnectorSettings, stopper: Stopper, closing: ExitStack) -> Job:
    """The order reader, the webhook's server and the loop over keel_inbox."""
    topics = settings.keel.topics
    orders = Orders(settings.keel.kafka_bootstrap, topics.orders, topics.shipments)
    reader = threading.Thread(target=orders.run, args=(stopper,), name="orders", daemon=True)
    reader.start()
    shop = Shop(settings, orders)
    port = int(os.environ.get("KEEL_SHOP_PORT") or 8093)
    server = ThreadingHTTPServer(
        (settings.bind, port), _handler(shop, settings.webhook_secret.encode())
    )
    threading.Thread(target=server.serve_forever, name="shop-http", daemon=True).start()
    closing.callback(reader.join, 5)
    closing.callback(server.shutdown)  # closed first

    def loop() -> None:
        backoff = Backoff()
        while not stopper.stopping:
            try:
                shop.poll()
                backoff.reset()
                stopper.wait(settings.outbox_poll_seconds)
            except psycopg.Error as exc:
                log.warning("the shop's database is unavailable, retrying: %s", exc)
                shop._conn = None
                stopper.wait(backoff.delay())

    describe = (
        "demo shop: cancels orders from keel_inbox, not those that shipped; webhook on "
        f"{settings.bind}:{port}"
    )
    return Job(loop, describe)


if __name__ == "__main__":
    sys.exit(main())
