"""What became of a desk command, as the customer's state shows it, in the desk's words.

streams/domain/signals.py draws COMMAND_PENDING and COMMAND_FAILED from
:func:`command_outcome`: a command is *done* once a department's event shows its effect (the
order CANCELLED, the contact RESOLVED, the note on a contact), *failed* when the department
refused it or the state shows it cannot happen, else *pending*; :func:`command_text` and
:func:`department` name it and who was asked.
"""

from __future__ import annotations

from typing import Any

from streams.domain.commands import (
    ADD_NOTE,
    ANNOUNCE,
    CANCEL_ORDER,
    REJECTED,
    RESOLVE_CONTACT,
    command_answer,
)
from streams.domain.state import State, contact_status
from streams.domain.wording import when


def command_outcome(
    state: State, command_id: str, command: dict[str, Any]
) -> tuple[str, int | None, str | None]:
    """``("done", None, None)``, ``("failed", at, why)`` or ``("pending", None, note)``.

    What the departments' events show comes first (a cancel the shop refused through one
    path and carried out through another is done); then a department's refusal; then what
    the state says cannot happen; else it is pending, with a note once it was delivered.
    """
    shown = _state_says(state, command)
    if shown == "done":
        return "done", None, None
    answer = command_answer(state, command_id)
    if answer is not None and answer[0] == REJECTED:
        _, at, _, reason = answer
        why = f"the {department(command)} refused it: {reason}" if reason else (
            f"the {department(command)} refused it (no reason given)")
        return "failed", at, why
    if shown is not None:
        return "failed", command["requested_at"], shown
    if answer is not None:  # DELIVERED
        _, at, connector, _ = answer
        how = _DELIVERED_BY.get(connector, f"delivered ({connector})")
        note = f"{how} at {when(at)}, waiting for the {department(command)}'s event"
        return "pending", None, note
    return "pending", None, None


_DELIVERED_BY = {
    "webhook": "delivered by the webhook",
    "postgres_inbox": "written to the department's inbox table",
}


def _state_says(state: State, command: dict[str, Any]) -> str | None:
    """``"done"`` when the state shows the command done, why it cannot happen, or None."""
    kind = command["type"]
    if kind == ANNOUNCE:  # nothing to wait for: it is shown as CUSTOMER_TOLD (see _told)
        return "done"
    if kind == CANCEL_ORDER:
        order = state["_orders"].get(command["order_id"])
        if order is None or order["type"] == "CANCELLED":  # gone: closed and retired
            return "done"
        if order["type"] == "COMPLETED":
            return "the order was completed instead"
        return None
    contact_id = command["contact_id"]
    if kind == RESOLVE_CONTACT:
        contact = state["_contacts"].get(contact_id)
        return "done" if contact is None or contact_status(contact) == "RESOLVED" else None
    if kind == ADD_NOTE:
        if contact_id is not None and contact_id not in state["_contacts"]:
            return "done"  # resolved and retired
        contacts = [state["_contacts"][contact_id]] if contact_id else state["_contacts"].values()
        note = command["note"]
        return "done" if any(n[3] == note for c in contacts for n in c["notes"]) else None
    return None


def department(command: dict[str, Any]) -> str:
    return "web shop" if command["type"] == CANCEL_ORDER else "contact centre"


def command_text(command_id: str, c: dict[str, Any]) -> str:
    kind, by = c["type"], c["agent"]
    if kind == CANCEL_ORDER:
        what = f"cancellation of order {c['order_id']}"
    elif kind == RESOLVE_CONTACT:
        what = f"resolution of contact {c['contact_id']}"
    elif c["contact_id"]:
        what = f"a note on contact {c['contact_id']}"
    else:
        what = "a new contact with a note"
    return f"{what} asked by {by} at {when(c['requested_at'])} ({command_id})"
