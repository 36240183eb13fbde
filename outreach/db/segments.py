"""Segment AST -> SQL WHERE clause. Values are always bound parameters.

Every term is null-safe (a missing value is "no match", never NULL), so that
``-country:FJ`` includes contacts with no country.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, false, func, not_, or_, select, true

from outreach.db.models import contact_tags, contacts
from outreach.domain.audience import ATTR_PREFIX, And, Expr, Not, Or, Term

_EXACT = {"kind", "country", "status", "timezone"}
_TEXT = {"name": "name", "organization": "organization", "sector": "sector"}


def where(expr: Expr) -> ColumnElement[bool]:
    if isinstance(expr, And):
        return and_(true(), *(where(i) for i in expr.items)) if expr.items else true()
    if isinstance(expr, Or):
        return or_(false(), *(where(i) for i in expr.items))
    if isinstance(expr, Not):
        return not_(where(expr.expr))
    return _term(expr)


def _like_pattern(value: str) -> str:
    escaped = value.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def _text_match(column, values: tuple[str, ...]) -> ColumnElement[bool]:  # type: ignore[no-untyped-def]
    lowered = func.lower(column)
    exact = [v.lower() for v in values if "*" not in v]
    clauses = [lowered.in_(exact)] if exact else []
    clauses += [lowered.like(_like_pattern(v), escape="\\") for v in values if "*" in v]
    return and_(column.is_not(None), or_(*clauses))


def _tagged(values: tuple[str, ...] | None) -> ColumnElement[bool]:
    """Contacts with any of ``values`` as a tag (with any tag at all for None).

    ``id IN (SELECT contact_id ...)`` rather than a correlated EXISTS: SQLite then
    reads the tag's entries from the (tag, contact_id) index, where EXISTS had it
    probe the tags of every contact (on 1,000,000 contacts, 85 ms instead of 850 ms
    for a common tag, under a millisecond for a rare one). contact_id is never NULL,
    so NOT IN is safe."""
    query = select(contact_tags.c.contact_id)
    if values is not None:
        query = query.where(contact_tags.c.tag.in_(values))
    return contacts.c.id.in_(query)


def _attr(key: str):  # type: ignore[no-untyped-def]
    return contacts.c.attrs[key].as_string()


def _term(term: Term) -> ColumnElement[bool]:
    field, values = term.field, term.values
    if field in _EXACT:
        column = contacts.c[field]
        return and_(column.is_not(None), column.in_(values))
    if field in _TEXT:
        return _text_match(contacts.c[_TEXT[field]], values)
    if field == "email":
        return _text_match(contacts.c.email_key, tuple(v.casefold() for v in values))
    if field == "domain":
        return _text_match(contacts.c.email_key, tuple("*@" + v.casefold() for v in values))
    if field == "x_handle":
        return _text_match(contacts.c.x_handle, values)
    if field == "language":
        column = contacts.c.language
        return and_(
            column.is_not(None),
            or_(
                *(
                    or_(column == v, func.lower(column).like(_like_pattern(v) + "-%", escape="\\"))
                    for v in values
                )
            ),
        )
    if field == "tag":
        return _tagged(values)
    if field == "has":
        clauses = []
        for name in values:
            if name == "tag":
                clauses.append(_tagged(None))
            elif name.startswith(ATTR_PREFIX):
                clauses.append(_attr(name[len(ATTR_PREFIX) :]).is_not(None))
            else:
                column = contacts.c[name]
                clauses.append(and_(column.is_not(None), column != ""))
        return or_(*clauses)
    if field.startswith(ATTR_PREFIX):
        return _text_match(_attr(field[len(ATTR_PREFIX) :]), values)
    raise ValueError(f"no SQL for field {field!r}")  # the parser admits no other field
