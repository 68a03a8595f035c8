"""Pure normalisation of the identities keel joins on (docs/contract.md §4).

Departments type e-mails and phone numbers their own way; keel compares them only in the
normalised form below, so ``" Ann@Example.COM"`` from the shop and ``"ann@example.com"`` from
the contact centre name the same customer.
"""

from __future__ import annotations

import re

_NOT_DIGITS = re.compile(r"[^0-9]+")


def normalize_email(s: str | None) -> str | None:
    """Trimmed and lower-cased e-mail; None when absent or blank.

    >>> normalize_email("  Ann@Example.COM ")
    'ann@example.com'
    """
    if s is None:
        return None
    email = s.strip().lower()
    return email or None


def normalize_phone(s: str | None) -> str | None:
    """Digits only, keeping one leading ``+``; None when there are no digits.

    >>> normalize_phone(" +49 (170) 123-45 ")
    '+4917012345'
    """
    if s is None:
        return None
    digits = _NOT_DIGITS.sub("", s)
    if not digits:
        return None
    return "+" + digits if s.lstrip().startswith("+") else digits
