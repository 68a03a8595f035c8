"""Log output of keel's processes: readable text, or one JSON object per line for log shippers.

``KEEL_LOG_FORMAT=json`` makes every line a JSON object with ``ts`` (ISO-8601 UTC, ms,
``Z``), ``level``, ``logger`` and ``message``, plus ``exc`` with the traceback when there is
one and any ``extra={...}`` fields the caller passed. Loki, Elasticsearch or Cloud Logging
then index by level and logger without a parsing rule::

    {"ts": "2026-09-21T08:00:00.123Z", "level": "WARNING", "logger": "streams.worker.agent",
     "message": "dead letter from orders.v1[2]@17: ..."}

Both formats go to stderr. faust's worker would replace this set-up with its own coloured
one, so streams/cli.py starts it with ``override_logging=False``.

What must never be logged at INFO or above: customer PII — names, e-mails, phones, notes.
Log ids (customer, order, event) and positions (topic, partition, offset) instead;
tests/integration/test_logs.py checks that for a worker's whole log.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (newlines inside values are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage().rstrip(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        return orjson.dumps(entry, default=str).decode()


#: loggers whose INFO lines are start-up detail (faust's per-table recovery tables and store
#: openings, service "Starting..." lines): logged at DEBUG, so a healthy start fits a screen
DETAIL_AT_INFO = ("faust.stores.rocksdb", "faust.tables.recovery", "faust.tables.table",
                  "streams.worker.tables", "faust.transport.drivers.aiokafka",
                  "faust.transport.conductor", "faust.transport.consumer",
                  "faust.transport.producer", "faust.web.cache", "faust.sensors", "mode.")
#: ERROR lines of the Kafka clients that a starting group always passes through and that
#: resolve themselves (the coordinator not elected yet, faust's leader topic being created):
#: WARNING, so an ERROR line in a healthy start's log means something
TRANSIENT_ERRORS = ("GroupCoordinatorNotAvailable", "__assignor-__leader not found",
                    "UnknownTopicOrPartition")


class StartupNoise(logging.Filter):
    """Start-up detail down to DEBUG, the Kafka clients' transient errors down to WARNING
    (see :data:`DETAIL_AT_INFO`, :data:`TRANSIENT_ERRORS`); everything else as it is."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and record.name.startswith(DETAIL_AT_INFO):
            return self.level <= logging.DEBUG
        if record.levelno == logging.ERROR and record.name.startswith(("aiokafka", "faust")):
            message = record.getMessage()
            if any(marker in message for marker in TRANSIENT_ERRORS):
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def configure(level: str = "info", fmt: str = "text") -> None:
    """Send all logging (keel's, faust's, aiokafka's, warnings) to stderr in ``fmt``.

    Called once at start, e.g. ``configure(settings.log_level, settings.log_format)``.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    handler.addFilter(StartupNoise(root.level))
    logging.captureWarnings(True)
