"""The peer: keel's customer-state aggregation written with Quix Streams, on the same backlog.

Same decode (streams.encoding.codec), same merge (streams.domain.state.apply_event), state in
RocksDB with a changelog, every changed state Avro-encoded and published, at-least-once. What
it cannot do the way keel does is the multi-topic join: Quix Streams joins by the message key, and
shipments (keyed by order_id) and most contacts (keyed by contact_id, known only by an order,
e-mail or phone) need a lookup through reference tables that are themselves built from other
topics. So the peer does the closest equivalent Quix offers directly:

- orders.v1, already keyed by customer_id, merged in place;
- contacts.v1 that carry a customer_id, re-keyed by it (``group_by``: one repartition hop,
  like keel's customer-events hop) and merged into the same state;
- contacts without a customer_id are read, decoded and dropped; shipments are not read.

So it does less work per event than keel (no reference tables, no held events, no binds):
the ratio keel/quix overstates Quix's advantage for the full job.

Quix Streams pins confluent-kafka below keel's minimum, so it runs from its own virtualenv
(bench/peers.py makes it) with the repository on PYTHONPATH::

    python bench/peer_quix.py BOOTSTRAP GROUP ORDERS CONTACTS OUT STATE_DIR
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quixstreams import Application, State  # noqa: E402

from streams.domain.state import apply_event, empty_state, view  # noqa: E402
from streams.encoding.codec import get_codec  # noqa: E402

codec = get_codec()


def merge(message: list[Any], state: State) -> bytes | None:
    kind, event = message
    before = state.get("customer")
    after, changed = apply_event(
        before or empty_state(event["customer_id"]), kind, event, int(time.time() * 1000)
    )
    if not changed:
        return None
    state.set("customer", after)
    return codec.encode("CustomerState", view(after))


def main(argv: list[str]) -> None:
    bootstrap, group, orders_name, contacts_name, out_name, state_dir = argv
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        loglevel="WARNING",
        processing_guarantee="at-least-once",
    )
    orders = app.topic(orders_name, key_deserializer="str", value_deserializer="bytes")
    contacts = app.topic(contacts_name, key_deserializer="str", value_deserializer="bytes")
    out = app.topic(out_name, key_serializer="str", value_serializer="bytes")

    by_customer = app.dataframe(orders).apply(lambda v: ["order", codec.decode(v, "OrderEvent")])
    contacts_known = (
        app.dataframe(contacts)
        .apply(lambda v: ["contact", codec.decode(v, "ContactEvent")])
        .filter(lambda m: m[1]["customer_id"] is not None)
        .group_by(
            lambda m: m[1]["customer_id"],
            name="by-customer",
            key_serializer="str",
            key_deserializer="str",
        )
    )
    states = by_customer.concat(contacts_known).apply(merge, stateful=True)
    states.filter(lambda v: v is not None).to_topic(out)
    app.run()


if __name__ == "__main__":
    main(sys.argv[1:])
