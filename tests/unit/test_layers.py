"""The direction of imports holds: ``lint-imports`` keeps every contract of pyproject.toml.

The contracts (``[tool.importlinter]``): streams in layers (cli, api, worker, ops above
encoding and kafka, above domain, above errors); streams.domain imports nothing of keel but
streams.errors; streams.api never imports the join agent; connectors import only streams'
bottom layers and never load the worker. ``make lint`` runs the same command.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import streams.domain

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_every_import_contract_is_kept() -> None:
    done = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_the_connectors_contract_forbids_every_rule_but_the_ids() -> None:
    """A new module of streams.domain is off limits to connectors unless listed here: only the
    ids and the directory's folding rules (connectors/sinks/directory.py) are theirs."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    [direct] = [
        c for c in config["contracts"]
        if c.get("source_modules") == ["connectors"] and c.get("allow_indirect_imports")
    ]  # fmt: skip
    domain = {f"streams.domain.{m.name}" for m in pkgutil.iter_modules(streams.domain.__path__)}
    allowed = {"streams.domain.ids", "streams.domain.directory"}
    assert domain - set(direct["forbidden_modules"]) == allowed
