"""The ``keel`` command: a stream worker, the dead-letter tools, and erasure on request.

    $ KAFKA_BOOTSTRAP=127.0.0.1:9092 keel worker
    $ keel deadletters list [--json]
    $ keel deadletters replay 0:17 2:5
    $ keel erase c-42 --reason "data subject request DSR-2026-118" [--by dpo]

Configuration comes from the environment (README.md lists every variable); a bad value
stops the command with one line saying which variable and why.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys

from streams import tuning
from streams.auth import AuthConfig
from streams.config import ConfigError, Settings
from streams.ops.logs import configure as configure_logging


def _worker(settings: Settings, auth: AuthConfig) -> int:
    from streams.kafka.admin import TopicError, ensure_topics

    log = logging.getLogger("keel")
    log.info("%s", auth.describe())
    log.info("%s", settings.kafka_security.describe())
    for warning in auth.warnings(settings.api_bind):
        log.warning("%s", warning)

    try:
        created = ensure_topics(settings)
    except TopicError as exc:
        print(f"keel: {exc}", file=sys.stderr)
        return 2
    if created:
        log.info("created topics: %s", ", ".join(created))

    from faust import Worker

    import streams.api.commands  # noqa: F401  (registers POST /customers/{id}/commands)
    import streams.api.customers  # noqa: F401  (registers the query API)
    import streams.api.desk  # noqa: F401  (registers the service-desk console)
    import streams.api.unmatched  # noqa: F401  (registers /unmatched and assign_contact)
    import streams.api.voice  # noqa: F401  (registers /voice, the board, announcements)
    import streams.worker.agent  # noqa: F401  (registers agents and tables)
    from streams.app import app

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # override_logging=False: keep streams/ops/logs.py's set-up (KEEL_LOG_FORMAT), not faust's.
    worker = Worker(app, loglevel=settings.log_level.upper(), quiet=True, override_logging=False)
    worker.spinner = None  # its terminal escape codes would land between the log lines
    # The worker allocates many short-lived dicts per event; with the default thresholds the
    # cyclic GC ran every few hundred events and took ~10 % of the CPU. Objects that exist at
    # start-up (modules, faust's app) are frozen out of it.
    gc.collect()
    gc.freeze()
    gc.set_threshold(*tuning.GC_THRESHOLDS)
    worker.execute_from_commandline()
    return 0


def _deadletters(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from streams.kafka.config import KafkaAuthError, reach
    from streams.ops.deadletters import DeadLetterError, read_dead_letters, replay

    if settings.kafka_security.protocol != "PLAINTEXT":
        try:  # refused credentials would otherwise read as "0 dead letters" after a timeout
            reach(settings.kafka_bootstrap, 30, settings.kafka_security)
        except KafkaAuthError as exc:
            print(f"keel: {exc}", file=sys.stderr)
            return 2

    if args.action == "list":
        letters = [d.summary() for d in read_dead_letters(settings)]
        if args.json:
            print(json.dumps(letters, indent=2))
        else:
            for d in letters:
                print(f"{d['position']:>8}  {d['source']:<24} {d['failed_at']}  {d['reason']}")
            print(f"{len(letters)} dead letter(s) in {settings.topics.deadletter}")
        return 0
    try:
        done = replay(settings, args.positions)
    except DeadLetterError as exc:
        print(f"keel: {exc}", file=sys.stderr)
        return 2
    for letter in done:
        print(f"replayed {letter.position} to {letter.source_topic}")
    return 0


def _erase(settings: Settings, args: argparse.Namespace) -> int:
    import getpass
    import time

    from streams.domain.erasure import BadErasureRequest, build_request
    from streams.encoding.codec import get_codec
    from streams.kafka.producer import ConfirmedProducer, PublishError

    try:
        record = build_request(args.customer_id, args.reason, args.by or getpass.getuser(),
                               int(time.time() * 1000), args.request_id)  # fmt: skip
    except BadErasureRequest as exc:
        print(f"keel: {exc}", file=sys.stderr)
        return 2
    if settings.kafka_security.protocol != "PLAINTEXT":
        from streams.kafka.config import KafkaAuthError, reach

        try:  # refused credentials would otherwise read as a 30 s publish timeout
            reach(settings.kafka_bootstrap, 30, settings.kafka_security)
        except KafkaAuthError as exc:
            print(f"keel: {exc}", file=sys.stderr)
            return 2
    producer = ConfirmedProducer(settings.kafka_bootstrap)
    try:
        value = get_codec().encode("ErasureRequest", record)
        producer.publish(settings.topics.erasures, [(args.customer_id.encode(), value)])
    except PublishError as exc:
        again = f"--request-id {record['request_id']}"
        print(f"keel: the erasure request was not acknowledged by Kafka ({exc}); run the same "
              f"command again with {again}", file=sys.stderr)  # fmt: skip
        return 1
    finally:
        producer.close()
    print(f"erasure request {record['request_id']} for {args.customer_id} published to "
          f"{settings.topics.erasures}; the worker erases the customer within seconds "
          "(GET /customers/ID answers 404 then)")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="keel", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("worker", help="run a stream worker and its query API")
    dl = sub.add_parser("deadletters", help="list dead letters or re-publish them")
    dl_sub = dl.add_subparsers(dest="action", required=True)
    dl_list = dl_sub.add_parser("list", help="every dead letter with its reason")
    dl_list.add_argument("--json", action="store_true", help="machine-readable output")
    dl_replay = dl_sub.add_parser("replay", help="re-publish to the source topic after a fix")
    dl_replay.add_argument("positions", nargs="+", metavar="PARTITION:OFFSET")
    er = sub.add_parser("erase", help="forget a customer everywhere keel holds it (GDPR Art. 17)")
    er.add_argument("customer_id")
    er.add_argument("--reason", required=True, help="why (the audit trail), e.g. the ticket")
    er.add_argument("--by", help="who asks (default: your login name)")
    er.add_argument("--request-id", help="the id of a request to send again (default: new)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        auth = AuthConfig.from_env()
    except ConfigError as exc:
        print(f"keel: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "worker":
        return _worker(settings, auth)
    if args.command == "erase":
        return _erase(settings, args)
    return _deadletters(settings, args)


if __name__ == "__main__":
    sys.exit(main())
