"""Starting a connector process: its settings (a bad variable: one line and exit 2, logging
configured) and what it may log of them."""

from __future__ import annotations

import logging
import re
import sys

from connectors.settings import ConfigError, ConnectorSettings
from streams.kafka.config import KafkaAuthError, reach
from streams.ops import logs

log = logging.getLogger(__name__)

__all__ = ["load_settings", "redact"]

#: how long a connector with Kafka credentials waits at start to learn they are accepted
CREDENTIALS_CHECK_S = 30.0


def redact(url: str) -> str:
    """``url`` with any password masked, for logs.

    >>> redact("postgresql://keel:s3cret@db:5432/keel")
    'postgresql://keel:***@db:5432/keel'
    """
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def load_settings(name: str) -> ConnectorSettings:
    """Settings from the environment, logging configured; exit 2 on a bad variable.

    Like ``keel worker``: a configuration error is one line naming the variable, not a
    traceback, because logging cannot be set up before the settings are known. Logs go to
    stderr as text or JSON lines (``KEEL_LOG_FORMAT``), the same as the worker's.
    """
    try:
        settings = ConnectorSettings.from_env()
    except ConfigError as exc:
        print(f"keel {name}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logs.configure(settings.keel.log_level, settings.keel.log_format)
    log.info("keel %s: %s", name, settings.auth.describe())
    security = settings.keel.kafka_security
    log.info("keel %s: %s", name, security.describe())
    if security.protocol != "PLAINTEXT":
        # librdkafka retries refused credentials for ever: find out now, and stop
        try:
            if reach(settings.keel.kafka_bootstrap, CREDENTIALS_CHECK_S, security) is None:
                log.warning(
                    "keel %s: Kafka at %s not reachable yet; carrying on",
                    name, settings.keel.kafka_bootstrap,
                )  # fmt: skip
        except KafkaAuthError as exc:
            print(f"keel {name}: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    for warning in settings.auth.warnings(settings.bind):
        log.warning("keel %s: %s", name, warning)
    return settings
