"""``python -m deploy.local fetch|up|down|status``: the local Kafka and Redis (see cli.py)."""

from deploy.local.cli import main

raise SystemExit(main())
