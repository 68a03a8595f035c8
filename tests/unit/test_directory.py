"""The customer directory's folding rules (streams/domain/directory.py) and its SQL."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.api.directory import _like, sql
from streams.domain.directory import QueryError, entry, fold, phone_key, query


def test_names_and_emails_fold_without_accents_or_case() -> None:
    assert fold("José Müller") == fold("jose muller") == fold("JOSE  MULLER") == "jose muller"
    assert fold("Ægir Øster-Ångström") == "ægir øster-angstrom"  # letters, not marks, stay
    assert fold("Grace.Hopper@Example.COM") == "grace.hopper@example.com"


@pytest.mark.parametrize(
    "raw", ["030 7624039", "0049 30 7624039", "+49 30 7624039", "+49 (0)30 762-4039", "030/7624039"]
)
def test_one_german_number_in_every_format_callers_use_is_one_key(raw: str) -> None:
    assert phone_key(raw, "DE") == "+49307624039"


def test_a_number_with_its_country_code_ignores_the_default_region() -> None:
    assert phone_key("+1 206 555 0147", "DE") == "+12065550147"
    assert phone_key("(206) 555-0147", "US") == "+12065550147"


def test_what_libphonenumber_cannot_read_keeps_its_digits() -> None:
    assert phone_key("unknown", "DE") == ""
    assert phone_key("+12", "DE") == "+12"


@given(st.text(max_size=40), st.sampled_from(["DE", "US", "GB", "FR"]))
def test_phone_key_never_raises_and_is_stable(raw: str, region: str) -> None:
    key = phone_key(raw, region)
    assert phone_key(key, region) == key or not key.startswith("+")


def test_a_row_holds_every_key_folded() -> None:
    state = {"customer_id": "c-42", "name": "José Müller", "emails": ["Jose.M@Example.com"],
             "phones": ["030 7624039"], "orders": [{"order_id": "O-1188"}],
             "updated_at": "2026-12-01T10:00:00.000Z", "version": 7}  # fmt: skip
    row = entry(state, "DE")
    assert (row.name_key, row.emails, row.phones, row.order_ids) == (
        "jose muller", ("jose.m@example.com",), ("+49307624039",), ("o-1188",))  # fmt: skip
    for part in ("c-42", "jose muller", "jose.m@example", "+49307624039", "o-1188"):
        assert part in row.search_text


def test_a_row_of_a_customer_without_name_email_or_phone() -> None:
    row = entry({"customer_id": "c-1", "name": None, "emails": [], "phones": [], "orders": [],
                 "updated_at": None, "version": 1}, "DE")  # fmt: skip
    assert row.search_text == "c-1" and row.name == ""


def test_queries_say_what_they_look_for() -> None:
    assert query("Jose  MULLER", "DE").words == ("jose", "muller")
    phone = query("030 7624039", "DE")
    assert (phone.phone, phone.phone_digits, phone.words) == ("+49307624039", "307624039", ())
    assert query("O-1188", "DE").exact == "o-1188"
    with pytest.raises(QueryError):
        query(" x ", "DE")


def test_the_sql_matches_every_word_and_escapes_wildcards() -> None:
    text, params = sql(query("jo 50%_off", "DE"), 10)
    assert "LIKE ALL" in text and params["patterns"] == ["%jo%", "%50\\%\\_off%"]
    text, params = sql(query("+49 30 7624039", "DE"), 5)
    assert "ANY(phones)" in text and "LIKE ALL" not in text and params["limit"] == 5
    assert _like("a\\b") == "%a\\\\b%"
