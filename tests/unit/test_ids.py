"""One id rule at every way into keel: HTTP ingest, the outbox, the worker's intake, the schema.

An id (``streams.domain.ids.ID_FIELDS``) that is empty or only whitespace would join every such
order into one customer, so each boundary refuses it the way it refuses other bad input:
ingest with a 400 naming the field, the outbox by moving the row aside with the reason, the
intake by making the record a dead letter. The OpenAPI document says so too.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import orjson
import pytest

from connectors.openapi import openapi_document
from connectors.settings import INPUT_KINDS, ConnectorSettings
from connectors.sources.http_ingest import BadRequest, Ingest
from connectors.sources.postgres_outbox import OutboxSource, Rejected
from streams.domain.ids import ID_FIELDS, ID_PATTERN, blank_id, is_blank
from streams.encoding.codec import get_codec
from streams.encoding.jsonconv import to_json
from streams.worker.intake import KEY_FIELD_OF_KIND, SCHEMA_OF_KIND, decode_input
from streams.worker.intake import RejectedInput as DeadLetter
from tests.unit.test_codec import SAMPLES

RULE = "an id must contain a character other than whitespace"
# (record, id field, nullable) for every id field of the three input records
INPUT_IDS = [
    ("OrderEvent", "event_id", False),
    ("OrderEvent", "order_id", False),
    ("OrderEvent", "customer_id", False),
    ("ShipmentEvent", "event_id", False),
    ("ShipmentEvent", "shipment_id", False),
    ("ShipmentEvent", "order_id", False),
    ("ContactEvent", "event_id", False),
    ("ContactEvent", "contact_id", False),
    ("ContactEvent", "customer_id", True),
    ("ContactEvent", "order_id", True),
]
BLANKS = ["", " ", "   ", "\t", "\r\n", "\u00a0", "\u2003\u3000", "\u2028"]
NOT_BLANK = ["c-1", " c-1", "0", "\x1c", "\ufeff", "\u200b", "é"]
KIND_OF_RECORD = {record: kind for kind, record in SCHEMA_OF_KIND.items()}
SETTINGS = ConnectorSettings.from_env({})


def event_json(record: str, **changes: Any) -> dict[str, Any]:
    """A valid event of ``record`` as a department sends it, with ``changes``."""
    body: dict[str, Any] = json.loads(json.dumps(to_json(record, copy.deepcopy(SAMPLES[record]))))
    body.update(changes)
    return body


# --- the rule -----------------------------------------------------------------------------------


def test_the_id_fields_are_the_contract_ids_and_cover_every_key_field() -> None:
    assert ID_FIELDS == ("event_id", "order_id", "customer_id", "contact_id", "shipment_id")
    assert {key for _, _, key in INPUT_KINDS} <= set(ID_FIELDS)
    assert set(KEY_FIELD_OF_KIND.values()) <= set(ID_FIELDS)


@pytest.mark.parametrize("value", BLANKS)
def test_blank_means_empty_or_only_unicode_whitespace(value: str) -> None:
    assert is_blank(value)
    assert blank_id({"event_id": "e-1", "customer_id": value}) == "customer_id"


@pytest.mark.parametrize("value", NOT_BLANK)
def test_anything_else_is_an_id_taken_as_sent(value: str) -> None:
    assert not is_blank(value)
    assert blank_id({"event_id": value, "customer_id": None, "note": ""}) is None


# --- HTTP ingest: 400 naming the field ----------------------------------------------------------


@pytest.fixture(scope="module")
def ingest() -> Ingest:
    return Ingest(SETTINGS, publisher=None)  # type: ignore[arg-type]  # prepare never publishes


@pytest.mark.parametrize(("record", "field", "nullable"), INPUT_IDS)
@pytest.mark.parametrize("blank", ["", " \t"])
def test_ingest_answers_400_naming_a_blank_id(
    ingest: Ingest, record: str, field: str, nullable: bool, blank: str
) -> None:
    kind = next(k for k in ingest.kinds.values() if k.record == record)
    good = event_json(record)
    body = orjson.dumps(good) + b"\n" + orjson.dumps({**good, field: blank})
    with pytest.raises(BadRequest) as info:
        ingest.prepare(kind, body, "application/x-ndjson")
    assert (info.value.status, info.value.field, info.value.line) == (400, field, 2)
    assert f"line 2: {field}: {RULE}" in info.value.error


def test_ingest_accepts_integers_written_with_a_zero_fraction(ingest: Ingest) -> None:
    kind = ingest.kinds["orders"]
    body = event_json("OrderEvent")
    body["items"][0]["quantity"] = 3.0
    body["total_cents"] = float(body["total_cents"])
    records, ids = ingest.prepare(kind, orjson.dumps(body), "application/json")
    event = get_codec().decode(records[0].value, "OrderEvent")
    assert event["items"][0]["quantity"] == 3 and ids == [body["event_id"]]
    body["items"][0]["quantity"] = 1.5
    with pytest.raises(BadRequest) as info:
        ingest.prepare(kind, orjson.dumps(body), "application/json")
    assert (info.value.status, info.value.field) == (400, "items[0].quantity")


# --- the outbox: the row is moved aside with the reason ---------------------------------------


@pytest.mark.parametrize(("record", "field", "nullable"), INPUT_IDS)
def test_outbox_rejects_a_row_with_a_blank_id_as_invalid(
    record: str, field: str, nullable: bool
) -> None:
    source = OutboxSource(SETTINGS)
    kind = next(k for k in SETTINGS.inputs() if k.record == record)
    payload = event_json(record, **{field: " "})
    with pytest.raises(Rejected) as info:
        source.record(kind.topic, None, payload)
    assert (info.value.label, info.value.where) == ("invalid", f"payload.{field}")
    assert info.value.reason == f"payload.{field}: {RULE}"


# --- the worker's intake: a dead letter with the reason ---------------------------------------


def _raw(record: str, **changes: Any) -> tuple[bytes, bytes]:
    """(key, value) of an input record as a producer that bypasses the connectors writes it."""
    event = {**copy.deepcopy(SAMPLES[record]), **changes}
    key = event[KEY_FIELD_OF_KIND[KIND_OF_RECORD[record]]] or ""
    return key.encode(), get_codec().encode(record, event)


@pytest.mark.parametrize(("record", "field", "nullable"), INPUT_IDS)
@pytest.mark.parametrize("blank", ["", "  "])
def test_intake_makes_a_record_with_a_blank_id_a_dead_letter(
    record: str, field: str, nullable: bool, blank: str
) -> None:
    key, value = _raw(record, **{field: blank})
    with pytest.raises(DeadLetter) as info:
        decode_input(KIND_OF_RECORD[record], key, value, 1 << 20)
    assert info.value.reason.startswith(f"{field} {blank!r}: {RULE}")


def test_intake_passes_null_optional_ids_and_ids_with_spaces_around_them() -> None:
    key, value = _raw("ContactEvent", customer_id=None, order_id=None, contact_id=" k-9 ")
    event = decode_input("contact", key, value, 1 << 20)
    assert (event["contact_id"], event["customer_id"]) == (" k-9 ", None)


# --- the OpenAPI document -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi_document([(p, r, f"{p}.v1", k) for p, r, k in INPUT_KINDS])


def _string_branches(schema: dict[str, Any]) -> list[dict[str, Any]]:
    branches = schema.get("anyOf", [schema])
    return [b for b in branches if b.get("type") == "string"]


@pytest.mark.parametrize(("record", "field", "nullable"), INPUT_IDS)
def test_openapi_says_ids_have_min_length_1_and_a_non_whitespace_character(
    document: dict[str, Any], record: str, field: str, nullable: bool
) -> None:
    component = document["components"]["schemas"][record]
    prop = component["properties"][field]
    (string,) = _string_branches(prop)
    assert string["minLength"] == 1 and string["pattern"] == ID_PATTERN
    assert (field in component["required"]) is not nullable
    if nullable:
        assert {"type": "null"} in prop["anyOf"]


def test_every_id_field_in_the_document_carries_the_rule(document: dict[str, Any]) -> None:
    checked = 0
    for component in document["components"]["schemas"].values():
        for name, prop in component.get("properties", {}).items():
            if name in ID_FIELDS:
                for string in _string_branches(prop):
                    assert string["minLength"] == 1 and string["pattern"] == ID_PATTERN
                    checked += 1
    assert checked >= len(INPUT_IDS)


@pytest.mark.parametrize("value", BLANKS + NOT_BLANK)
def test_the_documents_schema_and_keels_check_agree_on_every_id(
    document: dict[str, Any], value: str
) -> None:
    """What a client's JSON Schema validator accepts is what keel accepts, and no more."""
    schema = {"$ref": "#/components/schemas/OrderEvent", "components": document["components"]}
    validator = jsonschema.Draft202012Validator(schema)
    body = event_json("OrderEvent", customer_id=value)
    assert validator.is_valid(body) is not is_blank(value)
    body = event_json("OrderEvent", total_cents=2999.0)  # an integer to JSON Schema, and to keel
    assert validator.is_valid(body)
