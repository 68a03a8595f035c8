"""The customer directory's rules: how a customer is found the way a caller names them.

A caller says "José Müller", "jose muller", part of an e-mail, a phone number in whatever
format they know it ("030 7624039", "0049 30 7624039", "+49 30 7624039") or an order id in
any case. The directory (a PostgreSQL table fed from customer-state.v1 by
connectors/sinks/directory.py, searched by streams/api/directory.py) keeps each customer's
keys in one folded form, and a query is folded the same way, so both sides agree:

- names and e-mails: Unicode-decomposed, accents dropped, case-folded, blanks collapsed
  (:func:`fold`);
- phones: E.164 (``+49307624039``) through Google's libphonenumber rules (the
  ``phonenumbers`` package), a number without a country code read in the configured default
  region (``KEEL_PHONE_REGION``); a number it cannot parse keeps its digits;
- order ids: case-folded.

Pure: no I/O, no clock.

    >>> fold("  José   MÜLLER ")
    'jose muller'
    >>> phone_key("030 7624039", "DE"), phone_key("0049 30 7624039", "DE")
    ('+49307624039', '+49307624039')
    >>> phone_key("+49 30 7624039", "US")
    '+49307624039'
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import phonenumbers

from streams.errors import KeelError

__all__ = ["Entry", "Query", "entry", "fold", "phone_key", "query"]

_BLANKS = re.compile(r"\s+")
_NOT_DIGIT = re.compile(r"\D")
_PHONE_LIKE = re.compile(r"^\+?[\d\s().\-/]+$")


def fold(text: str) -> str:
    """``text`` as the directory compares it: no accents, case-folded, single blanks."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _BLANKS.sub(" ", bare.casefold()).strip()


def phone_key(raw: str, region: str) -> str:
    """E.164 of ``raw`` (a number without a country code is read in ``region``), else its
    digits (with a leading ``+`` if it had one): never an error, a directory must take
    whatever a department recorded."""
    text = raw.strip()
    if text.startswith("00"):  # the international prefix most of the world dials
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else region.upper())
    except phonenumbers.NumberParseException:
        number = None
    if number is not None and phonenumbers.is_possible_number(number):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    digits = _NOT_DIGIT.sub("", text)
    return ("+" + digits) if text.startswith("+") else digits


@dataclass(frozen=True)
class Entry:
    """One customer's row of the directory."""

    customer_id: str
    name: str
    name_key: str
    emails: tuple[str, ...]
    phones: tuple[str, ...]
    order_ids: tuple[str, ...]
    updated_at: str | None
    version: int

    @property
    def search_text(self) -> str:
        """Every key in one folded string, for one trigram index (names, e-mails, phones,
        order ids, the customer id)."""
        keys = [fold(self.customer_id), self.name_key, *self.emails, *self.phones, *self.order_ids]
        return " ".join(k for k in keys if k)


def entry(state: dict[str, Any], region: str) -> Entry:
    """The directory row of a CustomerState (the query API's JSON form)."""
    return Entry(
        customer_id=state["customer_id"],
        name=state.get("name") or "",
        name_key=fold(state.get("name") or ""),
        emails=tuple(sorted({fold(e) for e in state.get("emails") or []})),
        phones=tuple(sorted({phone_key(p, region) for p in state.get("phones") or []})),
        order_ids=tuple(sorted({o["order_id"].casefold() for o in state.get("orders") or []})),
        updated_at=state.get("updated_at"),
        version=int(state.get("version") or 0),
    )


@dataclass(frozen=True)
class Query:
    """A caller's words, folded for each kind of key they may be.

    ``words``: folded words that must each occur in the row's search text (a partial name,
    a partial e-mail, an order id in any case); ``phone``: the E.164 form when the words look
    like a phone number, matched exactly against the row's phones and, by its digits, as a
    part of one; ``exact``: the folded whole, which ranks an exact id, e-mail or order id first.
    """

    words: tuple[str, ...]
    phone: str | None
    phone_digits: str | None
    exact: str


class QueryError(KeelError, ValueError):
    """A search that cannot find anything useful (empty, or too short to be specific)."""


MIN_CHARS = 2


def query(text: str, region: str) -> Query:
    """The folded query of what a desk agent typed; :class:`QueryError` if it says nothing."""
    folded = fold(text)
    if len(folded.replace(" ", "")) < MIN_CHARS:
        raise QueryError(f"type at least {MIN_CHARS} letters or digits")
    phone = digits = None
    if _PHONE_LIKE.match(text.strip()) and len(_NOT_DIGIT.sub("", text)) >= 4:
        phone = phone_key(text, region)
        digits = _NOT_DIGIT.sub("", text).lstrip("0") or None
    words = tuple(folded.split(" ")) if phone is None else ()
    return Query(words=words, phone=phone, phone_digits=digits, exact=folded)
