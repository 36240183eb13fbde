"""Segment expressions: the audience language of every command and plan step.

    kind:industry sector:"mobile operator",isp country:FJ,WS,TO -tag:responded
    (kind:partner OR kind:un-agency) lang:fr
    attr.membership:itu-sector

Terms are ``field:value[,value...]`` (a comma means "any of"); terms side by side
must all hold (AND); ``OR`` joins alternatives; ``-term``/``NOT term`` negates;
parentheses group. Values are bare words, "double quoted" or 'single quoted' (with
\\" or \\' and \\\\ escapes; a quote inside a bare word, as in O'Brien, is
just a character); a ``*`` in a text value is a wildcard. ``parse`` gives an AST that the
database layer compiles to SQL with bound parameters; ``str(ast)`` prints it back in
canonical form, and parsing that gives the same AST.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from outreach.domain import contact as rules
from outreach.domain.errors import ContactValueError, SegmentError

# name used in expressions -> canonical field
FIELD_ALIASES = {
    "email": "email",
    "domain": "domain",
    "name": "name",
    "org": "organization",
    "organization": "organization",
    "organisation": "organization",
    "kind": "kind",
    "type": "kind",
    "sector": "sector",
    "country": "country",
    "lang": "language",
    "language": "language",
    "tz": "timezone",
    "timezone": "timezone",
    "x": "x_handle",
    "x_handle": "x_handle",
    "tag": "tag",
    "tags": "tag",
    "status": "status",
    "has": "has",
}
# canonical field -> name printed
PRINT_NAMES = {
    "organization": "org",
    "language": "lang",
    "timezone": "tz",
    "x_handle": "x",
}
TEXT_FIELDS = {"email", "domain", "name", "organization", "sector"}
HAS_FIELDS = {
    "name",
    "organization",
    "sector",
    "country",
    "language",
    "timezone",
    "x_handle",
    "tag",
}
ATTR_PREFIX = "attr."
_ATTR_NAME = re.compile(r"^[a-z0-9_]+$")
_BARE = re.compile(r'[^\s(),"\\]+')
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_KEYWORDS = {"AND", "OR", "NOT"}
_QUOTES = "\"'"


@dataclass(frozen=True, slots=True)
class Term:
    field: str
    values: tuple[str, ...]

    def __str__(self) -> str:
        name = PRINT_NAMES.get(self.field, self.field)
        return f"{name}:{','.join(_quote(v) for v in self.values)}"


@dataclass(frozen=True, slots=True)
class Not:
    expr: Expr

    def __str__(self) -> str:
        inner = str(self.expr)
        return f"-{inner}" if isinstance(self.expr, Term) else f"-({inner})"


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Expr, ...]

    def __str__(self) -> str:
        return " ".join(f"({i})" if isinstance(i, Or) else str(i) for i in self.items)


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Expr, ...]

    def __str__(self) -> str:
        return " OR ".join(str(i) for i in self.items)


Expr = Term | Not | And | Or
EVERYONE = And(())


def and_(*items: Expr) -> Expr:
    """AND of items, flattened; one item stands alone; none is EVERYONE."""
    flat: list[Expr] = []
    for item in items:
        flat.extend(item.items if isinstance(item, And) else (item,))
    return flat[0] if len(flat) == 1 else And(tuple(flat))


def or_(*items: Expr) -> Expr:
    flat: list[Expr] = []
    for item in items:
        flat.extend(item.items if isinstance(item, Or) else (item,))
    if not flat:
        raise ValueError("OR of nothing")
    return flat[0] if len(flat) == 1 else Or(tuple(flat))


def _quote(value: str) -> str:
    if value and _BARE.fullmatch(value) and not value.startswith("'"):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse(text: str) -> Expr:
    """Parse a segment expression; an empty one selects everyone."""
    return _Parser(text).parse()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    # -- helpers -------------------------------------------------------------
    def error(self, message: str, pos: int | None = None, hint: str | None = None) -> SegmentError:
        return SegmentError(
            message, expression=self.text, position=self.pos if pos is None else pos, hint=hint
        )

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def keyword(self) -> str | None:
        self.skip_space()
        match = re.compile(r"(AND|OR|NOT)(?=[\s()]|$)", re.IGNORECASE).match(self.text, self.pos)
        return match.group(1).upper() if match else None

    # -- grammar -------------------------------------------------------------
    def parse(self) -> Expr:
        if not self.text.strip():
            return EVERYONE
        expr = self.parse_or()
        if self.peek():
            if self.peek() == ")":
                raise self.error("unexpected ')' with no '(' before it")
            raise self.error(f"unexpected {self.text[self.pos]!r}")
        return expr

    def parse_or(self) -> Expr:
        items = [self.parse_and()]
        while self.keyword() == "OR":
            self.pos += 2
            items.append(self.parse_and())
        return or_(*items)

    def parse_and(self) -> Expr:
        items = [self.parse_unary()]
        while True:
            word = self.keyword()
            if word == "OR":
                break
            if word == "AND":
                self.pos += 3
                items.append(self.parse_unary())
                continue
            if self.peek() in ("", ")"):
                break
            items.append(self.parse_unary())
        return and_(*items)

    def parse_unary(self) -> Expr:
        if self.keyword() == "NOT":
            self.pos += 3
            return Not(self.parse_unary())
        if self.peek() == "-":
            self.pos += 1
            if self.pos < len(self.text) and self.text[self.pos].isspace():
                raise self.error("expected a term or '(' right after '-'")
            return Not(self.parse_unary())
        return self.parse_atom()

    def parse_atom(self) -> Expr:
        char = self.peek()
        start = self.pos
        if char == "(":
            self.pos += 1
            if self.peek() == ")":
                raise self.error("empty parentheses; put a term inside or remove them")
            expr = self.parse_or()
            if self.peek() != ")":
                raise self.error("expected ')' to close the '(' opened", hint=f"opened at {start}")
            self.pos += 1
            return expr
        if char == "":
            raise self.error("expected a term such as kind:industry, but the expression ended")
        if self.keyword():
            raise self.error(f"expected a term before {self.keyword()}")
        return self.parse_term()

    def parse_term(self) -> Term:
        start = self.pos
        match = _FIELD.match(self.text, self.pos)
        if not match:
            raise self.error(
                f"expected a field name, found {self.text[self.pos]!r}",
                hint="a term is field:value, e.g. country:FJ",
            )
        name = match.group()
        self.pos = match.end()
        if self.pos >= len(self.text) or self.text[self.pos] != ":":
            raise self.error(
                f"expected ':' after {name!r}",
                hint=f"a term is field:value such as country:FJ; fields: {known_fields()}",
            )
        field = self.resolve_field(name, start)
        self.pos += 1
        values = [self.parse_value(field)]
        while self.pos < len(self.text) and self.text[self.pos] == ",":
            self.pos += 1
            values.append(self.parse_value(field))
        return Term(field, tuple(values))

    def resolve_field(self, name: str, pos: int) -> str:
        lowered = name.lower()
        if lowered.startswith(ATTR_PREFIX):
            key = lowered[len(ATTR_PREFIX) :]
            if not _ATTR_NAME.match(key):
                raise self.error(
                    f"{name!r}: an attribute name has letters, digits and _ only", pos=pos
                )
            return ATTR_PREFIX + key
        if lowered not in FIELD_ALIASES:
            raise self.error(f"unknown field {name!r}", pos=pos, hint=f"fields: {known_fields()}")
        return FIELD_ALIASES[lowered]

    def parse_value(self, field: str) -> str:
        start = self.pos
        if self.pos < len(self.text) and self.text[self.pos] in _QUOTES:
            raw = self.quoted()
        else:
            match = _BARE.match(self.text, self.pos)
            if not match:
                raise self.error(f"expected a value for {PRINT_NAMES.get(field, field)}:")
            raw = match.group()
            self.pos = match.end()
        try:
            return normalize_value(field, raw)
        except ContactValueError as exc:
            raise self.error(exc.message.split(": ", 1)[-1], pos=start) from None

    def quoted(self) -> str:
        """A value in double or single quotes, the same way: a backslash takes the
        next character as it is."""
        start = self.pos
        quote = self.text[start]
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
            elif char == quote:
                self.pos += 1
                return "".join(out)
            else:
                out.append(char)
                self.pos += 1
        raise self.error(
            f"unclosed quote: the {quote} that starts the value is never closed",
            pos=start,
            hint=f"end the value with {quote}; write a {quote} inside it as \\{quote}",
        )


def normalize_value(field: str, raw: str) -> str:
    """The value as stored, so that a term compares with plain equality."""
    if field in ("kind", "country", "status", "language", "timezone", "x_handle"):
        fn = {
            "kind": rules.normalize_kind,
            "country": rules.normalize_country,
            "status": rules.normalize_status,
            "language": rules.normalize_language,
            "timezone": rules.normalize_timezone,
            "x_handle": rules.normalize_x_handle,
        }[field]
        return fn(raw)
    if field == "tag":
        return rules.normalize_tag(raw)
    if field == "has":
        resolved = FIELD_ALIASES.get(raw.lower(), raw.lower())
        if resolved not in HAS_FIELDS and not resolved.startswith(ATTR_PREFIX):
            raise ContactValueError(
                "has", f"has: takes one of {', '.join(sorted(HAS_FIELDS))} or attr.NAME"
            )
        return resolved
    rules.check_text(field, raw)
    return raw


def known_fields() -> str:
    names = sorted({PRINT_NAMES.get(f, f) for f in FIELD_ALIASES.values()})
    return ", ".join([*names, "attr.NAME"])


def fields_used(expr: Expr) -> set[str]:
    if isinstance(expr, Term):
        return {expr.field}
    if isinstance(expr, Not):
        return fields_used(expr.expr)
    return set().union(*(fields_used(i) for i in expr.items)) if expr.items else set()
