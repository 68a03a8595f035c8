"""The Avro single-object codec and the schemas it reads (docs/contract.md §2, §3, §5, §6)."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.schema import fingerprint as avro_fingerprint
from fastavro.schema import to_parsing_canonical_form
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.encoding.codec import (
    SCHEMA_DIR,
    Codec,
    CodecError,
    DecodeError,
    UnknownSchemaError,
    _strip_logical_types,
    get_codec,
)

T0 = 1_795_428_180_123  # 2026-11-23T10:03:00.123Z

ORDER_EVENT: dict[str, Any] = {
    "event_id": "8b0c3a52-0f5e-4c2e-9d1a-3f6f1d2b7a01",
    "occurred_at": T0,
    "source": "webshop",
    "type": "PLACED",
    "order_id": "o-1001",
    "customer_id": "c-42",
    "channel": "WEB",
    "items": [
        {"sku": "SKU-RED-MUG", "quantity": 2, "unit_price_cents": 1250},
        {"sku": "SKU-TEAPOT", "quantity": 1, "unit_price_cents": 3999},
    ],
    "total_cents": 6499,
    "currency": "EUR",
    "promised_by": T0 + 3 * 86_400_000,
    "customer_name": "Ada Lovelace",
    "customer_email": "ada@example.com",
    "customer_phone": None,
}

SHIPMENT_EVENT: dict[str, Any] = {
    "event_id": "f3f1c1de-5d5e-4b43-8d8e-2c0a9b7e6a10",
    "occurred_at": T0 + 3_600_000,
    "source": "carrier-dhl",
    "type": "IN_TRANSIT",
    "shipment_id": "s-77",
    "order_id": "o-1001",
    "carrier": "dhl",
    "tracking_number": "JJD000390007",
    "expected_by": T0 + 2 * 86_400_000,
    "replaces_shipment_id": None,
    "note": "left the hub",
}

CONTACT_EVENT: dict[str, Any] = {
    "event_id": "0d7f0e8a-3c1b-4f6e-9a2d-5b4c3a2e1f00",
    "occurred_at": T0 + 7_200_000,
    "source": "callcenter",
    "type": "OPENED",
    "contact_id": "k-9",
    "channel": "PHONE",
    "kind": "COMPLAINT",
    "customer_id": None,
    "email": " Ada@Example.com ",
    "phone": None,
    "order_id": "o-1001",
    "topic": "where is my parcel",
    "agent": "jo",
    "note": "customer called twice",
}

CUSTOMER_STATE: dict[str, Any] = {
    "customer_id": "c-42",
    "name": "Ada Lovelace",
    "emails": ["ada@example.com"],
    "phones": [],
    "orders": [
        {
            "order_id": "o-1001",
            "status": "PLACED",
            "channel": "WEB",
            "placed_at": T0,
            "updated_at": T0,
            "total_cents": 6499,
            "currency": "EUR",
            "items": ORDER_EVENT["items"],
            "promised_by": T0 + 3 * 86_400_000,
            "shipments": [
                {
                    "shipment_id": "s-77",
                    "status": "IN_TRANSIT",
                    "carrier": "dhl",
                    "tracking_number": "JJD000390007",
                    "expected_by": T0 + 2 * 86_400_000,
                    "replaces_shipment_id": None,
                    "updated_at": T0 + 3_600_000,
                }
            ],
        }
    ],
    "contacts": [
        {
            "contact_id": "k-9",
            "status": "OPEN",
            "channel": "PHONE",
            "kind": "COMPLAINT",
            "topic": "where is my parcel",
            "order_id": "o-1001",
            "agent": "jo",
            "opened_at": T0 + 7_200_000,
            "updated_at": T0 + 7_200_000,
            "notes": [
                {"at": T0 + 7_200_000, "agent": "jo", "text": "customer called twice"},
                {"at": T0 + 7_300_000, "agent": None, "text": "carrier asked"},
            ],
        }
    ],
    "signals": [
        {
            "type": "REPEAT_CONTACT",
            "order_id": "o-1001",
            "shipment_id": None,
            "contact_id": "k-9",
            "raised_at": T0 + 7_200_000,
            "detail": "second contact about o-1001 within 14 days",
        }
    ],
    "open_orders": 1,
    "open_contacts": 1,
    "total_spent_cents": 6499,
    "last_event_at": {"webshop": T0, "carrier-dhl": T0 + 3_600_000, "callcenter": T0 + 7_300_000},
    "updated_at": T0 + 7_300_050,
    "version": 7,
    "linked": [
        {"customer_id": "c-43", "via": {"type": "EMAIL", "value": "ann@example.com"},
         "since": T0 + 60_000},
    ],
    "identity_guards": [
        {"via": {"type": "PHONE", "value": "+4930123456"}, "guard": "SHARED",
         "why": "seen with more than 3 customers (KEEL_IDENTITY_SHARED_AFTER): it links no one"},
    ],
}

CUSTOMER_SIGNAL: dict[str, Any] = {
    "customer_id": "c-42",
    "status": "RAISED",
    "type": "SHIPMENT_LATE",
    "order_id": "o-1001",
    "shipment_id": "s-77",
    "contact_id": None,
    "at": T0 + 2 * 86_400_000 + 10_000,
    "detail": "expected by 2026-11-25T10:03:00.123Z",
}

DESK_COMMAND: dict[str, Any] = {
    "command_id": "5b9f6c1e-2f7a-4d3b-8e0c-9a1d2c3b4e5f",
    "type": "CANCEL_ORDER",
    "customer_id": "c-42",
    "order_id": "o-1001",
    "contact_id": None,
    "agent": "rep-7",
    "reason": "duplicate of o-1000, customer confirmed",
    "note": None,
    "requested_at": T0 + 60_000,
}

COMMAND_OUTCOME: dict[str, Any] = {
    "command_id": "5b9f6c1e-2f7a-4d3b-8e0c-9a1d2c3b4e5f",
    "customer_id": "c-42",
    "outcome": "REJECTED",
    "reason": "order o-1001 has already shipped (HTTP 409)",
    "connector": "webhook",
    "at": T0 + 61_000,
}

ERASURE_REQUEST: dict[str, Any] = {
    "request_id": "0d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a",
    "customer_id": "c-42",
    "requested_by": "dpo@example.com",
    "requested_at": T0 + 62_000,
    "reason": "data subject request DSR-2026-118",
}

VOICE_TOPIC: dict[str, Any] = {
    "topic": "delivery",
    "as_of": T0 + 120_000,
    "windows": [
        {"window": "7d", "count": 3, "previous": 1,
         "kinds": {"COMPLAINT": 2, "IDEA": 0, "COMPLIMENT": 1, "QUESTION": 0, "REQUEST": 0},
         "open_complaints": 1, "median_resolve_s": 5400.0, "products": {"lamp": 1},
         "channels": {"CHAT": 2, "EMAIL": 1}},
        {"window": "1h", "count": 0, "previous": 0, "kinds": {}, "open_complaints": 0,
         "median_resolve_s": None, "products": {}, "channels": {}},
    ],
}  # fmt: skip

SAMPLES: dict[str, dict[str, Any]] = {
    "OrderEvent": ORDER_EVENT,
    "ShipmentEvent": SHIPMENT_EVENT,
    "ContactEvent": CONTACT_EVENT,
    "CustomerState": CUSTOMER_STATE,
    "CustomerSignal": CUSTOMER_SIGNAL,
    "DeskCommand": DESK_COMMAND,
    "CommandOutcome": COMMAND_OUTCOME,
    "ErasureRequest": ERASURE_REQUEST,
    "VoiceTopic": VOICE_TOPIC,
}

# --- the contract, transcribed by hand from docs/contract.md §3, §5, §6 ---------------------------
# Type notation: "?x" nullable with default null; "ts" timestamp-millis long;
# "enum Name A|B"; "array<x>"; "map<x>"; "record Name" (fields checked separately).

COMMON = [("event_id", "string"), ("occurred_at", "ts"), ("source", "string")]
CONTRACT_FIELDS: dict[str, list[tuple[str, str]]] = {
    "OrderEvent": COMMON
    + [
        ("type", "enum OrderEventType PLACED|AMENDED|CANCELLED|COMPLETED"),
        ("order_id", "string"),
        ("customer_id", "string"),
        ("channel", "enum SalesChannel WEB|PHONE|STORE|PARTNER"),
        ("items", "array<record OrderLine>"),
        ("total_cents", "long"),
        ("currency", "string"),
        ("promised_by", "?ts"),
        ("customer_name", "?string"),
        ("customer_email", "?string"),
        ("customer_phone", "?string"),
    ],
    "ShipmentEvent": COMMON
    + [
        (
            "type",
            "enum ShipmentEventType CREATED|DISPATCHED|IN_TRANSIT|DELAYED|OUT_FOR_DELIVERY"
            "|DELIVERED|LOST|RETURNED",
        ),
        ("shipment_id", "string"),
        ("order_id", "string"),
        ("carrier", "string"),
        ("tracking_number", "?string"),
        ("expected_by", "?ts"),
        ("replaces_shipment_id", "?string"),
        ("note", "?string"),
    ],
    "ContactEvent": COMMON
    + [
        ("type", "enum ContactEventType OPENED|NOTE_ADDED|ESCALATED|RESOLVED|REOPENED"),
        ("contact_id", "string"),
        ("channel", "enum ContactChannel PHONE|EMAIL|CHAT|WEB|SOCIAL|LETTER|STORE"),
        ("kind", "enum ContactKind QUESTION|REQUEST|COMPLAINT|COMPLIMENT|IDEA"),
        ("customer_id", "?string"),
        ("email", "?string"),
        ("phone", "?string"),
        ("order_id", "?string"),
        ("topic", "?string"),
        ("agent", "?string"),
        ("note", "?string"),
    ],
    "OrderLine": [("sku", "string"), ("quantity", "int"), ("unit_price_cents", "long")],
    "CustomerState": [
        ("customer_id", "string"),
        ("name", "?string"),
        ("emails", "array<string>"),
        ("phones", "array<string>"),
        ("orders", "array<record OrderView>"),
        ("contacts", "array<record ContactView>"),
        ("signals", "array<record ActiveSignal>"),
        ("open_orders", "int"),
        ("open_contacts", "int"),
        ("total_spent_cents", "long"),
        ("last_event_at", "map<ts>"),
        ("updated_at", "ts"),
        ("version", "long"),
        ("linked", "array<record Link>"),
        ("identity_guards", "array<record IdentityGuard>"),
    ],
    "Link": [("customer_id", "string"), ("via", "record IdentifierRef"), ("since", "ts")],
    "IdentifierRef": [("type", "enum IdentifierType EMAIL|PHONE"), ("value", "string")],
    "IdentityGuard": [
        ("via", "IdentifierRef"),
        ("guard", "enum IdentityGuardType SHARED|BLOCKED"),
        ("why", "string"),
    ],
    "OrderView": [
        ("order_id", "string"),
        ("status", "enum OrderStatus PLACED|AMENDED|CANCELLED|COMPLETED"),
        ("channel", "enum SalesChannel WEB|PHONE|STORE|PARTNER"),
        ("placed_at", "ts"),
        ("updated_at", "ts"),
        ("total_cents", "long"),
        ("currency", "string"),
        ("items", "array<record OrderLine>"),
        ("promised_by", "?ts"),
        ("shipments", "array<record ShipmentView>"),
    ],
    "ShipmentView": [
        ("shipment_id", "string"),
        (
            "status",
            "enum ShipmentStatus CREATED|DISPATCHED|IN_TRANSIT|DELAYED|OUT_FOR_DELIVERY"
            "|DELIVERED|LOST|RETURNED",
        ),
        ("carrier", "string"),
        ("tracking_number", "?string"),
        ("expected_by", "?ts"),
        ("replaces_shipment_id", "?string"),
        ("updated_at", "ts"),
    ],
    "ContactView": [
        ("contact_id", "string"),
        ("status", "enum ContactStatus OPEN|RESOLVED"),
        ("channel", "enum ContactChannel PHONE|EMAIL|CHAT|WEB|SOCIAL|LETTER|STORE"),
        ("kind", "enum ContactKind QUESTION|REQUEST|COMPLAINT|COMPLIMENT|IDEA"),
        ("topic", "?string"),
        ("order_id", "?string"),
        ("agent", "?string"),
        ("opened_at", "ts"),
        ("updated_at", "ts"),
        ("notes", "array<record ContactNote>"),
    ],
    "ContactNote": [("at", "ts"), ("agent", "?string"), ("text", "string")],
    "ActiveSignal": [
        ("type", "string"),
        ("order_id", "?string"),
        ("shipment_id", "?string"),
        ("contact_id", "?string"),
        ("raised_at", "ts"),
        ("detail", "?string"),
    ],
    "CustomerSignal": [
        ("customer_id", "string"),
        ("status", "enum SignalStatus RAISED|CLEARED"),
        ("type", "string"),
        ("order_id", "?string"),
        ("shipment_id", "?string"),
        ("contact_id", "?string"),
        ("at", "ts"),
        ("detail", "?string"),
    ],
    "DeskCommand": [
        ("command_id", "string"),
        ("type", "enum DeskCommandType CANCEL_ORDER|ADD_NOTE|RESOLVE_CONTACT|ANNOUNCE"),
        ("customer_id", "string"),
        ("order_id", "?string"),
        ("contact_id", "?string"),
        ("agent", "string"),
        ("reason", "string"),
        ("note", "?string"),
        ("requested_at", "ts"),
    ],
    "CommandOutcome": [
        ("command_id", "string"),
        ("customer_id", "string"),
        ("outcome", "enum CommandOutcomeType DELIVERED|REJECTED"),
        ("reason", "?string"),
        ("connector", "string"),
        ("at", "ts"),
    ],
    "ErasureRequest": [
        ("request_id", "string"),
        ("customer_id", "string"),
        ("requested_by", "string"),
        ("requested_at", "ts"),
        ("reason", "string"),
    ],
    # keel's extension (docs/contract.md §12, Voice of the Customer)
    "VoiceTopic": [
        ("topic", "string"),
        ("as_of", "ts"),
        ("windows", "array<record VoiceWindow>"),
    ],
    "VoiceWindow": [
        ("window", "string"),
        ("count", "int"),
        ("previous", "int"),
        ("kinds", "map<int>"),
        ("open_complaints", "int"),
        ("median_resolve_s", "?double"),
        ("products", "map<int>"),
        ("channels", "map<int>"),
    ],
}
TOP_LEVEL = [
    "OrderEvent",
    "ShipmentEvent",
    "ContactEvent",
    "CustomerState",
    "CustomerSignal",
    "DeskCommand",
    "CommandOutcome",
    "ErasureRequest",
    "VoiceTopic",
]
#: released versions beyond v1: DeskCommand v2 adds the type ANNOUNCE (docs/contract.md
#: §10, §12); v1 stays, so records written with it are still read
VERSIONS = {name: [1] for name in TOP_LEVEL} | {"DeskCommand": [1, 2], "CustomerState": [1, 2]}


def _describe(avro_type: Any, records: dict[str, list[dict[str, Any]]]) -> str:
    """The test's notation for a field type; collects nested records into ``records``."""
    if isinstance(avro_type, list):
        assert avro_type[0] == "null" and len(avro_type) == 2, avro_type
        return "?" + _describe(avro_type[1], records)
    if isinstance(avro_type, str):
        return avro_type
    kind = avro_type["type"]
    if kind == "long" and avro_type.get("logicalType") == "timestamp-millis":
        return "ts"
    if kind == "enum":
        return f"enum {avro_type['name']} {'|'.join(avro_type['symbols'])}"
    if kind == "array":
        return f"array<{_describe(avro_type['items'], records)}>"
    if kind == "map":
        return f"map<{_describe(avro_type['values'], records)}>"
    if kind == "record":
        records.setdefault(avro_type["name"], avro_type["fields"])
        return f"record {avro_type['name']}"
    return str(kind)


def _raw(name: str, version: int | None = None) -> dict[str, Any]:
    """The schema file of ``name``: its latest released version unless ``version`` says."""
    version = VERSIONS.get(name, [1])[-1] if version is None else version
    result: dict[str, Any] = json.loads((SCHEMA_DIR / f"{name}.v{version}.avsc").read_text())
    return result


def _crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO (Rabin) as given in the Avro specification, independent of fastavro."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec()


# --- schemas -----------------------------------------------------------------------------------


def test_schema_dir_holds_exactly_the_released_files() -> None:
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.avsc")) == sorted(
        f"{name}.v{v}.avsc" for name in TOP_LEVEL for v in VERSIONS[name]
    )


def test_desk_command_v2_only_adds_announce_to_v1() -> None:
    v1 = _raw("DeskCommand", 1)
    v2 = _raw("DeskCommand")
    types = [f["type"] for f in (v1, v2)[0]["fields"] if f["name"] == "type"]
    assert types[0]["symbols"] == ["CANCEL_ORDER", "ADD_NOTE", "RESOLVE_CONTACT"]
    strip = [{**f, "doc": "", "type": "t" if f["name"] == "type" else f["type"]}
             for f in v1["fields"]]  # fmt: skip
    assert strip == [{**f, "doc": "", "type": "t" if f["name"] == "type" else f["type"]}
                     for f in v2["fields"]]  # fmt: skip
    record = {**DESK_COMMAND, "type": "ANNOUNCE", "order_id": None, "note": "we changed carrier"}
    codec = Codec()
    assert codec.decode(codec.encode("DeskCommand", record), "DeskCommand") == record


def test_customer_state_v2_only_adds_fields_with_defaults(codec: Codec) -> None:
    """v1 readers and v1 values keep working: v2 is v1 plus linked/identity_guards (default
    []), so a v1 value reads as v2 with empty links, and a v2 value as v1 without them."""
    v1, v2 = _raw("CustomerState", 1), _raw("CustomerState", 2)
    assert v2["fields"][: len(v1["fields"])] == v1["fields"]
    added = v2["fields"][len(v1["fields"]) :]
    assert [(f["name"], f["default"]) for f in added] == [("linked", []), ("identity_guards", [])]
    old = {k: v for k, v in CUSTOMER_STATE.items() if k not in ("linked", "identity_guards")}
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(v1), old)
    fp = bytes.fromhex(avro_fingerprint(to_parsing_canonical_form(v1), "CRC-64-AVRO"))
    decoded = codec.decode(b"\xc3\x01" + fp + body.getvalue(), "CustomerState")
    assert decoded == {**old, "linked": [], "identity_guards": []}
    new = codec.encode("CustomerState", CUSTOMER_STATE)
    plain = {k: fastavro.parse_schema(_strip_logical_types(v)) for k, v in (("v1", v1), ("v2", v2))}
    as_v1 = fastavro.schemaless_reader(io.BytesIO(new[10:]), plain["v2"], plain["v1"])
    assert as_v1 == old


@pytest.mark.parametrize("path", sorted(SCHEMA_DIR.glob("*.avsc")), ids=lambda p: p.name)
def test_every_schema_parses_with_namespace_and_docs(path: Path) -> None:
    raw = json.loads(path.read_text())
    fastavro.parse_schema(raw)
    assert raw["namespace"] == "keel.v1"
    assert raw["name"] == path.name.split(".")[0]

    def check_docs(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                check_docs(item)
        elif isinstance(node, dict):
            if node.get("type") == "record":
                for field in node["fields"]:
                    assert field.get("doc"), f"{node['name']}.{field['name']} has no doc"
                    if isinstance(field["type"], list):
                        assert field.get("default", "absent") is None, field["name"]
                    check_docs(field["type"])
            for key in ("items", "values", "type"):
                if isinstance(node.get(key), dict | list):
                    check_docs(node[key])

    check_docs(raw)


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_schemas_have_exactly_the_contract_fields(name: str) -> None:
    records: dict[str, list[dict[str, Any]]] = {}
    _describe({"type": "record", "name": name, "fields": _raw(name)["fields"]}, records)
    pending = [name]
    checked = set()
    while pending:
        record = pending.pop()
        checked.add(record)
        nested: dict[str, list[dict[str, Any]]] = {}
        actual = [(f["name"], _describe(f["type"], nested)) for f in records[record]]
        assert actual == CONTRACT_FIELDS[record], record
        for inner, fields in nested.items():
            records.setdefault(inner, fields)
            if inner not in checked:
                pending.append(inner)


def test_codec_knows_every_record_and_version(codec: Codec) -> None:
    assert codec.names == sorted(TOP_LEVEL)
    assert all(codec.versions(name) == VERSIONS[name] for name in TOP_LEVEL)
    assert codec.schema("OrderEvent") == _raw("OrderEvent")


# --- encoding ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_round_trip_keeps_ints_for_timestamps_and_strs_for_enums(codec: Codec, name: str) -> None:
    record = SAMPLES[name]
    decoded = codec.decode(codec.encode(name, record), name)
    assert decoded == record
    assert all(type(decoded[k]) is type(v) for k, v in record.items())


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_byte_layout_is_magic_fingerprint_body(codec: Codec, name: str) -> None:
    data = codec.encode(name, SAMPLES[name])
    canonical = to_parsing_canonical_form(_raw(name))
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == bytes.fromhex(avro_fingerprint(canonical, "CRC-64-AVRO"))
    assert data[2:10] == struct.pack("<Q", _crc64_avro(canonical.encode()))
    assert codec.fingerprint(name) == data[2:10] == codec.fingerprint(name, VERSIONS[name][-1])
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(_raw(name)), SAMPLES[name])
    assert data[10:] == body.getvalue()


def test_fingerprint_ignores_docs_and_logical_types() -> None:
    """The PCF drops them, so editing a doc string never changes the wire format."""
    raw = _raw("CustomerSignal")
    plain = json.loads(
        json.dumps(raw).replace(', "logicalType": "timestamp-millis"', "").replace('"doc"', '"x"')
    )
    assert "timestamp-millis" not in json.dumps(plain)
    assert avro_fingerprint(to_parsing_canonical_form(plain), "CRC-64-AVRO") == avro_fingerprint(
        to_parsing_canonical_form(raw), "CRC-64-AVRO"
    )


def test_nullable_fields_may_be_omitted_when_encoding(codec: Codec) -> None:
    record = {k: v for k, v in SHIPMENT_EVENT.items() if k not in ("note", "tracking_number")}
    decoded = codec.decode(codec.encode("ShipmentEvent", record), "ShipmentEvent")
    assert decoded["note"] is None and decoded["tracking_number"] is None


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        ({"currency": None}, "currency", "expected string"),
        ({"extra_field": 1}, "extra_field", "not in the schema"),
        ({"type": "SHIPPED"}, "type", "not one of PLACED"),
        ({"total_cents": 12.5}, "total_cents", "expected an integer"),
        ({"total_cents": True}, "total_cents", "expected an integer"),
        ({"total_cents": 2**63}, "total_cents", "outside the long range"),
        ({"promised_by": "tomorrow"}, "promised_by", "expected an integer"),
        (
            {
                "items": [
                    ORDER_EVENT["items"][0],
                    {"sku": "X", "quantity": 2**31, "unit_price_cents": 1},
                ]
            },
            "items[1].quantity",
            "outside the int range",
        ),
        (
            {"items": [{"sku": "X", "quantity": 1, "unit_price_cents": 1, "colour": "red"}]},
            "items[0].colour",
            "not in the schema",
        ),
    ],
)
def test_encode_rejects_records_that_do_not_fit(
    codec: Codec, change: dict[str, Any], path: str, words: str
) -> None:
    with pytest.raises(CodecError) as info:
        codec.encode("OrderEvent", {**ORDER_EVENT, **change})
    assert f"{path}: " in info.value.reason
    assert words in info.value.reason


def test_encode_names_a_missing_required_field(codec: Codec) -> None:
    record = {k: v for k, v in ORDER_EVENT.items() if k != "order_id"}
    with pytest.raises(CodecError, match="order_id: missing required field"):
        codec.encode("OrderEvent", record)


def test_encode_rejects_an_invalid_map_value_with_its_key(codec: Codec) -> None:
    state = {**CUSTOMER_STATE, "last_event_at": {"erp": T0, "carrier.dhl": "today"}}
    with pytest.raises(CodecError, match=r'last_event_at\["carrier\.dhl"\]: expected an integer'):
        codec.encode("CustomerState", state)


def test_unknown_record_name_is_an_unknown_schema(codec: Codec) -> None:
    with pytest.raises(UnknownSchemaError, match="OrderEvnt"):
        codec.encode("OrderEvnt", ORDER_EVENT)
    with pytest.raises(UnknownSchemaError):
        codec.decode(codec.encode("OrderEvent", ORDER_EVENT), "OrderEvnt")
    with pytest.raises(UnknownSchemaError, match="no version 2"):
        codec.fingerprint("OrderEvent", 2)


def test_get_codec_is_one_shared_instance() -> None:
    assert get_codec() is get_codec()
    assert get_codec().fingerprint("OrderEvent") == Codec().fingerprint("OrderEvent")


# --- decoding: schema evolution ----------------------------------------------------------------


def _write_schema(directory: Path, file_name: str, schema: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / file_name).write_text(json.dumps(schema))


def _order_v0(**changes: Any) -> dict[str, Any]:
    """A hypothetical earlier OrderEvent: no customer_phone, plus whatever ``changes`` says."""
    raw = _raw("OrderEvent")
    raw["fields"] = [f for f in raw["fields"] if f["name"] != "customer_phone"]
    for field in raw["fields"]:
        if field["name"] in changes:
            field["type"] = changes[field["name"]]
    return raw


@pytest.fixture
def evolved(tmp_path: Path) -> tuple[Codec, Codec]:
    """(a producer that only knows v0, a consumer that knows v0 and v1)."""
    v0 = _order_v0(
        type={
            "type": "enum",
            "name": "OrderEventType",
            "symbols": ["PLACED", "AMENDED", "CANCELLED", "COMPLETED", "REFUNDED"],
        }
    )
    _write_schema(tmp_path / "old", "OrderEvent.v0.avsc", v0)
    _write_schema(tmp_path / "both", "OrderEvent.v0.avsc", v0)
    _write_schema(tmp_path / "both", "OrderEvent.v1.avsc", _raw("OrderEvent"))
    return Codec(tmp_path / "old"), Codec(tmp_path / "both")


def test_record_from_an_older_schema_version_reads_as_the_latest(
    evolved: tuple[Codec, Codec],
) -> None:
    old, both = evolved
    record = {k: v for k, v in ORDER_EVENT.items() if k != "customer_phone"}
    data = old.encode("OrderEvent", record)
    assert data[2:10] == both.fingerprint("OrderEvent", 0) != both.fingerprint("OrderEvent")
    decoded = both.decode(data, "OrderEvent")
    assert decoded == {**record, "customer_phone": None}
    assert list(decoded) == [f["name"] for f in _raw("OrderEvent")["fields"]]


def test_enum_symbol_the_reader_lacks_is_a_decode_error(evolved: tuple[Codec, Codec]) -> None:
    old, both = evolved
    record = {k: v for k, v in ORDER_EVENT.items() if k != "customer_phone"}
    data = old.encode("OrderEvent", {**record, "type": "REFUNDED"})
    with pytest.raises(DecodeError, match="OrderEvent v0") as info:
        both.decode(data, "OrderEvent")
    assert "REFUNDED" in info.value.reason
    assert not isinstance(info.value, UnknownSchemaError)


def test_incompatible_writer_schema_is_a_decode_error(tmp_path: Path) -> None:
    _write_schema(tmp_path / "old", "OrderEvent.v0.avsc", _order_v0(total_cents="string"))
    _write_schema(tmp_path / "both", "OrderEvent.v0.avsc", _order_v0(total_cents="string"))
    _write_schema(tmp_path / "both", "OrderEvent.v1.avsc", _raw("OrderEvent"))
    record = {k: v for k, v in ORDER_EVENT.items() if k != "customer_phone"}
    data = Codec(tmp_path / "old").encode("OrderEvent", {**record, "total_cents": "64.99"})
    with pytest.raises(DecodeError, match="cannot read a OrderEvent v0 body as OrderEvent v1"):
        Codec(tmp_path / "both").decode(data, "OrderEvent")


def test_value_of_another_record_type_is_a_decode_error(codec: Codec) -> None:
    data = codec.encode("ShipmentEvent", SHIPMENT_EVENT)
    with pytest.raises(DecodeError, match="ShipmentEvent v1 body as OrderEvent v1"):
        codec.decode(data, "OrderEvent")


def test_unknown_fingerprint_is_an_unknown_schema_error(codec: Codec, tmp_path: Path) -> None:
    _write_schema(tmp_path, "OrderEvent.v0.avsc", _order_v0())
    record = {k: v for k, v in ORDER_EVENT.items() if k != "customer_phone"}
    data = Codec(tmp_path).encode("OrderEvent", record)
    with pytest.raises(UnknownSchemaError) as info:
        codec.decode(data, "OrderEvent")
    assert data[2:10].hex() in info.value.reason
    assert "schemas/" in info.value.reason
    with pytest.raises(UnknownSchemaError):
        codec.decode(b"\xc3\x01" + bytes(8) + data[10:], "OrderEvent")


# --- decoding: bad bytes -----------------------------------------------------------------------


def _valid(codec: Codec) -> bytes:
    return codec.encode("OrderEvent", ORDER_EVENT)


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda good: b"", "empty value"),
        (lambda good: b'{"event_id": "x"}', "looks like JSON"),
        (lambda good: b"\x00\x01" + good[2:], "expected c3 01"),
        (lambda good: good[:7], "shorter than the 10-byte header"),
        (lambda good: good[:-3], "truncated"),
        (lambda good: good[:10], "truncated"),
        (lambda good: good + b"\x00", "unexpected bytes after"),
        (lambda good: good[:10] + b"\xff" * 40, "OrderEvent"),
    ],
    ids=["empty", "json", "bad-magic", "short-header", "truncated", "no-body", "trailing", "junk"],
)
def test_undecodable_bytes_are_decode_errors(codec: Codec, make: Any, words: str) -> None:
    with pytest.raises(DecodeError) as info:
        codec.decode(make(_valid(codec)), "OrderEvent")
    assert words in info.value.reason


def test_invalid_utf8_in_a_string_is_a_decode_error(codec: Codec) -> None:
    good = _valid(codec)
    # event_id is the first field: a zigzag length byte, then its UTF-8 bytes.
    bad = good[:11] + b"\xff" + good[12:]
    with pytest.raises(DecodeError, match="not valid UTF-8"):
        codec.decode(bad, "OrderEvent")


def test_tombstone_and_non_bytes_are_decode_errors(codec: Codec) -> None:
    with pytest.raises(DecodeError, match="tombstone"):
        codec.decode(None, "CustomerState")  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match="str"):
        codec.decode("C3 01", "CustomerState")  # type: ignore[arg-type]


def test_bytearray_and_memoryview_decode_like_bytes(codec: Codec) -> None:
    data = _valid(codec)
    assert codec.decode(bytearray(data), "OrderEvent") == ORDER_EVENT
    assert codec.decode(memoryview(data), "OrderEvent") == ORDER_EVENT


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_raise_nothing_but_codec_errors(data: bytes) -> None:
    codec = get_codec()
    for name in TOP_LEVEL:
        try:
            codec.decode(data, name)
        except CodecError as exc:
            assert exc.reason
        else:
            assert data[:2] == b"\xc3\x01"  # only a real single-object value can decode


@settings(max_examples=600, deadline=None)
@given(name=st.sampled_from(TOP_LEVEL), body=st.binary(max_size=300), writer=st.integers(0, 4))
def test_garbage_after_a_known_header_raises_nothing_but_decode_errors(
    name: str, body: bytes, writer: int
) -> None:
    codec = get_codec()
    header = b"\xc3\x01" + codec.fingerprint(TOP_LEVEL[writer])
    try:
        codec.decode(header + body, name)
    except DecodeError as exc:
        assert exc.reason
    else:
        assert TOP_LEVEL[writer] == name


@settings(max_examples=300, deadline=None)
@given(cut=st.integers(min_value=0), flips=st.lists(st.tuples(st.integers(0), st.integers(0, 255))))
def test_damaged_state_values_raise_nothing_but_codec_errors(
    cut: int, flips: list[tuple[int, int]]
) -> None:
    codec = get_codec()
    data = bytearray(codec.encode("CustomerState", CUSTOMER_STATE))
    for position, value in flips:
        data[position % len(data)] = value
    try:
        codec.decode(bytes(data[: len(data) - cut % len(data)]), "CustomerState")
    except CodecError as exc:
        assert exc.reason


# --- loading -------------------------------------------------------------------------------------


def test_schema_files_must_be_named_after_their_record(tmp_path: Path) -> None:
    _write_schema(tmp_path, "Order.v1.avsc", _raw("OrderEvent"))
    with pytest.raises(CodecError, match="does not match the file name"):
        Codec(tmp_path)


def test_schema_files_need_a_version(tmp_path: Path) -> None:
    _write_schema(tmp_path, "OrderEvent.avsc", _raw("OrderEvent"))
    with pytest.raises(CodecError, match=r"<RecordName>\.v<version>\.avsc"):
        Codec(tmp_path)


def test_invalid_schema_is_reported_at_construction(tmp_path: Path) -> None:
    _write_schema(tmp_path, "OrderEvent.v1.avsc", _order_v0(total_cents="money"))
    with pytest.raises(CodecError, match="invalid Avro schema"):
        Codec(tmp_path)


def test_empty_schema_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CodecError, match=r"no \*\.avsc"):
        Codec(tmp_path)
