"""Get the programs the local stack runs: Kafka's, Connect's and Debezium's jars from Maven
Central, the rest from apt.

There is no Kafka package for Debian and no Docker here, so the broker is the plain
``kafka_2.13`` jar and its dependencies, fetched once by Maven (``pom.xml`` next to this file)
into a cache outside git::

    lib = ensure_kafka_jars()      # ~/.cache/keel/kafka-3.9.1/lib, or $KEEL_CACHE/...
    ensure_connect_jars()          # Kafka Connect's runtime, ~/.cache/keel/connect-3.9.1/lib
    ensure_debezium_plugin()       # Debezium's PostgreSQL connector, a Connect plugin
    ensure_apt_packages()          # redis-server, postgresql, prometheus, chromium (root only)

Progress goes to the ``logging`` logger of this module and to Maven's own output; the CLI in
``deploy.local.cli`` shows both.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from deploy.local.errors import MissingTool, StackError

log = logging.getLogger(__name__)

KAFKA_VERSION = "3.9.1"
SCALA_VERSION = "2.13"
DEBEZIUM_VERSION = "3.6.1.Final"
POM = Path(__file__).with_name("pom.xml")
CONNECT_POM = Path(__file__).with_name("connect-pom.xml")
DEBEZIUM_POM = Path(__file__).with_name("debezium-pom.xml")
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies"
JAVA_HINT = "apt-get install openjdk-17-jre-headless maven"
# chromium and chromium-driver: the desk console's browser tests (tests/integration/test_desk.py)
# drive /usr/bin/chromium through /usr/bin/chromedriver with selenium. openssl: the throw-away
# CA and certificates of the TLS tests (deploy/local/tls.py).
DEFAULT_APT_PACKAGES = (
    "redis-server", "postgresql", "prometheus", "chromium", "chromium-driver", "openssl",
)  # fmt: skip
# The system-wide service each package starts when installed (see ensure_apt_packages).
SERVICES = {"redis-server": "redis-server", "postgresql": "postgresql", "prometheus": "prometheus"}

# How to tell a package is installed without asking dpkg: the binaries it provides.  Debian
# keeps PostgreSQL's server binaries off PATH, under a versioned directory.
_PACKAGE_BINARIES: dict[str, tuple[str, ...]] = {
    "redis-server": ("redis-server",),
    "postgresql": ("postgres", "/usr/lib/postgresql/*/bin/postgres"),
    "prometheus": ("prometheus",),
    "chromium": ("/usr/bin/chromium",),
    "chromium-driver": ("/usr/bin/chromedriver",),
    "openssl": ("openssl",),
}


def cache_dir() -> Path:
    """``$KEEL_CACHE`` or ``~/.cache/keel``: downloads live outside the git checkout."""
    configured = os.environ.get("KEEL_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "keel"


def java_binary() -> str:
    """The ``java`` to run the broker with, honouring ``$JAVA_HOME`` like Kafka's scripts do."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(Path(java_home, "bin", "java"), os.X_OK):
        return str(Path(java_home, "bin", "java"))
    found = shutil.which("java")
    if found is None:
        raise MissingTool(f"java not found; install it: {JAVA_HINT}")
    return found


def ensure_kafka_jars() -> Path:
    """Return the directory holding Kafka's jars, downloading them on the first call only."""
    return _ensure_jars(
        POM, cache_dir() / f"kafka-{KAFKA_VERSION}", "lib", _broker_jar_name(),
        f"Kafka {KAFKA_VERSION} jars (first run only, ~50 MB)",
    )  # fmt: skip


def ensure_connect_jars() -> Path:
    """Kafka Connect's runtime (the broker's version, ~30 MB): its ``lib`` directory."""
    return _ensure_jars(
        CONNECT_POM, cache_dir() / f"connect-{KAFKA_VERSION}", "lib",
        f"connect-runtime-{KAFKA_VERSION}.jar",
        f"Kafka Connect {KAFKA_VERSION} jars (first use only, ~30 MB)",
    )  # fmt: skip


def ensure_debezium_plugin() -> Path:
    """Debezium's PostgreSQL connector (~25 MB) as a Connect plugin; returns the directory to
    give Connect as ``plugin.path`` (it holds the one plugin directory)."""
    base = cache_dir() / f"debezium-{DEBEZIUM_VERSION}"
    _ensure_jars(
        DEBEZIUM_POM, base, "debezium-connector-postgres",
        f"debezium-connector-postgres-{DEBEZIUM_VERSION}.jar",
        f"Debezium {DEBEZIUM_VERSION} PostgreSQL connector (first use only, ~25 MB)",
        "-DexcludeGroupIds=org.apache.kafka,org.slf4j",
    )  # fmt: skip
    return base


def _ensure_jars(pom: Path, base: Path, leaf: str, marker: str, what: str, *extra: str) -> Path:
    """``base/leaf`` holding the runtime jars of ``pom``, fetched by Maven on the first call.

    Maven copies into a temporary sibling directory which is then renamed into place, so an
    interrupted download never leaves a half-filled cache that later runs would trust
    (``marker``, a jar of the download, is how a complete one is told).
    """
    java_binary()  # the jars are useless without it: say so before downloading them
    lib = base / leaf
    if (lib / marker).is_file():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise MissingTool(f"mvn not found; install it: {JAVA_HINT}")
    base.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_downloads(base)
    if lib.exists():
        # Renames are atomic, so an incomplete directory is debris from a hand edit: start over.
        shutil.rmtree(lib)
    log.info("fetching %s…", what)
    tmp = Path(tempfile.mkdtemp(prefix=f".lib-{os.getpid()}-", dir=base))
    try:
        command = [
            mvn, "-B", "-f", str(pom), DEPENDENCY_PLUGIN,
            "-DincludeScope=runtime", f"-DoutputDirectory={tmp}", *extra,
        ]  # fmt: skip
        result = subprocess.run(command, stdin=subprocess.DEVNULL, check=False)
        if result.returncode != 0:
            raise StackError(f"mvn failed (exit {result.returncode}) fetching {what}")
        if not (tmp / marker).is_file():
            raise StackError(f"mvn finished but {marker} is not in {tmp}")
        try:
            tmp.rename(lib)
        except OSError:
            if not (lib / marker).is_file():  # not a concurrent fetch that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("cached in %s", lib)
    return lib


def ensure_apt_packages(packages: Iterable[str] = DEFAULT_APT_PACKAGES) -> None:
    """Install the Debian packages whose binaries are missing (as root), else say what to run.

    apt starts a system-wide service for each of these packages; keel runs its own instances on
    its own data directories and the same default ports, so those services are stopped and
    disabled again right after installing.
    """
    missing = [package for package in packages if not _has_binaries(package)]
    if not missing:
        return
    command = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if os.geteuid() != 0:
        raise MissingTool(f"{', '.join(missing)} not installed; install: sudo {' '.join(command)}")
    if shutil.which("apt-get") is None:
        raise MissingTool(f"{', '.join(missing)} not installed and there is no apt-get here")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log.info("installing %s with apt-get…", " ".join(missing))
    for step in (["apt-get", "update"], command):
        result = subprocess.run(step, env=env, stdin=subprocess.DEVNULL, check=False)
        if result.returncode != 0:
            raise StackError(f"{' '.join(step)} failed (exit {result.returncode})")
    _stop_system_services([SERVICES[package] for package in missing if package in SERVICES])
    still_missing = [package for package in missing if not _has_binaries(package)]
    if still_missing:
        raise StackError(f"apt-get installed {', '.join(still_missing)} but found no binaries")


def _broker_jar_name() -> str:
    return f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar"


def _remove_abandoned_downloads(base: Path) -> None:
    """Delete ``.lib-<pid>-*`` directories whose downloading process no longer exists."""
    for leftover in base.glob(".lib-*-*"):
        pid = leftover.name.split("-")[1]
        if pid.isdigit() and not Path("/proc", pid).exists():
            shutil.rmtree(leftover, ignore_errors=True)


def _has_binaries(package: str) -> bool:
    for candidate in _PACKAGE_BINARIES.get(package, (package,)):
        found = glob.glob(candidate) if candidate.startswith("/") else shutil.which(candidate)
        if found:
            return True
    return False


def _stop_system_services(services: list[str]) -> None:
    if not services:
        return
    if Path("/run/systemd/system").is_dir() and shutil.which("systemctl"):
        log.info("disabling the system services apt started: %s", " ".join(services))
        subprocess.run(["systemctl", "disable", "--now", *services], check=False)
    elif shutil.which("service"):
        for service in services:
            subprocess.run(["service", service, "stop"], check=False, capture_output=True)
