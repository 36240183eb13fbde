"""Contact value rules: what a stored contact may hold, and how input is normalised.

Every function here is pure (lookup tables come from installed packages) and raises
``ContactValueError`` naming the field and what a valid value looks like.
"""

from __future__ import annotations

import re
import unicodedata
import zoneinfo
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import NamedTuple

import langcodes
import pycountry
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import DOT_ATOM_TEXT as _DOT_ATOM

from outreach.domain.errors import ContactValueError

KINDS = (
    "industry",
    "partner",
    "government",
    "civil-society",
    "media",
    "academia",
    "un-agency",
    "youth",
    "other",
)
STATUSES = ("active", "unsubscribed", "bounced", "complained")
# Fields a contact has besides its extra attributes, in display and export order.
FIELDS = (
    "email",
    "name",
    "organization",
    "kind",
    "sector",
    "country",
    "language",
    "timezone",
    "x_handle",
    "tags",
    "status",
)
MAX_FIELD_LENGTH = 1000
_MAX_ADDRESS = 254  # RFC 5321 path limit, as email-validator applies it

_KIND_SYNONYMS = {
    "industry member": "industry",
    "private sector": "industry",
    "private-sector": "industry",
    "company": "industry",
    "business": "industry",
    "corporate": "industry",
    "sector member": "industry",
    "ngo": "civil-society",
    "civil society": "civil-society",
    "civil society organisation": "civil-society",
    "civil society organization": "civil-society",
    "cso": "civil-society",
    "press": "media",
    "journalist": "media",
    "news": "media",
    "un": "un-agency",
    "un agency": "un-agency",
    "un-agencies": "un-agency",
    "united nations": "un-agency",
    "gov": "government",
    "govt": "government",
    "ministry": "government",
    "regulator": "government",
    "university": "academia",
    "academic": "academia",
    "research": "academia",
    "young people": "youth",
}
_STATUS_SYNONYMS = {
    "subscribed": "active",
    "opted in": "active",
    "opt-in": "active",
    "unsubscribe": "unsubscribed",
    "opted out": "unsubscribed",
    "opt-out": "unsubscribed",
    "bounce": "bounced",
    "hard bounce": "bounced",
    "complaint": "complained",
    "spam": "complained",
}
# Country names in everyday use that ISO 3166 (as pycountry spells it) does not carry.
_COUNTRY_ALIASES = {
    "turkey": "TR",
    "russia": "RU",
    "micronesia": "FM",
    "kosovo": "XK",
    "ivory coast": "CI",
    "cote d'ivoire": "CI",
    "macedonia": "MK",
    "swaziland": "SZ",
    "cape verde": "CV",
    "uk": "GB",
    "great britain": "GB",
    "england": "GB",
    "palestine": "PS",
    "vatican": "VA",
    "brunei": "BN",
    "dr congo": "CD",
    "drc": "CD",
    "democratic republic of the congo": "CD",
    "republic of the congo": "CG",
    "burma": "MM",
    "holland": "NL",
    "the netherlands": "NL",
    "east timor": "TL",
    "south sudan": "SS",
}

# C0/C1 controls (CR, LF, TAB, NUL...), line/paragraph separators and the
# bidirectional overrides and isolates that can disguise text.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_X_HANDLE = re.compile(r"^[A-Za-z0-9_]{1,15}$")
_X_URL = re.compile(r"^(?:https?://)?(?:www\.)?(?:x|twitter)\.com/([^/?#]+)/?$", re.IGNORECASE)
_TAG = re.compile(r"^[\w][\w.:/+-]{0,63}$")
_TAG_SPLIT = re.compile(r"[,;|]")
_ATTR_KEY = re.compile(r"[^a-z0-9]+")


class ContactRecord(NamedTuple):
    """A normalised contact as read from input. ``None`` means "not given".

    A NamedTuple rather than a dataclass: imports build, pickle and unpickle
    millions of them, and a tuple is several times cheaper at each.
    """

    email: str
    name: str | None = None
    organization: str | None = None
    kind: str | None = None
    sector: str | None = None
    country: str | None = None
    language: str | None = None
    timezone: str | None = None
    x_handle: str | None = None
    status: str | None = None
    tags: tuple[str, ...] = ()
    attrs: dict[str, str] = {}  # noqa: RUF012 (never mutated: records are values)


def escape_controls(text: str) -> str:
    """``text`` with every character no field may hold (the control characters that
    ``check_text`` refuses) written as its escape, such as ``\\x1b``."""
    return _CONTROL.sub(_escaped, text) if not text.isprintable() else text


def _escaped(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def email_key(email: str) -> str:
    """The case-insensitive identity of an address."""
    return email.casefold()


def check_text(field_name: str, value: str) -> str:
    """Reject control characters and absurd lengths; return the value NFC-normalised."""
    bad = _CONTROL.search(value)
    if bad:
        char = bad.group()
        raise ContactValueError(
            field_name,
            f"contains the control character U+{ord(char):04X} at position {bad.start() + 1}; "
            "remove line breaks and invisible characters from the cell",
        )
    if len(value) > MAX_FIELD_LENGTH:
        raise ContactValueError(
            field_name, f"is {len(value)} characters long; at most {MAX_FIELD_LENGTH} are allowed"
        )
    return unicodedata.normalize("NFC", value.strip())


def normalize_email(value: str) -> str:
    value = check_text("email", value)
    if not value:
        raise ContactValueError("email", "is empty; every contact needs an email address")
    return _validated_email(value)


def _validated_email(value: str) -> str:
    """email-validator's verdict, with its work on the domain done once per domain.

    Imports repeat domains thousands of times, and the domain (IDNA/UTS-46) checks
    are most of the library's cost. An address with a plain ASCII dot-atom local part
    (the library's own regular expression, which it accepts as-is) and an ASCII
    domain is assembled from the cached verdict on its domain; any other address,
    and every invalid one, goes through the library whole, so messages and rules
    are the library's. tests/test_contact_rules.py checks that both paths agree.
    """
    local, at, domain = value.rpartition("@")
    if at and domain.isascii() and len(value) <= _MAX_ADDRESS and _DOT_ATOM.match(local):
        normalized_domain = _domain_verdict(domain)
        if normalized_domain == domain:
            return value
        if normalized_domain is not None:
            return f"{local}@{normalized_domain}"
    return _library_email(value)


def _library_email(value: str) -> str:
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ContactValueError("email", f"{value!r} is not a valid address: {exc}") from None


@lru_cache(maxsize=65536)
def _domain_verdict(domain: str) -> str | None:
    """The library's normalised form of ``domain``, or None when it refuses it."""
    try:
        return validate_email(f"a@{domain}", check_deliverability=False).domain
    except EmailNotValidError:
        return None


@lru_cache(maxsize=1024)
def normalize_kind(value: str) -> str:
    key = " ".join(value.strip().lower().replace("_", " ").split())
    if key.replace(" ", "-") in KINDS:
        return key.replace(" ", "-")
    if key in _KIND_SYNONYMS:
        return _KIND_SYNONYMS[key]
    raise ContactValueError("kind", f"unknown kind {value!r}; use one of: {', '.join(KINDS)}")


@lru_cache(maxsize=256)
def normalize_status(value: str) -> str:
    key = " ".join(value.strip().lower().replace("_", " ").split())
    if key in STATUSES:
        return key
    if key in _STATUS_SYNONYMS:
        return _STATUS_SYNONYMS[key]
    raise ContactValueError(
        "status", f"unknown status {value!r}; use one of: {', '.join(STATUSES)}"
    )


@lru_cache(maxsize=4096)
def normalize_country(value: str) -> str:
    """ISO 3166-1 alpha-2 from a code (FJ, FJI) or an English name (Fiji)."""
    text = value.strip()
    folded = _fold(text)
    if folded in _COUNTRY_ALIASES:
        return _COUNTRY_ALIASES[folded]
    try:
        return pycountry.countries.lookup(text).alpha_2
    except LookupError:
        pass
    for country in pycountry.countries:
        names = (
            country.name,
            getattr(country, "common_name", ""),
            getattr(country, "official_name", ""),
        )
        if folded in {_fold(n) for n in names if n}:
            return country.alpha_2
    raise ContactValueError(
        "country",
        f"unknown country {value!r}; use an ISO 3166-1 code such as FJ or TR, or an English name",
    )


@lru_cache(maxsize=1)
def _timezones() -> dict[str, str]:
    return {name.casefold(): name for name in zoneinfo.available_timezones()}


@lru_cache(maxsize=1)
def _country_zones() -> dict[str, tuple[str, ...]]:
    """Zones per country from the IANA ``zone.tab`` shipped by the tzdata package."""
    text = resources.files("tzdata").joinpath("zoneinfo", "zone.tab").read_text("utf-8")
    zones: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            code, _coords, zone = line.split("\t")[:3]
            zones.setdefault(code, []).append(zone)
    return {code: tuple(z) for code, z in zones.items()}


def country_timezones(country: str) -> tuple[str, ...]:
    return _country_zones().get(country, ())


@lru_cache(maxsize=4096)
def normalize_timezone(value: str) -> str:
    name = _timezones().get(value.strip().casefold())
    if name is None:
        raise ContactValueError(
            "timezone",
            f"unknown time zone {value!r}; use an IANA name such as Pacific/Fiji or Europe/Istanbul",
        )
    return name


def default_timezone(country: str | None) -> str | None:
    """The country's zone when it has exactly one, else ``None``."""
    zones = country_timezones(country) if country else ()
    return zones[0] if len(zones) == 1 else None


@lru_cache(maxsize=4096)
def normalize_language(value: str) -> str:
    text = value.strip().replace("_", "-")
    try:
        if langcodes.tag_is_valid(text):
            return langcodes.standardize_tag(text)
    except ValueError:
        pass
    raise ContactValueError(
        "language",
        f"{value!r} is not a BCP 47 language tag; use a code such as en, fr, fr-CA or sm",
    )


def normalize_x_handle(value: str) -> str:
    text = value.strip()
    match = _X_URL.match(text)
    if match:
        text = match.group(1)
    text = text.removeprefix("@")
    if not _X_HANDLE.match(text):
        raise ContactValueError(
            "x_handle",
            f"{value!r} is not an X handle (1-15 letters, digits or _, with or without @)",
        )
    return text


def normalize_tag(value: str) -> str:
    tag = "-".join(value.strip().lower().split())
    if not _TAG.match(tag):
        raise ContactValueError(
            "tags", f"{value!r} is not a tag; use letters, digits and . : / + - (at most 64)"
        )
    return tag


@lru_cache(maxsize=16384)
def normalize_tags(value: str) -> tuple[str, ...]:
    tags = (normalize_tag(t) for t in _TAG_SPLIT.split(value) if t.strip())
    return tuple(sorted(set(tags)))


def attr_key(column: str) -> str:
    """The key an extra CSV column is stored under: ``Membership Type`` -> ``membership_type``."""
    text = column.strip()
    if text.lower().startswith("attr."):
        text = text[5:]
    return _ATTR_KEY.sub("_", _fold(text)).strip("_")


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.strip().lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).replace("’", "'")


@dataclass(frozen=True, slots=True)
class Contact:
    """A contact as stored."""

    id: int
    email: str
    name: str | None
    organization: str | None
    kind: str
    sector: str | None
    country: str | None
    language: str | None
    timezone: str | None
    x_handle: str | None
    status: str
    tags: tuple[str, ...]
    attrs: dict[str, str]
    created_at: object
    updated_at: object

    def as_row(self) -> dict[str, str]:
        """Text values by field (tags joined with ', '), for display and CSV export."""
        row = {f: "" if getattr(self, f) is None else str(getattr(self, f)) for f in FIELDS}
        row["tags"] = ", ".join(self.tags)
        return row
