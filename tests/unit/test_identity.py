"""How keel normalises the e-mails and phones it joins on (docs/contract.md §4)."""

from __future__ import annotations

import pytest

from streams.domain.identity import normalize_email, normalize_phone


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("ann@example.com", "ann@example.com"),
        ("  Ann@Example.COM\t", "ann@example.com"),
        ("   ", None),
        ("", None),
        (None, None),
    ],
)
def test_normalize_email(raw: str | None, normal: str | None) -> None:
    assert normalize_email(raw) == normal


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("+49 (170) 123-45", "+4917012345"),
        ("  +49 170 12345 ", "+4917012345"),
        ("0170/12345", "017012345"),
        ("49+170", "49170"),  # a '+' counts only in front
        ("++49 170", "+49170"),
        ("n/a", None),
        ("+", None),
        ("", None),
        (None, None),
    ],
)
def test_normalize_phone(raw: str | None, normal: str | None) -> None:
    assert normalize_phone(raw) == normal
