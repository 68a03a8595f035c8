"""The credentials and certificates of deploy/compose, made once on the user's machine.

``python3 -m deploy.local.run --compose-secrets --dir deploy/compose`` writes, next to the
compose file and never into git (all mode 600 but the CA)::

    keel.env       every keel service: its Kafka SASL login, REDIS_URL, POSTGRES_URL,
                   KEEL_DIRECTORY_URL
    kafka.env      the broker: its keystore's password and the PLAIN users of its listener
    redis.env      the server's password (and REDISCLI_AUTH for its health check)
    postgres.env   POSTGRES_PASSWORD of the postgres image
    tls/           a CA (tls/ca.pem, what keel trusts) and the broker's certificate for the
                   host name ``kafka`` (tls/server.p12)

Every password is random. A second run keeps what is there, so a running stack goes on
working; delete the files (and the volumes) to make new ones.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from deploy.local.envfile import write_private
from deploy.local.tls import make_certificates

#: the broker's host name in the compose network: its certificate is made for it
KAFKA_HOST = "kafka"
USER = "keel"
#: days the compose certificates are valid; delete tls/ and run again to renew
CERT_DAYS = 825
FILES = ("keel.env", "kafka.env", "redis.env", "postgres.env")


def ensure_compose_secrets(directory: Path) -> list[Path]:
    """The env files and tls/ of deploy/compose in ``directory``; kept if all are there."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / name for name in FILES]
    tls = directory / "tls"
    if all(p.exists() for p in paths) and (tls / "ca.pem").exists():
        return [*paths, tls]
    kafka, redis, postgres, keystore = (secrets.token_urlsafe(24) for _ in range(4))
    make_certificates(tls, keystore, cn=KAFKA_HOST, days=CERT_DAYS)
    (tls / "ca.pem").chmod(0o644)  # the containers read it as another user; it is public
    (tls / "server.p12").chmod(0o644)  # the broker's uid reads it; its password is kafka.env's
    jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{USER}" password="{kafka}" user_{USER}="{kafka}";'
    )
    contents = {
        "keel.env": [
            "# deploy/compose: what every keel service logs in with (docs/security.md)",
            f"KAFKA_SASL_USERNAME={USER}",
            f"KAFKA_SASL_PASSWORD={kafka}",
            f"REDIS_URL=redis://{USER}:{redis}@redis:6379/0",
            f"POSTGRES_URL=postgresql://{USER}:{postgres}@postgres:5432/{USER}",
            # the customer directory (the desk's search) in the same PostgreSQL
            f"KEEL_DIRECTORY_URL=postgresql://{USER}:{postgres}@postgres:5432/{USER}",
        ],
        "kafka.env": [
            "# deploy/compose: the broker's secrets (apache/kafka turns KAFKA_A_B into a.b)",
            f"KAFKA_SSL_KEYSTORE_PASSWORD={keystore}",
            f"KAFKA_SSL_KEY_PASSWORD={keystore}",
            f"KAFKA_LISTENER_NAME_CLIENT_PLAIN_SASL_JAAS_CONFIG={jaas}",
        ],
        "redis.env": [
            "# deploy/compose: the Redis ACL user keel's password",
            f"REDIS_PASSWORD={redis}",
            f"REDISCLI_AUTH={redis}",
        ],
        "postgres.env": [
            "# deploy/compose: PostgreSQL's user keel (password authentication)",
            f"POSTGRES_USER={USER}",
            f"POSTGRES_PASSWORD={postgres}",
            f"POSTGRES_DB={USER}",
        ],
    }
    for path in paths:
        write_private(path, "\n".join(contents[path.name]) + "\n")
    return [*paths, tls]
