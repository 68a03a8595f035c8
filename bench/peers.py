"""Where the Quix Streams peer runs: a virtualenv of its own, made once and cached.

quixstreams 3.28 pins ``confluent-kafka<2.13`` while keel needs ``>=2.16.1``, so the two
cannot share ``.venv``. The peer's venv lives beside the Kafka jars in ``$KEEL_CACHE``
(default ``~/.cache/keel``) and holds exactly quixstreams and fastavro; the peer imports
keel's codec and merge from the repository (they need only fastavro).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

QUIX_REQUIREMENTS = ("quixstreams==3.28.1", "fastavro>=1.13.1")


def venv_dir() -> Path:
    cache = Path(os.environ.get("KEEL_CACHE") or Path.home() / ".cache" / "keel")
    return cache / "venv-quix"


def quix_python(install: bool = True) -> str | None:
    """The peer venv's python (made if missing and ``install``); None when unavailable."""
    python = venv_dir() / "bin" / "python"
    if _has_quix(python):
        return str(python)
    if not install:
        return None
    log.info("making the Quix Streams peer's virtualenv in %s (first run only)", venv_dir())
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv_dir())], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *QUIX_REQUIREMENTS,
            ],
            check=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        log.warning("cannot install the Quix Streams peer: %s", exc)
        return None
    return str(python) if _has_quix(python) else None


def _has_quix(python: Path) -> bool:
    if not python.exists():
        return False
    probe = subprocess.run(
        [str(python), "-c", "import quixstreams"], capture_output=True, timeout=60, check=False
    )
    return probe.returncode == 0


def quix_version(python: str | None) -> str | None:
    if python is None:
        return None
    out = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('quixstreams'))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return out.stdout.strip() or None
