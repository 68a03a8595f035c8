"""Erasure on request (GDPR Art. 17): what keel removes, and what keeps it removed.

An erasure request (``ErasureRequest`` on erasures.v1, from ``DELETE /customers/{id}`` or
``keel erase``) reaches the join agent like any event of the customer (streams/worker/intake.py).
The agent then, in one batch (streams/worker/customers.py ``erase_customer``):

- deletes the customer's state (a tombstone in the customers changelog and on
  customer-state.v1, so compaction removes it there and the Redis sink deletes its keys) and
  its signal-due entry;
- sends an ``erase`` to every reference the state made known (orders, cases, e-mails,
  phones, also of retired orders and contacts), whose partition deletes the index entry if it
  still points at the customer and drops events held there that occurred before the request;
- keeps a **suppression record**: ``erased`` table keys are hashes, never the id or the
  e-mail itself (:func:`suppression_key`), valued with the request's time. An event of the
  customer, or one resolving through one of its references, that occurred before that time
  is dropped (``keel_events_total{outcome="erased"}``), also when the input topics are
  replayed; one that occurs later (the person orders again) starts a new, empty state, which
  remembers the time (``_erased_before``) so that late events from before it stay out.

Everything the request causes is an output of its batch, confirmed before the state's deletion
is stored (streams/worker/checkpoint.py): a crash in between erases again, never half.

    >>> suppression_key("email", "ann@example.com")[:14]
    'email:35f3b317'
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from streams.domain.join import CONTACT, ORDER, Ref, route, state_refs
from streams.domain.state import State, apply_event, empty_state
from streams.errors import KeelError

MAX_REASON = 500
"""Characters of an erasure request's reason (it is the audit trail, not a document)."""

CUSTOMER = "customer"
"""The namespace of customer ids in the ``erased`` table (the others: streams/domain/join.py's)."""


def suppression_key(ns: str, value: str) -> str:
    """The ``erased`` table's key of an erased customer id or reference: a hash, not the value."""
    return f"{ns}:{hashlib.sha256(f'{ns}:{value}'.encode()).hexdigest()[:32]}"


def erased_refs(state: State) -> list[Ref]:
    """Every reference a stored state made known, with those of its retired entities."""
    refs = state_refs(state)
    retired = state.get("_retired") or {}
    refs.update((ORDER, order_id) for order_id in retired.get("order") or ())
    refs.update((CONTACT, contact_id) for contact_id in retired.get("contact") or ())
    return sorted(refs)


def event_refs(customer_id: str, kind: str, event: dict) -> list[Ref]:
    """The references an event of an erased customer would make known, or names.

    A replayed order of an erased customer is dropped, and with it the binds it would have
    sent: its e-mail, phone and order id are suppressed instead, so what resolves through
    them (a shipment of that order) is dropped too rather than held until it expires.
    """
    refs: set[Ref] = set()
    if kind in ("order", "contact"):
        refs.update(state_refs(apply_event(empty_state(customer_id), kind, event, 0)[0]))
    if kind in ("shipment", "contact"):
        refs.update(route(kind, event).refs)
    return sorted(refs)


def suppressed(erased_at: int | None, event_time: int) -> bool:
    """Whether an event at ``event_time`` is of an erasure done at ``erased_at``."""
    return erased_at is not None and event_time < erased_at


class BadErasureRequest(KeelError, ValueError):
    """An erasure request that cannot be published as asked; the message says why."""


def build_request(
    customer_id: str, reason: Any, requested_by: str, now_ms: int, request_id: Any = None
) -> dict[str, Any]:
    """The ``ErasureRequest`` record of one request, checked.

    >>> r = build_request("c-1", "DSR-118", "dpo", 1767225600000, "r-1")
    >>> r["request_id"], r["requested_at"]
    ('r-1', 1767225600000)
    >>> try:
    ...     build_request(" ", "DSR-118", "dpo", 0)
    ... except BadErasureRequest as exc:
    ...     print(exc)
    customer_id must contain a character other than whitespace
    """
    if not customer_id.strip():
        raise BadErasureRequest("customer_id must contain a character other than whitespace")
    if not isinstance(reason, str) or not reason.strip():
        raise BadErasureRequest("reason is required: why the customer is erased (e.g. the "
                                "request's ticket), it is the audit trail")  # fmt: skip
    if len(reason) > MAX_REASON:
        raise BadErasureRequest(f"reason is longer than {MAX_REASON} characters")
    if request_id is None:
        request_id = str(uuid.uuid4())
    elif not isinstance(request_id, str) or not request_id.strip():
        raise BadErasureRequest("request_id must be a non-blank string (or left out)")
    return {"request_id": request_id, "customer_id": customer_id, "requested_by": requested_by,
            "requested_at": now_ms, "reason": reason.strip()}  # fmt: skip
