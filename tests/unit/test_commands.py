"""Desk commands without a broker: what is refused, with which status, and how they are keyed."""

from __future__ import annotations

from typing import Any

import pytest

from streams.domain.commands import (
    RecentCommands,
    Refused,
    build_command,
    check_against_state,
    target_key,
)
from streams.encoding.codec import get_codec

NOW = 1_795_428_180_123

STATE: dict[str, Any] = {
    "customer_id": "c-1",
    "orders": [
        {"order_id": "o-open", "status": "PLACED"},
        {"order_id": "o-amended", "status": "AMENDED"},
        {"order_id": "o-cancelled", "status": "CANCELLED"},
        {"order_id": "o-done", "status": "COMPLETED"},
    ],
    "contacts": [
        {"contact_id": "k-open", "status": "OPEN"},
        {"contact_id": "k-resolved", "status": "RESOLVED"},
    ],
}


def body(**fields: Any) -> dict[str, Any]:
    return {"command_id": "cmd-1", "reason": "customer asked", **fields}


def cancel(order_id: str = "o-open", **fields: Any) -> dict[str, Any]:
    return body(type="CANCEL_ORDER", order_id=order_id, **fields)


def refused(customer: str, raw: Any, agent: str | None = "rep-7", state: Any = STATE) -> Refused:
    with pytest.raises(Refused) as info:
        command = build_command(customer, raw, agent, NOW)
        check_against_state(command, state)
    return info.value


def accepted(raw: Any, state: Any = STATE) -> dict[str, Any]:
    command = build_command("c-1", raw, "rep-7", NOW)
    check_against_state(command, state)
    return command


def test_a_cancel_of_an_open_order_becomes_a_command_that_encodes_as_its_schema() -> None:
    command = accepted(cancel(reason="  duplicate of o-1  "))
    assert command == {
        "command_id": "cmd-1",
        "type": "CANCEL_ORDER",
        "customer_id": "c-1",
        "order_id": "o-open",
        "contact_id": None,
        "agent": "rep-7",
        "reason": "duplicate of o-1",
        "note": None,
        "requested_at": NOW,
    }
    codec = get_codec()
    assert codec.decode(codec.encode("DeskCommand", command), "DeskCommand") == command
    assert accepted(cancel("o-amended"))["order_id"] == "o-amended"


@pytest.mark.parametrize(
    ("raw", "status", "field", "words"),
    [
        ([1, 2], 400, None, "one JSON object"),
        (body(type="REFUND"), 400, "type", "unknown command type 'REFUND'"),
        (body(), 400, "type", "unknown command type None"),
        ({"type": "CANCEL_ORDER", "order_id": "o-open", "reason": "r"}, 400, "command_id",
         "command_id is required"),
        (cancel(command_id=" "), 400, "command_id", "must not be empty"),
        (cancel(reason=None), 400, "reason", "reason is required"),
        (cancel(reason="   "), 400, "reason", "must not be empty"),
        (cancel(reason=7), 400, "reason", "must be a string"),
        (cancel(agent="mallory"), 400, "agent", "X-Keel-Agent"),
        (cancel(refund=True), 400, "refund", "unknown field 'refund'"),
        (cancel(customer_id="c-2"), 400, "customer_id", "differs from the path"),
        (body(type="CANCEL_ORDER"), 400, "order_id", "order_id is required"),
        (cancel(contact_id="k-open"), 400, "contact_id", "not a contact_id"),
        (cancel(note="x"), 400, "note", "only for ADD_NOTE"),
        (cancel(reason="x" * 4001), 400, "reason", "longer than 4000"),
        (body(type="RESOLVE_CONTACT"), 400, "contact_id", "contact_id is required"),
        (body(type="RESOLVE_CONTACT", contact_id="k-open", order_id="o-open"), 400, "order_id",
         "takes no order_id"),
        (body(type="ADD_NOTE", contact_id="k-open"), 400, "note", "note is required"),
        (body(type="ADD_NOTE", contact_id="k-open", note="n", order_id="o-open"), 400,
         "order_id", "takes no order_id"),
        (cancel("o-elsewhere"), 404, "order_id", "has no order 'o-elsewhere'"),
        (cancel("o-cancelled"), 409, "order_id", "already CANCELLED"),
        (cancel("o-done"), 409, "order_id", "already COMPLETED"),
        (body(type="RESOLVE_CONTACT", contact_id="k-nope"), 404, "contact_id", "has no contact"),
        (body(type="RESOLVE_CONTACT", contact_id="k-resolved"), 409, "contact_id",
         "already RESOLVED"),
        (body(type="ADD_NOTE", contact_id="k-nope", note="n"), 404, "contact_id",
         "has no contact 'k-nope'"),
        (body(type="ADD_NOTE", note="n", order_id="o-elsewhere"), 404, "order_id", "has no order"),
    ],
)  # fmt: skip
def test_what_makes_no_sense_is_refused_with_a_clear_status_and_field(
    raw: Any, status: int, field: str | None, words: str
) -> None:
    exc = refused("c-1", raw)
    assert (exc.status, exc.field) == (status, field), exc.error
    assert words in exc.error
    assert exc.body()["error"] == exc.error


def test_the_agent_must_be_named_by_the_caller() -> None:
    for agent in (None, "", "   "):
        exc = refused("c-1", cancel(), agent=agent)
        assert (exc.status, exc.field) == (400, "agent") and "X-Keel-Agent" in exc.error
    assert refused("c-1", cancel(), agent="x" * 201).field == "agent"


def test_an_unknown_customer_is_a_404() -> None:
    exc = refused("c-9", cancel(), state=None)
    assert exc.status == 404 and "no customer 'c-9'" in exc.error


def test_notes_go_on_open_or_resolved_contacts_or_open_a_new_one() -> None:
    on_open = accepted(body(type="ADD_NOTE", contact_id="k-open", note=" call back at 5 "))
    assert on_open["note"] == "call back at 5" and target_key(on_open) == b"k-open"
    on_resolved = accepted(body(type="ADD_NOTE", contact_id="k-resolved", note="again"))
    assert target_key(on_resolved) == b"k-resolved"
    new = accepted(body(type="ADD_NOTE", note="wants a call", order_id="o-done"))
    assert (new["contact_id"], new["order_id"]) == (None, "o-done")
    assert target_key(new) == b"c-1"  # no contact id yet: keyed by its customer
    resolve = accepted(body(type="RESOLVE_CONTACT", contact_id="k-open"))
    assert target_key(resolve) == b"k-open"


def test_order_commands_are_keyed_by_the_order() -> None:
    assert target_key(accepted(cancel())) == b"o-open"


def test_the_same_command_id_twice_is_one_command_and_another_command_under_it_a_409() -> None:
    recent = RecentCommands(maximum=3)
    first = accepted(cancel())
    assert recent.seen(first) is False
    recent.remember(first)
    again = build_command("c-1", cancel(), "rep-7", NOW + 5000)  # later, same command
    assert recent.seen(again) is True
    with pytest.raises(Refused) as info:
        recent.seen(build_command("c-1", cancel("o-amended"), "rep-7", NOW))
    assert info.value.status == 409 and info.value.field == "command_id"


def test_recent_command_ids_are_bounded_oldest_forgotten_first() -> None:
    recent = RecentCommands(maximum=3)
    commands = [accepted(cancel(command_id=f"cmd-{n}")) for n in range(5)]
    for command in commands:
        recent.remember(command)
    assert len(recent) == 3
    assert [recent.seen(c) for c in commands] == [False, False, True, True, True]


def test_the_webhook_signature_is_the_hmac_sha256_of_the_exact_body() -> None:
    import hashlib
    import hmac

    from connectors.sinks.webhook import sign

    body = b'{"command_id": "cmd-1"}'
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert sign(b"s3cret", body) == f"sha256={expected}"
    assert sign(b"s3cret", body + b" ") != sign(b"s3cret", body)
    assert sign(b"other", body) != sign(b"s3cret", body)


def test_delivery_settings_default_to_the_outbox_database_and_their_own_groups() -> None:
    from connectors.settings import ConnectorSettings

    s = ConnectorSettings.from_env({"POSTGRES_URL": "postgresql://shop@db/shop"})
    assert s.keel.topics.commands == "commands.v1"
    assert s.inbox_postgres_url == "postgresql://shop@db/shop"
    assert (s.inbox_port, s.webhook_port) == (8091, 8092)
    assert (s.inbox_group, s.webhook_group) == ("keel-postgres-inbox", "keel-webhook")
    assert s.webhook_url == "" and s.webhook_timeout_seconds == 5.0
    own = ConnectorSettings.from_env({"KEEL_INBOX_POSTGRES_URL": "postgresql://crm@db/crm"})
    assert own.inbox_postgres_url == "postgresql://crm@db/crm"


def test_commands_v1_is_created_with_delete_cleanup() -> None:
    from streams.config import Settings
    from streams.kafka.admin import topic_specs

    specs = topic_specs(Settings.from_env({"KEEL_TOPIC_COMMANDS": "desk.commands"}))
    assert specs["desk.commands"]["cleanup.policy"] == "delete"
