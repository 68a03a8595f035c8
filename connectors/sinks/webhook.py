"""HTTP webhook: each desk command (commands.v1) POSTed as JSON to a department's URL, signed.

For departments that would rather receive a call than read a table. Every command is one
``POST KEEL_WEBHOOK_URL`` with the command as JSON (``requested_at`` ISO-8601 UTC) and

    Content-Type: application/json
    X-Keel-Command-Id: <command_id>           deduplicate by it: delivery is at-least-once
    X-Keel-Signature: sha256=<hex>            HMAC-SHA256 of the exact body with KEEL_WEBHOOK_SECRET

The receiver checks the signature before anything else::

    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    hmac.compare_digest(expected, request.headers["X-Keel-Signature"])

What the answer means:

- **2xx**: delivered. The next command is sent, and offsets are committed once a batch is.
- **408, 429, 5xx, no answer within KEEL_WEBHOOK_TIMEOUT_MS, connection refused**: not
  delivered; the same command is sent again after a backoff (0.1 s doubling to 5 s), for as
  long as it takes. Nothing behind it is sent meanwhile, so one target's commands stay in order.
- **any other 4xx**: the department *rejected* this command (a bad signature, a command it
  cannot carry out): retrying would not help, so it becomes a dead letter in ``deadletter.v1``
  with ``x-error: webhook answered 422: <start of the body>``, is counted in
  ``keel_connector_rejected_total{reason="rejected"}``, and delivery goes on with the next one.

Either answer also goes back to keel as a CommandOutcome on ``command-outcomes.v1``
(connectors/sinks/delivery.py): DELIVERED for a 2xx, REJECTED for a final 4xx with the
department's reason (the ``error`` of a JSON answer, else the start of its body, and the
status), published before the batch's offsets are committed. The desk then sees the command
failed with that reason at once, not after ``KEEL_COMMAND_TIMEOUT_S``.

Run it as ``python -m connectors.sinks.webhook``; ``/healthz`` and ``/metrics`` on
``KEEL_WEBHOOK_PORT``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import orjson

from connectors import metrics
from connectors.contract import Sink, SinkRecord, Unavailable
from connectors.runner import SinkPlan, run_sink
from connectors.settings import ConfigError, ConnectorSettings
from connectors.sinks.delivery import (
    DELIVERED_OUTCOME,
    REJECTED_OUTCOME,
    DeadLetters,
    Outcomes,
    answer_channels,
    as_json,
    consumer_config,
    decode,
    outcome,
)
from streams.encoding.codec import CodecError

log = logging.getLogger("connectors.sinks.webhook")  # not __main__ under python -m

__all__ = ["SIGNATURE_HEADER", "WebhookSink", "main", "refusal_reason", "sign"]

CONNECTOR = "webhook"
BATCH = 100
SIGNATURE_HEADER = "X-Keel-Signature"
COMMAND_ID_HEADER = "X-Keel-Command-Id"
RETRY_STATUSES = frozenset({408, 429})


def sign(secret: bytes, body: bytes) -> str:
    """The X-Keel-Signature value of ``body``.

    >>> sign(b"s3cret", b"{}")
    'sha256=adbde1ce40c89c14215687d5d762a47df6dfaefcfad61e2e86718ffc8498571b'
    """
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def refusal_reason(status: int, answer: str) -> str:
    """What a department said when it refused a command, for the desk to read.

    >>> refusal_reason(409, '{"error": "order o-1 has already shipped"}')
    'order o-1 has already shipped (HTTP 409)'
    >>> refusal_reason(403, "")
    'HTTP 403, no reason given'
    """
    text = answer.strip()
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        text = parsed["error"].strip()
    text = " ".join(text.split())[:280]
    return f"{text} (HTTP {status})" if text else f"HTTP {status}, no reason given"


class WebhookSink(Sink):
    """POSTs each command of a batch in order; see the module docstring for the outcomes."""

    def __init__(
        self,
        url: str,
        secret: bytes,
        dead_letters: DeadLetters,
        outcomes: Outcomes,
        timeout: float = 5.0,
        topic: str = "commands.v1",
    ) -> None:
        self.url = url
        self.secret = secret
        self.dead_letters = dead_letters
        self.outcomes = outcomes
        self._answers: list[dict[str, Any]] = []  # outcomes of this batch, not yet published
        self.timeout = timeout
        self.topic = topic
        # no proxies from the environment: the department's URL is called directly
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._done: set[tuple[int, int]] = set()  # (partition, offset) settled in this batch
        self.delivered = 0
        self.last: str = "none yet"

    def status(self) -> dict[str, Any]:
        return {"url": self.url, "delivered": self.delivered, "last": self.last,
                "outcomes": self.outcomes.published}  # fmt: skip

    def write(self, batch: Sequence[SinkRecord]) -> None:
        # A retried batch skips what was already delivered or dead-lettered: a command is sent
        # again only when its own delivery failed (or the process restarted in between).
        for record in batch:
            position = (record.partition, record.offset)
            if position in self._done:
                continue
            try:
                self._deliver(record)
            except Unavailable:
                # the department is down for this one: what the earlier ones got is news now
                try:
                    self._publish_answers()
                except Unavailable as exc:
                    log.warning("command outcomes not published yet (%s); sent with the batch",
                                exc)  # fmt: skip
                raise
            self._done.add(position)
        self._publish_answers()  # before the offsets: a crash sends them again
        self._done.clear()

    def _publish_answers(self) -> None:
        self.outcomes.publish(self._answers)
        self._answers.clear()

    def _deliver(self, record: SinkRecord) -> None:
        try:
            command = decode(record)
        except CodecError as exc:
            self.dead_letters.send(record, exc.reason, "undecodable")
            return
        metrics.ACCEPTED.labels(CONNECTOR, self.topic).inc()
        body = orjson.dumps(as_json(command))
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "keel-webhook",
                COMMAND_ID_HEADER: command["command_id"],
                SIGNATURE_HEADER: sign(self.secret, body),
            },
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as resp:
                status = resp.status
        except urllib.error.HTTPError as exc:
            status = exc.code
            answer = exc.read(2000).decode("utf-8", "replace")
            exc.close()
            if 400 <= status < 500 and status not in RETRY_STATUSES:
                self.last = f"rejected {status}"
                reason = f"webhook answered {status}: {answer}".strip()
                self.dead_letters.send(record, reason, "rejected")
                refused = refusal_reason(status, answer)
                self._answers.append(outcome(command, REJECTED_OUTCOME, CONNECTOR, refused))
                return
            self.last = f"retrying after {status}"
            raise Unavailable(f"webhook answered {status}") from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            self.last = f"retrying after {type(exc).__name__}"
            raise Unavailable(f"webhook {self.url}: {exc}") from exc
        if not 200 <= status < 300:
            self.last = f"retrying after {status}"
            raise Unavailable(f"webhook answered {status}")
        self.delivered += 1
        self.last = f"delivered {status}"
        self._answers.append(outcome(command, DELIVERED_OUTCOME, CONNECTOR))


def main(argv: list[str] | None = None) -> int:
    return run_sink("webhook", log, plan)


def plan(settings: ConnectorSettings, closing: ExitStack) -> SinkPlan:
    """commands.v1 POSTed to ``KEEL_WEBHOOK_URL``, signed with ``KEEL_WEBHOOK_SECRET``."""
    if not settings.webhook_url or not settings.webhook_secret:
        raise ConfigError(
            "set KEEL_WEBHOOK_URL (where to POST commands) "
            "and KEEL_WEBHOOK_SECRET (the shared secret of X-Keel-Signature)"
        )
    topics = settings.keel.topics
    dead_letters, outcomes = answer_channels(settings, CONNECTOR, closing)
    sink = WebhookSink(
        settings.webhook_url,
        settings.webhook_secret.encode(),
        dead_letters,
        outcomes,
        settings.webhook_timeout_seconds,
        topics.commands,
    )
    describe = (
        f"webhook: {topics.commands} -> POST {settings.webhook_url} "
        f"(group {settings.webhook_group})"
    )
    return SinkPlan(
        CONNECTOR, sink, sink.status, settings.webhook_port,
        consumer_config(settings.keel.kafka_bootstrap, settings.webhook_group), topics.commands,
        BATCH, describe,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
