"""Every unit test starts with the join's read cache empty (streams/worker/read_cache.py): it
lives as long as the process, like a worker's, so one test's reads must not answer another's."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _empty_read_cache() -> Iterator[None]:
    checkpoint = sys.modules.get("streams.worker.checkpoint")
    if checkpoint is not None:
        checkpoint.read_cache.clear()
    yield
