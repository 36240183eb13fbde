"""Contact value rules, and the import's fast email path against email-validator itself."""

from __future__ import annotations

import re

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings
from hypothesis import strategies as st

from outreach.domain import contact as rules
from outreach.domain.errors import ContactValueError
from outreach.domain.normalizer import normalize_contact
from outreach.domain.suppression import suppression_hash


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Fiji", "FJ"), ("fj", "FJ"), ("FJI", "FJ"), ("Türkiye", "TR"), ("Turkey", "TR"),
        ("Samoa", "WS"), ("Cook Islands", "CK"), ("Cote d'Ivoire", "CI"), ("Russia", "RU"),
    ],
)  # fmt: skip
def test_countries_by_code_or_name(raw: str, expected: str) -> None:
    assert rules.normalize_country(raw) == expected


def test_timezone_defaults_only_for_single_zone_countries() -> None:
    assert rules.default_timezone("FJ") == "Pacific/Fiji"
    assert rules.default_timezone("TR") == "Europe/Istanbul"
    assert rules.default_timezone("KI") is None  # Tarawa, Kanton, Kiritimati
    assert rules.default_timezone("US") is None
    assert rules.normalize_timezone("pacific/tongatapu") == "Pacific/Tongatapu"
    with pytest.raises(ContactValueError, match="unknown time zone"):
        rules.normalize_timezone("Pacific/Atlantis")


def test_languages_handles_kinds_tags() -> None:
    assert rules.normalize_language("FR_ca") == "fr-CA"
    assert rules.normalize_language("sm") == "sm"
    with pytest.raises(ContactValueError, match="BCP 47"):
        rules.normalize_language("french!")
    assert rules.normalize_x_handle("@ITU") == "ITU"
    assert rules.normalize_x_handle("https://twitter.com/unicef") == "unicef"
    with pytest.raises(ContactValueError, match="not an X handle"):
        rules.normalize_x_handle("@way_too_long_for_x_handle")
    assert rules.normalize_kind("UN Agency") == "un-agency"
    assert rules.normalize_kind("Private sector") == "industry"
    with pytest.raises(ContactValueError, match="use one of: industry, partner"):
        rules.normalize_kind("alien")
    assert rules.normalize_tags("Pacific Rollout; b|a, a") == ("a", "b", "pacific-rollout")


@pytest.mark.parametrize(
    ("value", "char"),
    [("a\rb", "U+000D"), ("a\nb", "U+000A"), ("a\x00b", "U+0000"), ("a\tb", "U+0009"),
     ("evil\u202etxt", "U+202E"), ("x\u2028y", "U+2028"), ("\x1b[31mred", "U+001B")],
)  # fmt: skip
def test_hostile_values_are_refused_naming_field_and_character(value: str, char: str) -> None:
    with pytest.raises(ContactValueError) as info:
        normalize_contact({"email": "a@example.org", "organization": value})
    assert str(info.value).startswith(f"organization: contains the control character {char}")
    with pytest.raises(
        ContactValueError, match=re.escape(f"attr.notes: contains the control character {char}")
    ):
        normalize_contact({"email": "a@example.org"}, {"notes": value})


def test_every_refused_character_is_unprintable() -> None:
    """The row screen asks str.isprintable() first and runs the control-character
    expression only when it fails: that is sound only if the expression matches
    nothing printable. A no-break space is unprintable but allowed."""
    assert not [c for c in map(chr, range(0x110000)) if rules._CONTROL.match(c) and c.isprintable()]
    record = normalize_contact({"email": "a@example.org", "name": "Ana\u00a0Tui"})
    assert record.name == "Ana\u00a0Tui"


def test_a_field_name_that_is_not_a_field_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="no contact field 'emial'"):
        normalize_contact({"emial": "a@example.org"})


def test_overlong_values_and_nfc() -> None:
    with pytest.raises(ContactValueError, match="at most 1000"):
        normalize_contact({"email": "a@example.org", "name": "x" * 1001})
    decomposed = "Cafe\u0301"
    record = normalize_contact(
        {"email": "a@example.org", "name": decomposed}, {"city": decomposed}
    )
    assert record.name == "Café" and record.attrs == {"city": "Café"}


def test_suppression_hash_ignores_case() -> None:
    assert suppression_hash("Ana@Example.org") == suppression_hash("ana@example.ORG")
    assert "ana" not in suppression_hash("ana@example.org")


# -- the fast path must agree with the library ---------------------------------------

_ATEXT = "abcxyzABCXYZ0189!#$%&'*+-/=?^_`{|}~"
_local = st.text(alphabet=_ATEXT + ".", min_size=0, max_size=70)
_domain = st.one_of(
    st.sampled_from([
        "example.org", "EXAMPLE.ORG", "mail.example.com", "example", "localhost", "example.test",
        "-bad.example.org", "bad-.example.org", "exa_mple.org", "example..org", ".example.org",
        "example.org.", "123.456", "x" * 64 + ".org", "a.b.c.d.example.net", "xn--bcher-kva.example",
        "example.invalid", "[127.0.0.1]", "münchen.example", "EXAMPLE.com", "ex ample.org",
    ]),
    st.from_regex(r"[a-zA-Z0-9-]{1,20}(\.[a-zA-Z0-9-]{1,20}){0,3}", fullmatch=True),
)  # fmt: skip


def _library(address: str) -> str | None:
    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError:
        return None


def _ours(address: str) -> str | None:
    try:
        return rules.normalize_email(address)
    except ContactValueError:
        return None


@settings(max_examples=1500, deadline=None)
@given(_local, _domain)
@example("a" * 64, "example.org")
@example("a" * 65, "example.org")
@example("a" * 64, ("b" * 60 + ".") * 3 + "org")
@example("first.last", "EXAMPLE.ORG")
@example("first..last", "example.org")
def test_fast_email_path_agrees_with_email_validator(local: str, domain: str) -> None:
    address = f"{local}@{domain}"
    assert _ours(address) == _library(address)
