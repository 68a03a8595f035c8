"""A local PostgreSQL server for the outbox connector, for `make run`, `make up` and the tests.

Debian's ``postgresql`` package keeps its server binaries off PATH (``/usr/lib/postgresql/N/bin``)
and PostgreSQL refuses to run as root, so as root the cluster is created and run as the
``postgres`` OS user (``subprocess`` switches user in the child; no ``su`` process sits in
between to swallow signals). Like Kafka and Redis in ``stack.py`` it runs in its own process
group, logs to a file and counts as started only once a real connection gets
``ReadyForQuery``::

    with Postgres(tmp / "pg", port=free_port()) as pg:
        connect(pg.url)        # postgresql://keel@127.0.0.1:PORT/keel, trust auth on 127.0.0.1

The cluster has a superuser ``keel`` and a database ``keel``, authenticated by ``trust`` and
reachable on 127.0.0.1 only: a development server, not a production one. Standard library only,
like the rest of ``deploy.local``.
"""

from __future__ import annotations

import glob
import grp
import os
import pwd
import signal
import socket
import stat
import struct
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deploy.local.errors import MissingTool, StartupError
from deploy.local.stack import HOST, _Service

__all__ = ["Postgres", "postgres_ready"]

USER = "keel"
DATABASE = "keel"
OS_USER_WHEN_ROOT = "postgres"
_PROTOCOL_V3 = 196608


class Postgres(_Service):
    """A PostgreSQL cluster in ``data_dir/cluster``; data survives stop/start.

    ``stop()`` is a *fast* shutdown (SIGINT: clients are disconnected, open transactions
    rolled back) so connected connectors never hold it up; ``kill()`` is a crash.
    """

    name = "postgres"
    marker = b"postgres"
    stop_signal = signal.SIGINT  # a fast shutdown

    def __init__(
        self,
        data_dir: Path,
        port: int = 5432,
        log_file: Path | None = None,
        *,
        passwords: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(data_dir, log_file)
        self.port = port
        #: login roles (name -> password) made at start; with any, every role but the
        #: superuser ``keel`` must give its password (``scram-sha-256`` in pg_hba.conf)
        self.passwords = dict(passwords or {})
        self.cluster = self.data_dir / "cluster"
        self._account: pwd.struct_passwd | None = None  # set by _prepare()

    @property
    def url(self) -> str:
        """libpq URL of the ``keel`` database, e.g. ``postgresql://keel@127.0.0.1:5432/keel``."""
        return f"postgresql://{USER}@{HOST}:{self.port}/{DATABASE}"

    def role_url(self, role: str, database: str = DATABASE) -> str:
        """libpq URL with one of ``passwords``' roles and its password."""
        return f"postgresql://{role}:{self.passwords[role]}@{HOST}:{self.port}/{database}"

    @property
    def address(self) -> str:
        return self.url

    def start(self, timeout: float = 60) -> None:
        """initdb on first use, start the server, create the ``keel`` database if missing."""
        if self.pid is not None:
            return
        deadline = time.monotonic() + timeout
        self.launch(deadline)
        self.wait_ready(deadline)
        try:
            error = _simple_query(HOST, self.port, "postgres", f"CREATE DATABASE {DATABASE}")
            if error is not None and error[0] != "42P04":  # 42P04: it exists already
                raise StartupError(f"creating database {DATABASE} failed: {error[1]}")
            for role, password in self.passwords.items():
                self._login_role(role, password)
        except BaseException:
            self.kill()  # a half-started server would hold its port and data dir
            raise

    def is_ready(self) -> bool:
        return postgres_ready(HOST, self.port)

    def _login_role(self, role: str, password: str) -> None:
        if not role.replace("_", "").isalnum():
            raise StartupError(f"role name {role!r}: letters, digits and _ only")
        quoted = "'" + password.replace("'", "''") + "'"
        for sql in (
            f"CREATE ROLE {role} LOGIN PASSWORD {quoted}",
            f"ALTER ROLE {role} LOGIN PASSWORD {quoted}",  # it existed: the password given now
        ):
            error = _simple_query(HOST, self.port, "postgres", sql)
            if error is None:
                return
            if error[0] != "42710":  # 42710: the role exists
                raise StartupError(f"creating role {role} failed: {error[1]}")

    def _ports(self) -> tuple[int, ...]:
        return (self.port,)

    def _prepare(self, deadline: float) -> list[str]:
        bin_dir = _bin_dir()
        self._account = account = _run_as()
        if account is not None:
            _check_reachable(self.data_dir, account)
            os.chown(self.data_dir, account.pw_uid, account.pw_gid)
        if not (self.cluster / "PG_VERSION").exists():
            self._initdb(bin_dir, account, deadline)
        return [
            str(bin_dir / "postgres"),
            "-D", str(self.cluster),
            "-p", str(self.port),
            "-k", str(self.cluster),
            "-c", f"listen_addresses={HOST}",
            "-c", "shared_buffers=32MB",
            # logical decoding (pgoutput) for Debezium's connector (deploy/local/connect.py)
            "-c", "wal_level=logical",
            *self._hba(),
        ]  # fmt: skip

    def _hba(self) -> list[str]:
        """With login roles: their passwords are checked (SCRAM), the superuser stays trusted."""
        if not self.passwords:
            return []
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(
            "# written by deploy/local/postgres.py on every start; edits are lost\n"
            f"local all {USER} trust\n"
            f"host all {USER} {HOST}/32 trust\n"
            f"host all all {HOST}/32 scram-sha-256\n"
        )
        hba.chmod(0o644)
        return ["-c", f"hba_file={hba}", "-c", "password_encryption=scram-sha-256"]

    def _popen_options(self) -> dict[str, Any]:
        """As root, the server runs as the ``postgres`` OS user (see :func:`_run_as`)."""
        return {"user": self._uid, "group": self._gid, "extra_groups": self._extra_groups}

    @property
    def _uid(self) -> int | None:
        return self._account.pw_uid if self._account else None

    @property
    def _gid(self) -> int | None:
        return self._account.pw_gid if self._account else None

    @property
    def _extra_groups(self) -> list[int] | None:
        return [] if self._account else None  # as root: drop root's supplementary groups

    def _initdb(self, bin_dir: Path, account: pwd.struct_passwd | None, deadline: float) -> None:
        command = [
            str(bin_dir / "initdb"), "-D", str(self.cluster), "-U", USER, "--auth=trust",
            "--encoding=UTF8", "--no-locale",
        ]  # fmt: skip
        try:
            result = subprocess.run(
                command,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=max(1.0, deadline - time.monotonic()),
                check=False,
                user=self._uid,
                group=self._gid,
                extra_groups=self._extra_groups,
            )
        except subprocess.TimeoutExpired as exc:
            raise StartupError(f"initdb in {self.cluster} timed out") from exc
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace").strip()
            raise StartupError(f"initdb failed:\n{output}")


def postgres_ready(host: str, port: int, timeout: float = 2.0) -> bool:
    """True if a connection as ``keel`` to database ``postgres`` reaches ReadyForQuery."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            _startup(sock, "postgres")
            ready = _read_until_ready(sock) is None
            _terminate(sock)
            return ready
    except (OSError, struct.error, ConnectionError):
        return False


def _simple_query(host: str, port: int, database: str, sql: str) -> tuple[str, str] | None:
    """Run one statement over the wire protocol; (SQLSTATE, message) of an error, else None."""
    with socket.create_connection((host, port), timeout=10) as sock:
        _startup(sock, database)
        error = _read_until_ready(sock)
        if error is None:
            payload = sql.encode() + b"\0"
            sock.sendall(b"Q" + struct.pack(">i", len(payload) + 4) + payload)
            error = _read_until_ready(sock)
        _terminate(sock)
        return error


def _startup(sock: socket.socket, database: str) -> None:
    params = b"user\0" + USER.encode() + b"\0database\0" + database.encode() + b"\0\0"
    sock.sendall(struct.pack(">ii", len(params) + 8, _PROTOCOL_V3) + params)


def _read_until_ready(sock: socket.socket) -> tuple[str, str] | None:
    """Read messages up to ReadyForQuery; the first ErrorResponse as (SQLSTATE, message)."""
    error: tuple[str, str] | None = None
    while True:
        kind = _recv_exactly(sock, 1)
        (length,) = struct.unpack(">i", _recv_exactly(sock, 4))
        body = _recv_exactly(sock, length - 4)
        if kind == b"E":
            fields = {part[:1]: part[1:].decode(errors="replace") for part in body.split(b"\0")}
            error = error or (fields.get(b"C", ""), fields.get(b"M", ""))
            if fields.get(b"S") in ("FATAL", "PANIC"):
                return error  # the server closes the connection after a fatal error
        elif kind == b"R" and struct.unpack(">i", body[:4])[0] != 0:
            return ("28000", "the server asks for a password; keel's cluster uses trust")
        elif kind == b"Z":
            return error


def _terminate(sock: socket.socket) -> None:
    try:
        sock.sendall(b"X" + struct.pack(">i", 4))
    except OSError:
        pass


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = sock.recv(remaining)
        if not chunk:
            raise ConnectionError("connection closed mid-message")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _bin_dir() -> Path:
    """Where ``postgres`` and ``initdb`` are: Debian's newest versioned dir, else PATH."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if directory and (Path(directory) / "initdb").exists():
            return Path(directory)
    raise MissingTool(
        "PostgreSQL server binaries not found; run `python -m deploy.local fetch` as "
        "root or apt-get install postgresql"
    )


def _run_as() -> pwd.struct_passwd | None:
    """The account to run PostgreSQL as: ``postgres`` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(OS_USER_WHEN_ROOT)
    except KeyError:
        raise MissingTool(
            "PostgreSQL refuses to run as root and there is no `postgres` user; "
            "apt-get install postgresql creates it"
        ) from None


def _check_reachable(path: Path, account: pwd.struct_passwd) -> None:
    """Fail early, and say why, if ``account`` cannot reach ``path`` through its parents."""
    groups = {account.pw_gid} | {g.gr_gid for g in grp.getgrall() if account.pw_name in g.gr_mem}
    for parent in reversed(path.parents):
        info = parent.stat()
        if info.st_uid == account.pw_uid:
            allowed = bool(info.st_mode & stat.S_IXUSR)
        elif info.st_gid in groups:
            allowed = bool(info.st_mode & stat.S_IXGRP)
        else:
            allowed = bool(info.st_mode & stat.S_IXOTH)
        if not allowed:
            raise StartupError(
                f"PostgreSQL runs as OS user {account.pw_name} (it refuses root), which cannot "
                f"enter {parent}; put its data dir somewhere it can reach (e.g. under /tmp)"
            )
