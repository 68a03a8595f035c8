"""The ingest's OpenAPI document says what the ingest accepts, so generated clients agree."""

from __future__ import annotations

from connectors.openapi import NDJSON, openapi_document, status_document
from connectors.settings import INPUT_KINDS


def test_an_ndjson_body_is_described_as_its_events_one_per_line() -> None:
    document = openapi_document([(p, r, f"{p}.v1", k) for p, r, k in INPUT_KINDS])
    for path, record, _ in INPUT_KINDS:
        content = document["paths"][f"/events/{path}"]["post"]["requestBody"]["content"]
        event = content["application/json"]["schema"]
        assert event == {"$ref": f"#/components/schemas/{record}"}
        lines = content[NDJSON]["schema"]
        assert (lines["type"], lines["items"], lines["minItems"]) == ("array", event, 1)


def test_timestamps_say_their_range_in_words_and_as_epoch_milliseconds() -> None:
    document = openapi_document([("orders", "OrderEvent", "orders.v1", "customer_id")])
    stamp = document["components"]["schemas"]["OrderEvent"]["properties"]["occurred_at"]
    assert "0001-01-01T00:00:00Z..9999-12-31T23:59:59.999Z" in stamp["description"]
    epoch = next(b for b in stamp["anyOf"] if b["type"] == "integer")
    assert (epoch["minimum"], epoch["maximum"]) == (-62_135_596_800_000, 253_402_300_799_999)


def test_a_status_port_documents_health_metrics_and_itself_with_metrics_behind_the_role() -> None:
    document = status_document("redis-sink")
    assert sorted(document["paths"]) == ["/healthz", "/metrics", "/openapi.json"]
    metrics = document["paths"]["/metrics"]["get"]
    assert metrics["security"] == [{"bearer": ["metrics"]}]
    assert {"401", "403"} <= metrics["responses"].keys()
    assert "security" not in document["paths"]["/healthz"]["get"]
    public = status_document("redis-sink", metrics_public=True)
    assert "security" not in public["paths"]["/metrics"]["get"]
    assert "securitySchemes" not in status_document("x", secured=False)["components"]
