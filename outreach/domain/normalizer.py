"""The import's row normaliser: rows of text cells in one column layout turned into
contact records by the rules of ``domain.contact``, as fast as the import needs."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from operator import itemgetter

from outreach.domain.contact import (
    _CONTROL,
    FIELDS,
    MAX_FIELD_LENGTH,
    ContactRecord,
    _validated_email,
    check_text,
    default_timezone,
    normalize_country,
    normalize_kind,
    normalize_language,
    normalize_status,
    normalize_tags,
    normalize_timezone,
    normalize_x_handle,
)
from outreach.domain.errors import ContactValueError

_NORMALIZERS = {
    "email": _validated_email,
    "tags": normalize_tags,
    "kind": normalize_kind,
    "country": normalize_country,
    "language": normalize_language,
    "timezone": normalize_timezone,
    "x_handle": normalize_x_handle,
    "status": normalize_status,
}


# Fields whose values come from short code lists: rows repeat the same few
# combinations, so a row's combination is normalised once and remembered.
# (Tags are not among them: their lists vary too much to be combined with the rest.)
_CODED = ("kind", "country", "language", "timezone", "status")
_RECORD = ContactRecord._fields
_record = tuple.__new__  # ContactRecord._make without its Python frame
# The cells a RowNormalizer picks from a row, in this order, then the attributes.
_PLAIN = ("email", "tags", "name", "organization", "sector", "x_handle")
_LAYOUT = (*_CODED, *_PLAIN)
_AT_EMAIL, _AT_TAGS, _AT_NAME, _AT_ORGANIZATION, _AT_SECTOR, _AT_X_HANDLE = map(_RECORD.index, _PLAIN)
_AT_ATTRS = _RECORD.index("attrs")


@lru_cache(maxsize=8192)
def _coded(values: tuple[str, ...]) -> tuple[object, ...]:
    """A record's values with the coded fields given in ``values`` normalised (and
    the time zone a country implies), None elsewhere: the start of a record."""
    out = {}
    for name, raw in zip(_CODED, values, strict=True):
        if raw:
            out[name] = _NORMALIZERS[name](raw)
    if "timezone" not in out and "country" in out:
        zone = default_timezone(out["country"])  # type: ignore[arg-type]
        if zone:
            out["timezone"] = zone
    return tuple(out.get(name) for name in _RECORD)


# What else a CSV column may feed: parts of the name, or nothing.
NAME_PARTS = ("first_name", "last_name")
IGNORE = "ignore"
_TARGETS = {*FIELDS, *NAME_PARTS, IGNORE}


class RowNormalizer:
    """Turns rows of text cells in one column layout into records.

    ``targets`` names what each cell feeds: a field of FIELDS, ``attr.KEY``,
    ``first_name``/``last_name`` (joined into the name when no name is given) or
    ``ignore``. Blank cells are "not given"; ``default_kind`` stands in for a blank
    kind. Raises ``ContactValueError`` on the first bad value.

    The hot path of an import: the layout is worked out once, and the common row (no
    control characters, short values, ASCII) is screened once as a whole.
    """

    def __init__(self, targets: Sequence[str], default_kind: str | None = None) -> None:
        self.targets = tuple(targets)
        unknown = [t for t in self.targets if t not in _TARGETS and not t.startswith("attr.")]
        if unknown:
            raise ValueError(f"no contact field {unknown[0]!r}")
        self.default_kind = default_kind
        where = {t: i for i, t in enumerate(self.targets)}
        self.checked = [(i, t) for i, t in enumerate(self.targets) if t != IGNORE]
        self.whole = len(self.checked) == len(self.targets)  # no ignored cell
        self.attr_keys = tuple(t[5:] for t in self.targets if t.startswith("attr."))
        self.name_parts = [i for i, t in enumerate(self.targets) if t in NAME_PARTS]
        # One C call picks every cell a record needs, in _LAYOUT order; a field the
        # file lacks reads the blank cell appended to each row (index -1).
        self.pick = itemgetter(
            *(where.get(name, -1) for name in _LAYOUT),
            *(i for i, t in enumerate(self.targets) if t.startswith("attr.")),
        )

    def __call__(self, cells: Sequence[str]) -> ContactRecord:
        joined = "".join(cells) if self.whole else "".join([cells[i] for i, _ in self.checked])
        # Every character _CONTROL matches is unprintable, and isprintable() is the
        # quicker test, so the regular expression only runs on the rare row that fails it
        if (not joined.isprintable() and _CONTROL.search(joined)) or len(joined) > MAX_FIELD_LENGTH:
            for i, target in self.checked:
                check_text(target, cells[i])  # raises, naming the field
        if not joined.isascii():
            cells = [unicodedata.normalize("NFC", c) for c in cells]
        values = tuple(map(str.strip, self.pick([*cells, ""])))
        coded = values[: len(_CODED)]
        if self.default_kind and not coded[0]:
            coded = (self.default_kind, *coded[1:])
        out = list(_coded(coded))
        email, tags, name, organization, sector, x_handle = values[len(_CODED) : len(_LAYOUT)]
        if not email:
            raise ContactValueError("email", "is empty; every contact needs an email address")
        out[_AT_EMAIL] = _validated_email(email)
        out[_AT_TAGS] = normalize_tags(tags) if tags else ()
        if name:
            out[_AT_NAME] = name
        elif self.name_parts:
            out[_AT_NAME] = " ".join(p for i in self.name_parts if (p := cells[i].strip())) or None
        if organization:
            out[_AT_ORGANIZATION] = organization
        if sector:
            out[_AT_SECTOR] = sector
        if x_handle:
            out[_AT_X_HANDLE] = normalize_x_handle(x_handle)
        attrs = values[len(_LAYOUT) :]
        if all(attrs):
            out[_AT_ATTRS] = dict(zip(self.attr_keys, attrs))  # noqa: B905 (same length)
        else:
            out[_AT_ATTRS] = {k: v for k, v in zip(self.attr_keys, attrs) if v}  # noqa: B905
        return _record(ContactRecord, out)


@lru_cache(maxsize=64)
def _normalizer(targets: tuple[str, ...]) -> RowNormalizer:
    return RowNormalizer(targets)


def normalize_contact(values: dict[str, str], attrs: dict[str, str] | None = None) -> ContactRecord:
    """Build a record from raw text values keyed by field name (``tags`` included)
    and extra attributes. Blank values are "not given". Raises ``ContactValueError``
    on the first bad field."""
    attrs = attrs or {}
    targets = (*values, *(f"attr.{k}" for k in attrs))
    return _normalizer(targets)([*values.values(), *attrs.values()])
