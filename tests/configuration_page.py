"""docs/configuration.md's tables, generated from the code that reads the variables.

The page holds two generated blocks, each between a ``<!-- generated: NAME -->`` line and an
``<!-- end: NAME -->`` line: ``settings`` from :data:`streams.config.VARIABLES`, ``kafka``
from :data:`streams.kafka.config.SECURITY_VARIABLES`. The unit tests compare each block
with what :func:`render` makes of the code now, so a variable added, removed or changed in
the code without the page fails them. After such a change, rewrite the blocks with::

    .venv/bin/python -m tests.configuration_page
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from streams.config import VARIABLES
from streams.kafka.config import SECURITY_VARIABLES

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> dict[str, str]:
    """Block name -> its Markdown table, as the code has it now."""
    settings = ["| variable | default | meaning |", "|---|---|---|"]
    settings += [
        f"| `{name}` | `{default}` | {_cell(meaning)} |" for name, default, meaning in VARIABLES
    ]
    kafka = ["| variable | librdkafka property | meaning |", "|---|---|---|"]
    kafka += [
        f"| `{name}` | `{key}` | {_cell(meaning)} |" for name, key, meaning in SECURITY_VARIABLES
    ]
    return {"settings": "\n".join(settings), "kafka": "\n".join(kafka)}


def _block(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"(<!-- generated: {name} [^\n]*-->\n)(.*?)\n*(<!-- end: {name} -->)", re.DOTALL
    )


def blocks(text: str) -> dict[str, str]:
    """Block name -> the table the page holds (a block that is missing is absent)."""
    found = {}
    for name in render():
        match = _block(name).search(text)
        if match:
            found[name] = match.group(2)
    return found


def _replacement(table: str) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        return f"{match.group(1)}{table}\n\n{match.group(3)}"

    return replace


def rewrite(text: str) -> str:
    """The page with every generated block replaced by what the code has now."""
    for name, table in render().items():
        text, n = _block(name).subn(_replacement(table), text)
        if n != 1:
            raise SystemExit(f"{PAGE}: no generated block {name!r}")
    return text


if __name__ == "__main__":
    PAGE.write_text(rewrite(PAGE.read_text()))
    print(f"rewrote the generated tables of {PAGE}")
