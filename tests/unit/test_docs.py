"""The docs hold together: every relative link resolves, and the contract names what the code
serves.

- Links: every relative link and image of README.md and docs/**/*.md points at a file of the
  repository, and a ``#fragment`` at a heading of that file (GitHub's anchors). Links inside
  code are not links.
- Contract coverage: docs/contract.md names every topic the worker declares or creates, every
  schema file, every HTTP route the worker registers and the HTTP ingest serves, and every
  signal type. Names are enough; what they mean is the page's job.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CONTRACT = DOCS / "contract.md"
PAGES = sorted([ROOT / "README.md", *DOCS.rglob("*.md")])

# ------------------------------------------------------------------------------ Markdown

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_REF = re.compile(r"<(?:img|a)\s[^>]*?(?:src|href)=\"([^\"]+)\"", re.IGNORECASE)
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of every line outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def links(text: str) -> Iterator[tuple[int, str]]:
    """(line number, target) of every Markdown link, image and HTML src/href outside code."""
    for number, line in prose_lines(text):
        line = INLINE_CODE.sub("", line)
        for pattern in (LINK, HTML_REF):
            for match in pattern.finditer(line):
                yield number, match.group(1)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: the text as shown, lower case, punctuation dropped,
    spaces as hyphens (``Stream benchmarks (`make bench`)`` -> ``stream-benchmarks-make-bench``)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor GitHub makes for the headings of ``path`` (repeats get -1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(path.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(page: Path) -> list[str]:
    """What is wrong with the relative links of one page, one line each."""
    problems = []
    for number, target in links(page.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue  # http:, https:, mailto: — not the repository's
        where = f"{page.relative_to(ROOT)}:{number}: {target}"
        path_part, _, fragment = target.partition("#")
        file = (page.parent / path_part).resolve() if path_part else page
        if ROOT not in file.parents and file != ROOT:
            problems.append(f"{where} points outside the repository")
        elif not file.exists():
            problems.append(f"{where}: no such file")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            problems.append(f"{where}: no heading with that anchor in {file.name}")
    return problems


def test_the_pages_are_found() -> None:
    names = {str(p.relative_to(ROOT)) for p in PAGES}
    assert {"README.md", "docs/README.md", "docs/contract.md", "docs/architecture.md"} <= names
    assert any(name.startswith("docs/connectors/") for name in names)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_every_page_is_linked_from_the_docs_index_or_another_page() -> None:
    linked = set()
    for page in PAGES:
        for _, target in links(page.read_text()):
            path_part = target.partition("#")[0]
            if path_part and not re.match(r"^[a-z][a-z0-9+.-]*:", path_part):
                linked.add((page.parent / path_part).resolve())
    orphans = [str(p.relative_to(ROOT)) for p in PAGES if p.name != "README.md" and p not in linked]
    assert orphans == []


def test_link_checks_see_what_they_should() -> None:
    """The checker itself, on text it must judge right."""
    text = "\n".join(
        [
            "# Stream benchmarks (`make bench`)",
            'see [a](b.md#c), ![i](s.png) and <img src="t.png">, `[not](a-link.md)`',
            "```",
            "# not a heading, [not](a-link.md)",
            "```",
        ]
    )
    assert [t for _, t in links(text)] == ["b.md#c", "s.png", "t.png"]
    assert slug("Stream benchmarks (`make bench`)") == "stream-benchmarks-make-bench"
    assert slug("5. CustomerState (topic value and API JSON)") == (
        "5-customerstate-topic-value-and-api-json"
    )
    assert slug("The board: `/desk/voice`") == "the-board-deskvoice"


# ------------------------------------------------------------------------- the contract


def named(name: str, text: str) -> bool:
    """``name`` occurs in ``text`` as a whole name, not inside a longer one."""
    pattern = rf"(?<![\w./{{}}-]){re.escape(name)}(?![\w/{{}}.-]*[\w/{{}}])"
    return re.search(pattern, text) is not None


def contract() -> str:
    return CONTRACT.read_text()


def topic_names() -> set[str]:
    """Every topic the worker declares (streams/kafka/topics.py) or creates (the admin)."""
    from streams.config import Settings
    from streams.kafka import topics
    from streams.kafka.admin import topic_specs

    names = set(topic_specs(Settings.from_env({})))
    values: list[Any] = list(vars(topics).values())
    for value in values:
        if isinstance(value, dict):
            values.extend(value.values())
        elif hasattr(value, "topics") and isinstance(value.topics, tuple):
            names.update(value.topics)
    return names


def schema_names() -> set[str]:
    return {path.stem for path in (ROOT / "schemas").glob("*.avsc")}


def worker_paths() -> set[str]:
    """Every route the worker's web server registers (each API module registers its own)."""
    import streams.api as api
    from streams.app import app

    for module in pkgutil.iter_modules(api.__path__):
        importlib.import_module(f"streams.api.{module.name}")
    web_app: Any = app.web.web_app  # type: ignore[attr-defined]  # faust's aiohttp Web
    return {route.resource.canonical for route in web_app.router.routes() if route.resource}


def ingest_paths() -> set[str]:
    """The HTTP ingest connector's routes, with ``{kind}`` as the three department paths."""
    from connectors.settings import ConnectorSettings
    from connectors.sources.http_ingest import Ingest

    settings = ConnectorSettings.from_env({})
    ingest = Ingest(settings, publisher=None)  # type: ignore[arg-type]  # routes only
    paths: set[str] = set()
    for route in ingest.app().router.routes():
        if route.resource is None:
            continue
        canonical = route.resource.canonical
        if "{kind}" in canonical:
            paths.update(canonical.replace("{kind}", k.path) for k in settings.inputs())
        else:
            paths.add(canonical)
    return paths


def signal_types() -> set[str]:
    from streams.domain.signals import SIGNAL_TYPES

    return set(SIGNAL_TYPES)


COVERED = {
    "topic": topic_names,
    "schema": schema_names,
    "worker route": worker_paths,
    "ingest route": ingest_paths,
    "signal type": signal_types,
}


@pytest.mark.parametrize("what", COVERED)
def test_the_contract_names_every(what: str) -> None:
    names = COVERED[what]()
    assert names, f"found no {what}s to look for"
    text = contract()
    assert sorted(n for n in names if not named(n, text)) == []


def test_the_code_offers_what_the_coverage_test_expects() -> None:
    """A guard on the collectors above: each finds what it is meant to."""
    assert {"orders.v1", "keel-customer-events", "keel-order-refs", "voice.v1"} <= topic_names()
    assert "keel-customers-changelog" in topic_names()
    assert {"OrderEvent.v1", "CustomerState.v2"} <= schema_names()
    assert {"/customers/{customer_id}", "/unmatched", "/voice/announcements"} <= worker_paths()
    assert {"/events/orders", "/events/contacts", "/openapi.json"} <= ingest_paths()
    assert {"DUPLICATE_ORDER", "CUSTOMER_TOLD"} <= signal_types()
    assert named("/customers", "`GET /customers?email=…`")
    assert not named("/customers", "`GET /customers/{customer_id}`")
    assert not named("/desk", "`GET /desk/`") and named("/desk/", "`GET /desk/`")
    assert not named("orders.v1", "`x-orders.v1`")
