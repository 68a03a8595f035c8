"""JSON form of keel records: what the query API shows and what HTTP ingest accepts (§2)."""

from __future__ import annotations

import copy
import doctest
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import streams.encoding.jsonconv
from streams.encoding.codec import Codec
from streams.encoding.jsonconv import (
    JsonConverter,
    JsonFieldError,
    from_json,
    iso_ms,
    parse_ts,
    to_json,
)
from tests.unit.test_codec import (
    CONTACT_EVENT,
    CUSTOMER_STATE,
    ORDER_EVENT,
    SAMPLES,
    T0,
    TOP_LEVEL,
)

ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
TS_MIN = -62_135_596_800_000  # 0001-01-01T00:00:00.000Z
TS_MAX = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def _wire(value: Any) -> Any:
    """What a value looks like after a trip through a JSON body."""
    return json.loads(json.dumps(value))


# --- iso_ms / parse_ts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (T0, "2026-11-23T10:03:00.123Z"),
        (0, "1970-01-01T00:00:00.000Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (1_795_428_180_000, "2026-11-23T10:03:00.000Z"),
        (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        (TS_MIN, "0001-01-01T00:00:00.000Z"),
        (TS_MAX, "9999-12-31T23:59:59.999Z"),
    ],
)
def test_iso_ms_is_utc_with_milliseconds_and_z(ms: int, text: str) -> None:
    assert iso_ms(ms) == text
    assert parse_ts(text) == ms


def test_iso_ms_rejects_what_it_cannot_show() -> None:
    with pytest.raises(ValueError, match="outside the years"):
        iso_ms(TS_MAX + 1)
    with pytest.raises(TypeError):
        iso_ms(True)
    with pytest.raises(TypeError):
        iso_ms(datetime.now(UTC))  # type: ignore[arg-type]


@given(st.integers(min_value=TS_MIN, max_value=TS_MAX))
def test_iso_ms_and_parse_ts_are_inverse(ms: int) -> None:
    text = iso_ms(ms)
    assert ISO_MS.match(text)
    assert parse_ts(text) == ms
    expected = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    assert datetime.fromisoformat(text) == expected


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        ("2026-11-23T10:03:00.123Z", T0),
        ("2026-11-23T11:03:00.123+01:00", T0),
        ("2026-11-23T04:33:00.123-05:30", T0),
        ("2026-11-23T10:03:00.123456Z", T0),  # sub-millisecond digits are truncated
        ("2026-11-23T10:03:00Z", T0 - 123),
        ("2026-11-23T10:03Z", T0 - 123),
        (T0, T0),
        (0, 0),
        (float(T0), T0),  # JSON Schema's integer: 1795428180123.0 is one
        (1.7954e12, 1_795_400_000_000),
        (datetime(2026, 11, 23, 11, 3, 0, 123000, tzinfo=timezone(timedelta(hours=1))), T0),
    ],
)
def test_parse_ts_accepts_iso_with_offset_and_epoch_millis(value: Any, ms: int) -> None:
    assert parse_ts(value) == ms


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("2026-11-23T10:03:00.123", "no UTC offset"),
        ("2026-11-23", "no UTC offset"),
        ("yesterday", "is not an ISO-8601 timestamp"),
        ("1795428180123", "as a JSON number, not a string"),
        ("20261123", "no UTC offset"),
        ("", "is not an ISO-8601 timestamp"),
        (True, "got true"),
        (1.7954e12 + 0.5, "got number 1795400000000.5"),
        (None, "got null"),
        (1_795_428_180_123_000, "micro- or nanoseconds"),
        ("9999-12-31T23:30:00-01:00", "outside the years"),
        (datetime(2026, 11, 23), "naive datetime"),
    ],
)
def test_parse_ts_rejects_ambiguous_or_malformed_values(value: Any, words: str) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        parse_ts(value)


# --- to_json -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_round_trip_through_json_text(name: str) -> None:
    record = SAMPLES[name]
    shown = to_json(name, record)
    assert from_json(name, _wire(shown)) == record


def test_to_json_renders_every_timestamp_of_a_state() -> None:
    shown = to_json("CustomerState", CUSTOMER_STATE)
    order = shown["orders"][0]
    contact = shown["contacts"][0]
    assert order["placed_at"] == "2026-11-23T10:03:00.123Z"
    assert order["promised_by"] == "2026-11-26T10:03:00.123Z"
    assert order["shipments"][0]["expected_by"] == "2026-11-25T10:03:00.123Z"
    assert order["shipments"][0]["updated_at"] == "2026-11-23T11:03:00.123Z"
    assert contact["opened_at"] == "2026-11-23T12:03:00.123Z"
    assert [n["at"] for n in contact["notes"]] == [
        "2026-11-23T12:03:00.123Z",
        "2026-11-23T12:04:40.123Z",
    ]
    assert shown["signals"][0]["raised_at"] == "2026-11-23T12:03:00.123Z"
    assert shown["last_event_at"] == {
        "webshop": "2026-11-23T10:03:00.123Z",
        "carrier-dhl": "2026-11-23T11:03:00.123Z",
        "callcenter": "2026-11-23T12:04:40.123Z",
    }
    assert shown["updated_at"] == "2026-11-23T12:04:40.173Z"
    # everything that is not a timestamp is unchanged
    assert shown["version"] == 7 and shown["total_spent_cents"] == 6499
    assert order["items"] == ORDER_EVENT["items"]
    assert order["shipments"][0]["replaces_shipment_id"] is None
    assert contact["notes"][1]["agent"] is None
    assert list(shown) == list(CUSTOMER_STATE)


def test_to_json_leaves_the_internal_record_alone() -> None:
    before = copy.deepcopy(CUSTOMER_STATE)
    to_json("CustomerState", CUSTOMER_STATE)
    assert CUSTOMER_STATE == before


def test_to_json_drops_keys_outside_the_schema() -> None:
    internal = {**CONTACT_EVENT, "_seen": {"e-1"}}
    assert "_seen" not in to_json("ContactEvent", internal)


def test_to_json_names_a_timestamp_that_is_not_an_int() -> None:
    state = copy.deepcopy(CUSTOMER_STATE)
    state["contacts"][0]["notes"][1]["at"] = datetime.now(UTC)
    with pytest.raises(JsonFieldError) as info:
        to_json("CustomerState", state)
    assert info.value.field == "contacts[0].notes[1].at"
    assert "epoch milliseconds" in info.value.reason


# --- from_json -----------------------------------------------------------------------------------


def test_from_json_converts_timestamps_and_fills_absent_optionals() -> None:
    body = {
        "event_id": "e-1",
        "occurred_at": "2026-11-23T11:03:00.123+01:00",
        "source": "erp",
        "type": "CANCELLED",
        "order_id": "o-1",
        "customer_id": "c-1",
        "channel": "STORE",
        "items": [],
        "total_cents": 0,
        "currency": "EUR",
        "promised_by": T0,
    }
    event = from_json("OrderEvent", body)
    assert event["occurred_at"] == T0 and event["promised_by"] == T0
    assert event["customer_name"] is None and event["customer_phone"] is None
    assert list(event) == list(ORDER_EVENT)
    assert "customer_name" not in body  # the input is not modified


def _order_json(**changes: Any) -> dict[str, Any]:
    body = _wire(to_json("OrderEvent", ORDER_EVENT))
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


def _state_json() -> dict[str, Any]:
    result: dict[str, Any] = _wire(to_json("CustomerState", CUSTOMER_STATE))
    return result


LINE = {"sku": "A", "quantity": 1, "unit_price_cents": 100}


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (_order_json(items=[LINE, {**LINE, "quantity": "2"}]), "items[1].quantity", 'string "2"'),
        (_order_json(items=[LINE, {**LINE, "quantity": True}]), "items[1].quantity", "got true"),
        (
            _order_json(items=[{**LINE, "quantity": 2.5}]),
            "items[0].quantity",
            "expected an integer, got number 2.5",
        ),
        (_order_json(total_cents=1.5), "total_cents", "expected an integer, got number 1.5"),
        (_order_json(total_cents=2.0**53 + 2), "total_cents", "too large to be read exactly"),
        (_order_json(total_cents=2.0**63), "total_cents", "64-bit long"),
        (_order_json(items=[{**LINE, "quantity": 2.0**31}]), "items[0].quantity", "32-bit int"),
        (_order_json(items=[{**LINE, "quantity": 2**31}]), "items[0].quantity", "32-bit int"),
        (_order_json(items=[{**LINE, "quantity": -(2**31)}]), None, None),
        (_order_json(total_cents=2**63), "total_cents", "64-bit long"),
        (_order_json(total_cents=2**63 - 1), None, None),
        (_order_json(items=[{"sku": "A", "quantity": 1}]), "items[0].unit_price_cents", "missing"),
        (_order_json(items=[{**LINE, "price": 1}]), "items[0].price", "unknown field"),
        (_order_json(items={"sku": "A"}), "items", "expected an array, got an object"),
        (_order_json(currency=...), "currency", "missing required field"),
        (_order_json(order_id=None), "order_id", "expected a string, got null"),
        (_order_json(type="SHIPPED"), "type", 'string "SHIPPED" is not one of PLACED, AMENDED'),
        (_order_json(type="placed"), "type", "is not one of"),
        (_order_json(channel=1), "channel", "expected one of WEB, PHONE, STORE, PARTNER"),
        (_order_json(occurred_at="2026-11-23 10:03"), "occurred_at", "no UTC offset"),
        (_order_json(promised_by="soon"), "promised_by", "is not an ISO-8601 timestamp"),
        (_order_json(promised_by=None), None, None),
        (_order_json(customer_name=42), "customer_name", "expected a string, got number 42"),
        (_order_json(customer_mail="a@b"), "customer_mail", "did you mean 'customer_email'?"),
        (_order_json(colour="red"), "colour", "OrderEvent has no such field"),
    ],
)
def test_from_json_names_the_offending_field(
    body: dict[str, Any], field: str | None, words: str | None
) -> None:
    if field is None:
        from_json("OrderEvent", body)  # a boundary value that must be accepted
        return
    with pytest.raises(JsonFieldError) as info:
        from_json("OrderEvent", body)
    assert info.value.field == field
    assert words is not None and words in info.value.reason
    assert str(info.value) == f"{field}: {info.value.reason}"


def test_from_json_takes_integral_numbers_written_with_a_fraction_or_exponent_as_integers() -> None:
    """JSON Schema's "integer" is any number with a zero fraction; so is keel's int/long."""
    body = _order_json(
        items=[{**LINE, "quantity": 2.0, "unit_price_cents": 1e3}],
        total_cents=2000.0,
        occurred_at=float(T0),
        promised_by=-0.0,
    )
    event = from_json("OrderEvent", _wire(body))
    line = event["items"][0]
    assert (line["quantity"], line["unit_price_cents"], event["total_cents"]) == (2, 1000, 2000)
    assert (event["occurred_at"], event["promised_by"]) == (T0, 0)
    numbers = [line["quantity"], line["unit_price_cents"], event["total_cents"]]
    assert all(type(n) is int for n in [*numbers, event["occurred_at"], event["promised_by"]])
    assert from_json("OrderEvent", _order_json(total_cents=2.0**53))["total_cents"] == 2**53


ID_CASES = [
    ("OrderEvent", "event_id", False),
    ("OrderEvent", "order_id", False),
    ("OrderEvent", "customer_id", False),
    ("ShipmentEvent", "event_id", False),
    ("ShipmentEvent", "shipment_id", False),
    ("ShipmentEvent", "order_id", False),
    ("ContactEvent", "event_id", False),
    ("ContactEvent", "contact_id", False),
    ("ContactEvent", "customer_id", True),  # nullable: may be null or left out, never blank
    ("ContactEvent", "order_id", True),
]
BLANKS = ["", " ", "\t\n", "\u00a0", "\u3000 \u2003"]


def _event_json(name: str) -> dict[str, Any]:
    result: dict[str, Any] = _wire(to_json(name, SAMPLES[name]))
    return result


@pytest.mark.parametrize(("name", "field", "nullable"), ID_CASES)
@pytest.mark.parametrize("blank", BLANKS)
def test_from_json_rejects_a_blank_id_naming_the_field(
    name: str, field: str, nullable: bool, blank: str
) -> None:
    body = {**_event_json(name), field: blank}
    with pytest.raises(JsonFieldError) as info:
        from_json(name, body)
    assert info.value.field == field
    assert "an id must contain a character other than whitespace" in info.value.reason
    if nullable:
        assert from_json(name, {**body, field: None})[field] is None
        assert from_json(name, {k: v for k, v in body.items() if k != field})[field] is None


def test_from_json_keeps_ids_as_sent_even_with_surrounding_spaces() -> None:
    body = _order_json(customer_id=" c-1 ", order_id="\x1c0")  # U+001C is not White_Space
    event = from_json("OrderEvent", body)
    assert (event["customer_id"], event["order_id"]) == (" c-1 ", "\x1c0")


def test_from_json_paths_reach_deep_into_a_state() -> None:
    state = _state_json()
    state["contacts"][0]["notes"][1]["at"] = "2026-11-23"
    with pytest.raises(JsonFieldError) as info:
        from_json("CustomerState", state)
    assert info.value.field == "contacts[0].notes[1].at"

    state = _state_json()
    state["orders"][0]["shipments"][0]["status"] = "TELEPORTED"
    with pytest.raises(JsonFieldError) as info:
        from_json("CustomerState", state)
    assert info.value.field == "orders[0].shipments[0].status"
    assert "DELIVERED" in info.value.reason


@pytest.mark.parametrize(
    ("key", "field"),
    [("webshop", "last_event_at.webshop"), ("carrier.dhl", 'last_event_at["carrier.dhl"]')],
)
def test_from_json_paths_name_map_keys(key: str, field: str) -> None:
    state = _state_json()
    state["last_event_at"][key] = "late"
    with pytest.raises(JsonFieldError) as info:
        from_json("CustomerState", state)
    assert info.value.field == field


@pytest.mark.parametrize("body", [[ORDER_EVENT], "{}", None, 3])
def test_from_json_root_must_be_an_object(body: Any) -> None:
    with pytest.raises(JsonFieldError) as info:
        from_json("OrderEvent", body)
    assert info.value.field == ""
    assert "expected an object (OrderEvent)" in info.value.reason
    assert str(info.value) == info.value.reason


def test_json_field_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        from_json("OrderEvent", {})


def test_examples_in_the_module_docs_run() -> None:
    result = doctest.testmod(streams.encoding.jsonconv)
    assert result.attempted >= 3 and result.failed == 0


def test_examples_in_the_timestamps_docs_run() -> None:
    import streams.encoding.timestamps

    result = doctest.testmod(streams.encoding.timestamps)
    assert result.attempted >= 3 and result.failed == 0


# --- schemas beyond keel's own: general unions, bytes, nested maps ------------------------------


@pytest.fixture
def general(tmp_path: Path) -> JsonConverter:
    schema = {
        "type": "record",
        "name": "Probe",
        "namespace": "keel.test",
        "fields": [
            {
                "name": "value",
                "type": ["null", "string", {"type": "long", "logicalType": "timestamp-millis"}],
                "default": None,
            },
            {
                "name": "tags",
                "type": {"type": "map", "values": {"type": "array", "items": "string"}},
            },
            {"name": "flag", "type": "boolean"},
            {"name": "ratio", "type": "double"},
            {"name": "blob", "type": "bytes"},
            {"name": "next", "type": ["null", "Probe"], "default": None},
        ],
    }
    (tmp_path / "Probe.v1.avsc").write_text(json.dumps(schema))
    return JsonConverter(Codec(tmp_path))


def test_general_unions_pick_the_matching_branch(general: JsonConverter) -> None:
    internal = {
        "value": T0,
        "tags": {"a": ["x"]},
        "flag": False,
        "ratio": 0.5,
        "blob": b"\x00\xff",
        "next": {"value": "text", "tags": {}, "flag": True, "ratio": 1.0, "blob": b""},
    }
    shown = general.to_json("Probe", internal)
    assert shown["value"] == "2026-11-23T10:03:00.123Z"
    assert shown["next"]["value"] == "text"
    assert shown["next"]["next"] is None
    back = general.from_json("Probe", {**shown, "blob": "\u0000\u00ff", "ratio": 1})
    # the string branch comes first, so an ISO string stays a string in this union
    assert back["value"] == "2026-11-23T10:03:00.123Z"
    assert back["blob"] == b"\x00\xff" and back["ratio"] == 1.0
    assert general.from_json("Probe", {**shown, "blob": "", "value": 5})["value"] == 5


def test_general_union_errors_list_the_branches(general: JsonConverter) -> None:
    body = {"value": True, "tags": {}, "flag": True, "ratio": 1.0, "blob": ""}
    with pytest.raises(JsonFieldError) as info:
        general.from_json("Probe", body)
    assert info.value.field == "value"
    assert info.value.reason == "expected one of string, long, null, got true"
    with pytest.raises(JsonFieldError) as info:
        general.from_json("Probe", {**body, "value": None, "tags": {"k": ["a", 1]}})
    assert info.value.field == "tags.k[1]"
    with pytest.raises(JsonFieldError) as info:
        general.from_json("Probe", {**body, "value": None, "flag": 1})
    assert (info.value.field, info.value.reason) == ("flag", "expected true or false, got number 1")
    with pytest.raises(JsonFieldError) as info:
        general.from_json("Probe", {**body, "value": None, "next": {**body, "value": None, "x": 1}})
    assert info.value.field == "next.x"
