"""The ``keel`` command: ``keel worker`` runs a stream worker with its query API.

    $ KAFKA_BOOTSTRAP=127.0.0.1:9092 keel worker

Configuration comes from the environment (README.md lists every variable); a bad value
stops the command with one line saying which variable and why.
"""

from __future__ import annotations

import argparse
import logging
import sys

from streams.config import ConfigError, Settings


def _worker(settings: Settings) -> int:
    from streams.admin import TopicError, ensure_topics

    try:
        created = ensure_topics(settings)
    except TopicError as exc:
        print(f"keel: {exc}", file=sys.stderr)
        return 2
    if created:
        logging.getLogger("keel").info("created topics: %s", ", ".join(created))

    from faust import Worker

    import streams.agents  # noqa: F401  (registers agents and tables)
    import streams.views  # noqa: F401  (registers the query API)
    from streams.app import app

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    worker = Worker(app, loglevel=settings.log_level.upper(), quiet=True)
    worker.execute_from_commandline()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="keel", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("worker", help="run a stream worker and its query API")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"keel: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if args.command == "worker":
        return _worker(settings)
    return 2


if __name__ == "__main__":
    sys.exit(main())
