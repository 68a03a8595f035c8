"""The ``keel`` command: a stream worker, the dead-letter queue, and erasure on request.

    $ KAFKA_BOOTSTRAP=127.0.0.1:9092 keel worker
    $ keel deadletters list [--topic T] [--reason R] [--since 2h] [--status open] [--json]
    $ keel deadletters show 0:17 | replay 0:17 2:5 | handle 0:19 --note "…"
    $ keel erase c-42 --reason "data subject request DSR-2026-118" [--by dpo]
    $ keel --bootstrap kafka:9093 --env-file deploy/compose/keel.env deadletters list

Configuration comes from the environment (docs/configuration.md lists every variable); a bad value
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
    from streams.kafka.admin import TopicError, ensure_topics, session_timeout_refused

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
    refused = session_timeout_refused(settings)
    if refused:
        print(f"keel: {refused}", file=sys.stderr)
        return 2

    from faust import Worker

    import streams.api.commands  # noqa: F401  (registers POST /customers/{id}/commands)
    import streams.api.customers  # noqa: F401  (registers the query API)
    import streams.api.deadletters  # noqa: F401  (registers /deadletters and its page)
    import streams.api.desk  # noqa: F401  (registers the service-desk console)
    import streams.api.directory  # noqa: F401  (registers GET /directory, the desk's search)
    import streams.api.openapi  # noqa: F401  (registers GET /openapi.json)
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
    import getpass
    import json

    from streams.kafka.config import KafkaAuthError, reach
    from streams.ops import deadletters as dl

    if settings.kafka_security.protocol != "PLAINTEXT":
        try:  # refused credentials would otherwise read as "0 dead letters" after a timeout
            reach(settings.kafka_bootstrap, 30, settings.kafka_security)
        except KafkaAuthError as exc:
            print(f"keel: {exc}", file=sys.stderr)
            return 2
    by = getattr(args, "by", None) or getpass.getuser()
    try:
        if args.action == "list":
            since = dl.parse_since(args.since) if args.since else None
            wanted = dl.Filter(args.topic, args.reason, since, args.status)
            found = [e.summary() for e in dl.queue(settings, wanted)]
            if args.json:
                print(json.dumps(found, indent=2))
                return 0
            for d in found:
                notes = [f"replay of {d['replay_of']}" if d["replay_of"] else "",
                         f"replayed as {', '.join(d['replays'])}" if d["replays"] else "",
                         "" if d["status"] == "open" else f"{d['status']} by {d.get('by')}"]
                extra = "; ".join(n for n in notes if n)
                print(f"{d['position']:>8}  {d['source']:<24} {d['failed_at']}  {d['reason']}"
                      + (f"  [{extra}]" if extra else ""))  # fmt: skip
            print(f"{len(found)} dead letter(s) ({args.status}) in {settings.topics.deadletter}")
            return 0
        if args.action == "show":
            [letter] = dl.find(settings, [args.position])
            shown = {**letter.summary(), "headers": letter.headers, **letter.views(args.bytes)}
            if args.json:
                print(json.dumps(shown, indent=2, default=str))
                return 0
            for name, value in letter.headers.items():
                print(f"{name}: {value}")
            print(f"key: {shown['key']}")
            if shown["json"] is not None:
                print("value as JSON:")
                print(json.dumps(shown["json"], indent=2, default=str))
            print(f"value ({shown['bytes']} bytes):")
            print(shown["hex"])
            return 0
        if args.action == "handle":
            for letter in dl.handle(settings, args.positions, by, args.note):
                print(f"marked {letter.position} handled: {args.note}")
            return 0
        for letter in dl.replay(settings, args.positions, by):
            print(f"replayed {letter.position} to {letter.source_topic} (marked replayed; if it "
                  "fails again, its new letter says x-replay-of)")  # fmt: skip
        return 0
    except dl.DeadLetterError as exc:
        print(f"keel: {exc}", file=sys.stderr)
        return 2


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


HELP = """\
keel: the stream worker, the dead-letter queue and erasure on request.

examples:
  keel worker                                   run a worker and its query API
  keel deadletters list --since 2h --topic orders.v1
  keel deadletters show 0:17                    headers, the value as JSON and hex
  keel deadletters replay 0:17 0:18             back to the source topic, after a fix
  keel deadletters handle 0:19 --note "staging test data"
  keel erase c-42 --reason "DSR-2026-118"

Settings come from the environment (docs/configuration.md lists every variable); --env-file
reads them from a file of NAME=value lines (e.g. .run/tokens.env, deploy/compose/keel.env),
--bootstrap overrides KAFKA_BOOTSTRAP. A bad value stops the command with one line naming it.
"""


def _environment(args: argparse.Namespace) -> dict[str, str] | None:
    """The environment with --env-file's lines and --bootstrap applied (None: unchanged)."""
    import os

    files, bootstrap = getattr(args, "env_file", []), getattr(args, "bootstrap", None)
    if not files and not bootstrap:
        return None
    env = dict(os.environ)
    for path in files:
        try:
            lines = open(path, encoding="utf-8").read().splitlines()
        except OSError as exc:
            raise ConfigError(f"--env-file {path}: {exc.strerror}") from None
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, value = line.removeprefix("export ").partition("=")
            if not sep or not name.strip():
                raise ConfigError(f"--env-file {path} line {number}: not NAME=value")
            env[name.strip()] = value.strip().strip("'\"")
    if bootstrap:
        env["KAFKA_BOOTSTRAP"] = bootstrap
    os.environ.update(env)  # the worker's modules read the environment themselves
    return env


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a flag given before the command is not reset by the command's own parser
    common.add_argument("--bootstrap", metavar="HOST:PORT", default=argparse.SUPPRESS,
                        help="Kafka to use (default: KAFKA_BOOTSTRAP, else 127.0.0.1:9092)")
    common.add_argument("--env-file", action="append", metavar="FILE", default=argparse.SUPPRESS,
                        help="read settings from NAME=value lines (may be given again)")
    parser = argparse.ArgumentParser(
        prog="keel", description=HELP, parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("worker", parents=[common], help="run a stream worker and its query API")
    dlp = sub.add_parser("deadletters", parents=[common],
                         help="work through the dead letters: list, show, replay, handle")
    dl_sub = dlp.add_subparsers(dest="action", required=True, metavar="ACTION")
    dl_list = dl_sub.add_parser("list", parents=[common], help="dead letters with their reason")
    dl_list.add_argument("--topic", help="only those from this source topic, e.g. orders.v1")
    dl_list.add_argument("--reason", help="only those whose reason contains this (any case)")
    dl_list.add_argument("--since", help="only those failed since: 30m, 2h, 7d or ISO-8601")
    dl_list.add_argument("--status", default="open",
                         choices=["open", "replayed", "handled", "all"],
                         help="which ones (default: open: neither replayed nor handled)")
    dl_list.add_argument("--json", action="store_true", help="machine-readable output")
    dl_show = dl_sub.add_parser("show", parents=[common],
                                help="one letter: headers, the value as JSON and hex")  # fmt: skip
    dl_show.add_argument("position", metavar="PARTITION:OFFSET")
    dl_show.add_argument("--bytes", type=int, default=4096, help="hex dump up to (4096)")
    dl_show.add_argument("--json", action="store_true", help="machine-readable output")
    dl_replay = dl_sub.add_parser("replay", parents=[common],
                                  help="re-publish to the source topic after a fix")  # fmt: skip
    dl_replay.add_argument("positions", nargs="+", metavar="PARTITION:OFFSET")
    dl_replay.add_argument("--by", help="who replays (default: your login name)")
    dl_handle = dl_sub.add_parser("handle", parents=[common],
                                  help="mark letters handled (no replay needed), with why")
    dl_handle.add_argument("positions", nargs="+", metavar="PARTITION:OFFSET")
    dl_handle.add_argument("--note", required=True, help="why no replay is needed")
    dl_handle.add_argument("--by", help="who decides (default: your login name)")
    er = sub.add_parser("erase", parents=[common],
                        help="forget a customer everywhere keel holds it (GDPR Art. 17)")
    er.add_argument("customer_id")
    er.add_argument("--reason", required=True, help="why (the audit trail), e.g. the ticket")
    er.add_argument("--by", help="who asks (default: your login name)")
    er.add_argument("--request-id", help="the id of a request to send again (default: new)")
    args = parser.parse_args(argv)
    try:
        env = _environment(args)
        settings = Settings.from_env(env)
        auth = AuthConfig.from_env(env)
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
