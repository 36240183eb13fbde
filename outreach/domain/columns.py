"""Which CSV column feeds which contact field: header synonyms and ``--map`` overrides."""

from __future__ import annotations

import re
from dataclasses import dataclass

from outreach.domain.contact import FIELDS, attr_key
from outreach.domain.errors import InputFileError, shown
from outreach.domain.normalizer import IGNORE, NAME_PARTS

_SYNONYMS = {
    "email": [
        "email",
        "e mail",
        "email address",
        "e mail address",
        "mail",
        "emailaddress",
        "email addr",
        "courriel",
        "work email",
    ],
    "name": ["name", "full name", "fullname", "contact name", "contact", "person", "nom"],
    "first_name": ["first name", "firstname", "given name", "forename", "prenom", "prénom"],
    "last_name": ["last name", "lastname", "surname", "family name"],
    "organization": [
        "organization",
        "organisation",
        "org",
        "company",
        "company name",
        "institution",
        "employer",
        "organization name",
        "organisation name",
        "member",
        "member name",
        "entity",
        "outlet",
        "media outlet",
        "publication",
        "ministry",
        "agency",
    ],
    "kind": [
        "kind",
        "type",
        "category",
        "stakeholder type",
        "contact type",
        "stakeholder",
        "stakeholder group",
        "group type",
    ],
    "sector": ["sector", "industry", "industry sector", "business sector"],
    "country": ["country", "country code", "nation", "country region", "country name", "pays"],
    "language": ["language", "lang", "locale", "preferred language", "langue"],
    "timezone": ["timezone", "time zone", "tz", "zone"],
    "x_handle": ["x", "x handle", "twitter", "twitter handle", "x twitter", "twitter x", "handle"],
    "tags": ["tags", "tag", "labels", "label"],
    "status": ["status", "subscription status", "subscription"],
}
_LOOKUP = {syn: target for target, syns in _SYNONYMS.items() for syn in syns}
TARGETS = (*FIELDS, *NAME_PARTS)


def header_key(header: str) -> str:
    return " ".join(re.sub(r"[\s_\-./]+", " ", header.strip().lstrip("\ufeff").lower()).split())


@dataclass(frozen=True, slots=True)
class ColumnMap:
    """For each column position: a field name, ``attr.KEY``, or ``ignore``."""

    headers: tuple[str, ...]
    targets: tuple[str, ...]

    def describe(self) -> list[tuple[str, str]]:
        return list(zip(self.headers, self.targets, strict=True))


def parse_overrides(specs: list[str]) -> dict[str, str]:
    """``["Member Type=kind", "Notes=ignore"]`` -> {header_key: target}."""
    out: dict[str, str] = {}
    for spec in specs:
        column, sep, target = spec.rpartition("=")
        target = target.strip().lower()
        if not sep or not column.strip():
            raise InputFileError(
                f"--map {spec!r} is not COLUMN=FIELD", hint="for example --map 'Member Type=kind'"
            )
        if target not in TARGETS and target != IGNORE and not target.startswith("attr."):
            raise InputFileError(
                f"--map {spec!r}: unknown field {target!r}",
                hint=f"use one of {', '.join(TARGETS)}, attr.NAME or ignore",
            )
        out[header_key(column)] = target
    return out


def map_columns(
    headers: list[str], overrides: dict[str, str] | None = None, *, source: str = "the file"
) -> ColumnMap:
    """Decide what each column feeds. Raises when no column holds the email, or when
    two columns would feed the same field."""
    overrides = overrides or {}
    targets: list[str] = []
    taken: dict[str, str] = {}
    for header in headers:
        key = header_key(header)
        target = overrides.get(key) or _LOOKUP.get(key)
        if target is None:
            target = f"attr.{attr_key(header)}" if attr_key(header) else IGNORE
        if target != IGNORE:
            if target in taken:
                raise InputFileError(
                    f"{source}: columns {taken[target]!r} and {header!r} both map to {target}",
                    hint=f"keep one, or pass --map '{shown(header)}=ignore' (or another field)",
                )
            taken[target] = header
        targets.append(target)
    unused = set(overrides) - {header_key(h) for h in headers}
    if unused:
        raise InputFileError(
            f"{source}: --map names columns not in the header: {', '.join(sorted(unused))}",
            hint=f"the header has: {_listed(headers)}",
        )
    if "email" not in taken:
        raise InputFileError(
            f"{source}: no email column in the header ({_listed(headers) or 'empty'})",
            hint="name the column 'email', or pass --map 'YOUR COLUMN=email'",
        )
    return ColumnMap(tuple(headers), tuple(targets))


def _listed(headers: list[str]) -> str:
    """The header's column names for a message, each escaped (``shown``)."""
    return ", ".join(shown(h) for h in headers)
