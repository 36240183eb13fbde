"""CSS inlined once per template, not once per recipient.

An email's HTML part is the ``html`` block of its template and layouts. Here that
block is written out as one template source (nested blocks and static includes in
place, most-derived definitions first), every Jinja tag in it is swapped for a
placeholder that HTML parsing leaves alone (a comment between elements, a plain
token inside an attribute), css-inline moves the ``<style>`` rules onto the elements,
and the tags are put back. The result compiles once; every recipient's render is
then already inlined.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

import css_inline
from jinja2 import Environment, TemplateNotFound

from outreach.domain.errors import TemplateError
from outreach.domain.layouts import layout_chain

_PAIRS = {
    "block_begin": "block_end",
    "variable_begin": "variable_end",
    "comment_begin": "comment_end",
    "raw_begin": "raw_end",
}
_RAW_TEXT = {"style", "script", "title", "textarea"}
_HTML_TAG = re.compile(r"<html\b([^>]*)>", re.IGNORECASE)


@dataclass
class Piece:
    kind: str  # data | stmt | expr | comment | raw
    text: str
    line: int
    words: list[str] = field(default_factory=list)  # names and strings of a tag
    keyword: str = ""


def pieces(env: Environment, source: str, name: str) -> list[Piece]:
    """The template split into HTML data and whole Jinja tags."""
    tokens = list(env.lex(source, name))
    out: list[Piece] = []
    i = 0
    while i < len(tokens):
        line, kind, value = tokens[i]
        if kind == "data":
            out.append(Piece("data", value, line))
            i += 1
            continue
        end = _PAIRS.get(kind)
        if end is None:  # a stray token: keep it verbatim
            out.append(Piece("data", value, line))
            i += 1
            continue
        j = i
        while tokens[j][1] != end:
            j += 1
        group = tokens[i : j + 1]
        words = [v for _, t, v in group if t in ("name", "string")]
        piece_kind = {"block_begin": "stmt", "variable_begin": "expr"}.get(kind, kind[:-6])
        out.append(
            Piece(
                piece_kind, "".join(v for _, _, v in group), line, words, words[0] if words else ""
            )
        )
        i = j + 1
    return out


class _Source:
    """A template and its layouts, read as pieces."""

    def __init__(self, env: Environment, name: str) -> None:
        self.env = env
        self.chain = [(template, self._load(template, name)) for template in [name, *layout_chain(env, name)]]
        self.blocks: dict[str, tuple[str, list[Piece]]] = {}
        for template, parts in self.chain:  # child first: the most-derived definition wins
            for block, body in _block_bodies(parts, template).items():
                self.blocks.setdefault(block, (template, body))

    def _load(self, name: str, origin: str) -> list[Piece]:
        try:
            source, _filename, _uptodate = self.env.loader.get_source(self.env, name)  # type: ignore[union-attr]
        except TemplateNotFound:
            raise TemplateError(f"partial {name!r} not found", file=origin) from None
        return pieces(self.env, source, name)

    def expand(self, block: str, emitted: set[str]) -> list[Piece]:
        template, body = self.blocks[block]
        emitted.add(block)
        out = [Piece("stmt", f"{{% block {block} %}}", 0, ["block", block], "block")]
        out += self._expand(body, template, emitted, depth=0)
        out.append(Piece("stmt", "{% endblock %}", 0, ["endblock"], "endblock"))
        return out

    def _expand(
        self, parts: list[Piece], template: str, emitted: set[str], depth: int
    ) -> list[Piece]:
        out: list[Piece] = []
        i = 0
        while i < len(parts):
            p = parts[i]
            if p.kind == "expr" and "super" in p.words:
                raise TemplateError(
                    "super() is not supported in an email's HTML",
                    file=template,
                    line=p.line,
                    hint="copy the layout's content into the block instead",
                )
            if p.kind == "stmt" and p.keyword == "block":
                end = _matching_end(parts, i, template)
                out += self.expand(p.words[1], emitted)
                i = end + 1
                continue
            if p.kind == "stmt" and p.keyword == "include" and _static_include(p):
                if depth > 10:
                    raise TemplateError(
                        "includes nest more than 10 deep", file=template, line=p.line
                    )
                name = p.words[1].strip("\"'")
                out += self._expand(self._load(name, template), name, emitted, depth + 1)
                i += 1
                continue
            if p.kind != "comment":
                out.append(p)
            i += 1
        return out


def _static_include(p: Piece) -> bool:
    return len(p.words) == 2 and p.words[1][:1] in "\"'"


def _matching_end(parts: list[Piece], start: int, template: str) -> int:
    depth = 0
    for j in range(start, len(parts)):
        p = parts[j]
        if p.kind == "stmt" and p.keyword == "block":
            depth += 1
        elif p.kind == "stmt" and p.keyword == "endblock":
            depth -= 1
            if depth == 0:
                return j
    raise TemplateError("a block is not closed", file=template, line=parts[start].line)


def _block_bodies(parts: list[Piece], template: str) -> dict[str, list[Piece]]:
    """Every block defined in ``parts`` (nested ones too) -> its body."""
    out: dict[str, list[Piece]] = {}
    for i, p in enumerate(parts):
        if p.kind == "stmt" and p.keyword == "block":
            out[p.words[1]] = parts[i + 1 : _matching_end(parts, i, template)]
    return out


class _HtmlState:
    """Where in HTML the next character falls: text, tag, quoted value, comment, raw text."""

    def __init__(self) -> None:
        self.state = "text"
        self.tag = ""
        self.closing = False
        self.last = ""  # last non-space character inside a tag

    def feed(self, data: str) -> None:
        i, n = 0, len(data)
        while i < n:
            c = data[i]
            s = self.state
            if s == "text":
                if data.startswith("<!--", i):
                    self.state, i = "comment", i + 4
                    continue
                if c == "<" and i + 1 < n and (data[i + 1].isalpha() or data[i + 1] in "/!?"):
                    self.closing = data[i + 1] == "/"
                    m = re.match(r"</?([a-zA-Z0-9]+)", data[i:])
                    self.tag = m.group(1).lower() if m else ""
                    self.state, self.last = "tag", ""
            elif s == "tag":
                if c == '"':
                    self.state = "dq"
                elif c == "'":
                    self.state = "sq"
                elif c == ">":
                    raw = self.tag in _RAW_TEXT and not self.closing
                    self.state = "raw" if raw else "text"
                elif not c.isspace():
                    self.last = c
            elif (s == "dq" and c == '"') or (s == "sq" and c == "'"):
                self.state, self.last = "tag", c
            elif s == "comment" and data.startswith("-->", i):
                self.state, i = "text", i + 3
                continue
            elif s == "raw" and data[i : i + 2 + len(self.tag)].lower() == f"</{self.tag}":
                self.state, self.closing = "tag", True
            i += 1


def inline_html_block(env: Environment, name: str, *, block: str = "html") -> str | None:
    """The template source of ``name``'s HTML part with its CSS inlined, or None when
    the template has no such block. Other blocks follow it, untouched, so that
    ``self.preheader()`` and the like still work."""
    source = _Source(env, name)
    if block not in source.blocks:
        return None
    emitted: set[str] = set()
    parts = source.expand(block, emitted)
    _add_lang_dir(parts)
    nonce = secrets.token_hex(4)
    html: list[str] = []
    originals: dict[str, str] = {}
    state = _HtmlState()
    for p in parts:
        if p.kind == "data":
            html.append(p.text)
            state.feed(p.text)
            continue
        token = f"xj{len(originals)}x{nonce}"
        originals[token] = p.text
        if state.state == "text":
            html.append(f"<!--{token}-->")
        elif state.state == "tag" and not (p.kind == "expr" and state.last == "="):
            raise TemplateError(
                "a Jinja tag between a tag's attributes cannot have its CSS inlined",
                file=name, line=p.line,
                hint='put it inside the attribute value: class="{% if x %}a{% endif %}"',
            )  # fmt: skip
        else:
            html.append(token)
    try:
        inlined = css_inline.inline("".join(html), keep_style_tags=True)
    except ValueError as exc:
        raise TemplateError(f"CSS could not be inlined: {exc}", file=name) from None
    for token, original in originals.items():
        inlined = inlined.replace(f"<!--{token}-->", original).replace(token, original)
    if "x" + nonce in inlined:
        raise TemplateError("CSS inlining moved a Jinja tag out of place", file=name)
    rest: list[str] = []
    for other in source.blocks:
        if other not in emitted:
            rest += [p.text for p in source.expand(other, emitted)]
    return inlined + "".join(rest)


def _add_lang_dir(parts: list[Piece]) -> None:
    """Give ``<html>`` lang and dir attributes from the recipient's language, unless
    the template sets them."""
    for p in parts:
        if p.kind == "data" and (m := _HTML_TAG.search(p.text)):
            attrs = m.group(1)
            extra = ""
            if not re.search(r"\blang\s*=", attrs, re.IGNORECASE):
                extra += ' lang="{{ lang }}"'
            if not re.search(r"\bdir\s*=", attrs, re.IGNORECASE):
                extra += ' dir="{{ dir }}"'
            if extra:
                p.text = p.text[: m.end(1)] + extra + p.text[m.end(1) :]
            return
