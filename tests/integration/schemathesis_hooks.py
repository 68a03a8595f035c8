"""Schemathesis hooks for the run against the ingest (``SCHEMATHESIS_HOOKS=<this module>``).

**NDJSON.** The ingest's OpenAPI document describes an NDJSON body as the array of its events;
sent, each event is one line. Schemathesis has no NDJSON serializer of its own, so this is it.
A value that is not an array (negative cases) is sent as it is: a string verbatim, anything
else as one JSON line.

**The one accepted failure.** keel takes instants from 0001-01-01T00:00:00Z to
9999-12-31T23:59:59.999Z, the range the query API can show again as ISO-8601 with ``Z``.
RFC 3339 ``date-time`` strings reach a day further: ``0001-01-01T00:00:00+01:00`` is
0000-12-31T23:00Z, and ``9999-12-31T23:00:00-01:00`` falls in year 10000, which no four-digit
year can show. JSON Schema cannot bound a ``date-time`` (the document says the range in
words), so schemathesis may generate such a value as valid and see a 400. That 400 is right;
:func:`filter_failure` drops exactly that failure (positive_data_acceptance, the answer naming
a timestamp *string* as outside the years) and nothing else; the summary counts them
("Filtered: N").
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis

from streams.encoding.codec import get_codec

OUT_OF_RANGE = "lies outside the years 0001..9999 UTC"


def _timestamp_fields() -> frozenset[str]:
    codec, fields = get_codec(), set()
    for record in ("OrderEvent", "ShipmentEvent", "ContactEvent"):
        for field in codec.schema(record)["fields"]:
            branches = field["type"] if isinstance(field["type"], list) else [field["type"]]
            if any(
                isinstance(b, dict) and b.get("logicalType") == "timestamp-millis" for b in branches
            ):
                fields.add(field["name"])
    return frozenset(fields)


TIMESTAMP_FIELDS = _timestamp_fields()


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx: Any, value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, list):
        return b"".join(json.dumps(item).encode() + b"\n" for item in value)
    return json.dumps(value).encode()


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """False (drop) only for a valid-looking timestamp outside keel's range; see above."""
    if getattr(failure, "code", None) != "ST202" or response is None:
        return True
    try:
        answer = json.loads(response.content)
    except (TypeError, ValueError):
        return True
    if not isinstance(answer, dict):
        return True
    field, error = answer.get("field"), str(answer.get("error", ""))
    # A string only: epoch milliseconds have their range in the schema, a 400 for one is a bug.
    written = f'{field}: string "'
    return not (field in TIMESTAMP_FIELDS and written in error and error.endswith(OUT_OF_RANGE))
