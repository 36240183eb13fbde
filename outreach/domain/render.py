"""Rendering: a sandboxed Jinja2 environment, compiled messages, X post length.

Template files (found by ``outreach.templating``):

- ``NAME.email.j2``: blocks ``subject``, ``preheader`` (optional), ``text`` and/or
  ``html``; layouts with ``{% extends %}``, partials with ``{% include %}``.
- ``NAME.x.j2``: an X post, or a thread of posts separated by a line ``---``.
- ``NAME.press.j2``: front matter (headline, dateline, embargo) between ``---``
  lines, then a Markdown body, shown in ``_layouts/press.html.j2``.

Subjects and other text render without escaping, HTML with it; every value a
template can reach is data (dicts, strings, dates), and the sandbox refuses the
rest. A message is compiled once per template and rendered per recipient.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Any

import yaml
from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime, format_time
from babel.numbers import format_decimal
from jinja2 import (
    BaseLoader,
    StrictUndefined,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    pass_context,
)
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from outreach.domain.errors import TemplateError, TemplateSecurityError
from outreach.domain.inline_css import inline_html_block

X_MAX_WEIGHTED = 280
_THREAD_SPLIT = re.compile(r"^---[ \t]*$", re.MULTILINE)
_HEADER_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_FRONT_MATTER = re.compile(r"\A\s*---[ \t]*\n(.*?)\n---[ \t]*\n", re.DOTALL)


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with a fast path for the plain dicts that carry every value.

    ``contact.name`` on a dict is an item lookup; Jinja would first try (and fail)
    an attribute, which costs an exception per access. Items of a dict are data, so
    answering from them directly is as safe as the sandbox itself.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)


@lru_cache(maxsize=256)
def _locale(lang: str) -> Locale:
    try:
        return Locale.parse(lang.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return Locale.parse("en")


def text_direction(lang: str) -> str:
    return _locale(lang).text_direction


def _lang(ctx: Context) -> str:
    """The language the message is written in: the ``lang`` value, which the callers
    set to the template variant's language (``templating.variant_language``), never
    to a reader's whose language has no variant. Dates, times, numbers and country
    names follow it, like the ``lang`` and ``dir`` of the HTML."""
    return ctx.get("lang") or "en"


# A campaign's dates are the same in every message: each is formatted once per
# zone, language and format (Babel takes ~10 µs a call, twice per message otherwise).
# The zone is part of the key: aware datetimes of the same instant compare equal
# whatever their zone, and 10:00 in Istanbul is not 19:00 in Fiji on the page.
@lru_cache(maxsize=4096)
def _format_date(value: date | datetime, zone: Any, format: str, lang: str) -> str:
    return format_date(value, format=format, locale=_locale(lang))


@lru_cache(maxsize=4096)
def _format_datetime(value: datetime, zone: Any, format: str, lang: str) -> str:
    return format_datetime(value, format=format, tzinfo=zone, locale=_locale(lang))


@pass_context
def _f_date(ctx: Context, value: date | datetime, format: str = "medium") -> str:
    return _format_date(value, getattr(value, "tzinfo", None), format, _lang(ctx))


@pass_context
def _f_datetime(ctx: Context, value: datetime, format: str = "medium") -> str:
    return _format_datetime(value, value.tzinfo, format, _lang(ctx))


@pass_context
def _f_time(ctx: Context, value: datetime, format: str = "short") -> str:
    return format_time(value, format=format, tzinfo=value.tzinfo, locale=_locale(_lang(ctx)))


@pass_context
def _f_number(ctx: Context, value: float, format: str | None = None) -> str:
    return format_decimal(value, format=format, locale=_locale(_lang(ctx)))


@pass_context
def _f_country(ctx: Context, code: str) -> str:
    """A country code as the reader's language names it: FJ -> Fiji, Fidji, فيجي."""
    return _locale(_lang(ctx)).territories.get(str(code).upper(), str(code))


def make_environments(loader: BaseLoader) -> tuple[_Sandbox, _Sandbox]:
    """(text, html): the same templates, unescaped for subjects and text, escaped for HTML."""
    envs = []
    for autoescape in (False, True):
        env = _Sandbox(
            loader=loader,
            undefined=StrictUndefined,
            autoescape=autoescape,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        env.filters.update(date=_f_date, datetime=_f_datetime, time=_f_time, number=_f_number,
                           country=_f_country)  # fmt: skip
        envs.append(env)
    return envs[0], envs[1]


# -- errors ----------------------------------------------------------------------


def template_error(exc: Exception, name: str) -> TemplateError:
    """A Jinja exception as a ``TemplateError`` naming the file and line."""
    if isinstance(exc, TemplateSyntaxError):
        return TemplateError(f"syntax error: {exc.message}", file=exc.name or name, line=exc.lineno)
    file, line = _template_frame(exc)
    if isinstance(exc, SecurityError):
        return TemplateSecurityError(
            f"not allowed: {exc}", file=file or name, line=line,
            hint="templates may use the values they are given, not Python internals",
        )  # fmt: skip
    if isinstance(exc, UndefinedError):
        return TemplateError(
            f"undefined value: {exc.message}", file=file or name, line=line,
            hint="check the spelling, or give optional values a default: "
            '{{ contact.attrs.title | default("") }}',
        )  # fmt: skip
    if isinstance(exc, TemplateNotFound):
        return TemplateError(f"template {exc.name!r} not found", file=name)
    return TemplateError(f"{type(exc).__name__}: {exc}", file=file or name, line=line)


def _template_frame(exc: Exception) -> tuple[str | None, int | None]:
    """The innermost template and its line in a traceback, from the compiled code's
    debug information (blocks rendered directly are not rewritten by Jinja)."""
    found: tuple[str | None, int | None] = (None, None)
    tb = exc.__traceback__
    while tb is not None:
        template = tb.tb_frame.f_globals.get("__jinja_template__")
        if template is not None:
            found = (template.name, template.get_corresponding_lineno(tb.tb_lineno))
        tb = tb.tb_next
    return found


# -- blocks with inheritance -------------------------------------------------------


class _Blocks:
    """Renders named blocks of a template and its layouts, without the rest."""

    def __init__(self, env: _Sandbox, name: str) -> None:
        self.name = name
        try:
            self.template = env.get_template(name)
            self.parents = []
            for parent in _layout_names(env, name):
                self.parents.append(env.get_template(parent))
        except Exception as exc:
            raise template_error(exc, name) from None
        names = set(self.template.blocks)
        for parent in self.parents:
            names |= set(parent.blocks)
        self.names = names

    def context(self, values: dict[str, Any]) -> Context:
        ctx = self.template.new_context(values)
        for parent in self.parents:
            for block, render in parent.blocks.items():
                ctx.blocks.setdefault(block, []).append(render)
        return ctx

    def render(self, ctx: Context, block: str) -> str:
        return "".join(ctx.blocks[block][0](ctx))


def _layout_names(env: _Sandbox, name: str) -> list[str]:
    from jinja2 import nodes

    chain: list[str] = []
    current = name
    while True:
        source = env.loader.get_source(env, current)[0]  # type: ignore[union-attr]
        extends = next(iter(env.parse(source, current).find_all(nodes.Extends)), None)
        if extends is None:
            return chain
        if not isinstance(extends.template, nodes.Const):
            raise TemplateError("the layout's name must be written as a string", file=current)
        current = extends.template.value
        if current in chain or current == name:
            raise TemplateError(f"layouts extend each other in a loop at {current}", file=name)
        chain.append(current)


# -- messages ----------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    preheader: str
    text: str
    html: str | None
    lang: str
    text_generated: bool = False  # the text part was made from the HTML


class EmailTemplate:
    """``NAME.email.j2`` compiled once: text blocks unescaped, the HTML part escaped
    and with its CSS already inlined."""

    def __init__(self, text_env: _Sandbox, html_env: _Sandbox, name: str) -> None:
        self.name = name
        self._text = _Blocks(text_env, name)
        if "subject" not in self._text.names:
            raise TemplateError(
                "an email template needs a subject block", file=name,
                hint="{% block subject %}...{% endblock %}",
            )  # fmt: skip
        if "text" not in self._text.names and "html" not in self._text.names:
            raise TemplateError(
                "an email template needs a text block, an html block, or both", file=name
            )
        self.has_preheader = "preheader" in self._text.names
        self.has_text = "text" in self._text.names
        self._html = None
        self._html_env = html_env
        self.has_html = "html" in self._text.names
        if self.has_html:
            try:
                flat = inline_html_block(html_env, name)
                self._html = html_env.from_string(flat or "")
            except TemplateError:
                raise
            except Exception as exc:
                raise template_error(exc, name) from None

    def _locate_html_error(self, values: dict[str, Any]) -> None:
        """The inlined HTML is one flat source; render the original files once more so
        that the error names the file and line a person wrote."""
        blocks = _Blocks(self._html_env, self.name)
        try:
            blocks.render(blocks.context(values), "html")
        except Exception as exc:
            raise template_error(exc, self.name) from None

    def render(self, values: dict[str, Any]) -> RenderedEmail:
        lang = values.get("lang") or "en"
        try:
            ctx = self._text.context(values)
            subject = header_value(self._text.render(ctx, "subject"))
            preheader = (
                header_value(self._text.render(ctx, "preheader")) if self.has_preheader else ""
            )
            text = self._text.render(ctx, "text").strip() + "\n" if self.has_text else ""
            html = None
            if self._html is not None:
                hctx = self._html.new_context(values)
                try:
                    html = "".join(hctx.blocks["html"][0](hctx))
                except Exception:
                    self._locate_html_error(values)
                    raise
        except TemplateError:
            raise
        except Exception as exc:
            raise template_error(exc, self.name) from None
        generated = False
        if not self.has_text and html is not None:
            text, generated = html_to_text(html), True
        return RenderedEmail(subject, preheader, text, html, lang, generated)


def header_value(text: str) -> str:
    """One line, whatever the template or a contact field holds: CR, LF and other
    control characters become spaces, runs of white space one space."""
    if text.isprintable() and "  " not in text and text == text.strip():
        return text  # already one clean line (the usual case)
    return " ".join(_HEADER_UNSAFE.sub(" ", text).split())


def html_to_text(html: str) -> str:
    import html2text  # imported when needed: most templates have a text block

    converter = html2text.HTML2Text()
    converter.body_width = 0
    converter.ignore_images = True
    converter.protect_links = True
    return converter.handle(html).strip() + "\n"


@dataclass(frozen=True)
class XImage:
    path: str  # inside the workspace's media/ folder
    alt: str = ""


@dataclass(frozen=True)
class XPost:
    text: str
    weighted_length: int
    valid: bool
    images: tuple[XImage, ...] = ()


# A line of its own in a post: image: cop-cover.png "The cover of the Guidelines"
_IMAGE_LINE = re.compile(r'^image:[ \t]*(?P<path>[^\s"]+)(?:[ \t]+"(?P<alt>[^"]*)")?[ \t]*$', re.MULTILINE)
X_MAX_IMAGES = 4


def x_post(text: str, images: tuple[XImage, ...] = ()) -> XPost:
    """A post's length as X counts it (twitter-text config v3: NFC, URLs 23, emoji
    and CJK 2, 280 at most)."""
    from twitter_text import parse_tweet  # its tables take a while to load: only for X

    normalized = unicodedata.normalize("NFC", text)
    result = parse_tweet(normalized)
    return XPost(normalized, result.weightedLength, result.valid, images)


def _x_post_with_images(text: str, name: str) -> XPost:
    images = tuple(XImage(m["path"], m["alt"] or "") for m in _IMAGE_LINE.finditer(text))
    for image in images:
        if image.path.startswith(("/", "..")) or "/../" in image.path or "\\" in image.path:
            raise TemplateError(
                f"image {image.path!r} is outside the workspace's media/ folder", file=name,
                hint='image: cover.png "alt text" names a file in media/',
            )  # fmt: skip
    if len(images) > X_MAX_IMAGES:
        raise TemplateError(
            f"a post has {len(images)} images; X allows at most {X_MAX_IMAGES}", file=name
        )
    return x_post(_IMAGE_LINE.sub("", text).strip(), images)


class XTemplate:
    """``NAME.x.j2``: one post, or a thread split at lines of ``---``."""

    def __init__(self, text_env: _Sandbox, name: str) -> None:
        self.name = name
        try:
            self._template = text_env.get_template(name)
        except Exception as exc:
            raise template_error(exc, name) from None

    def render(self, values: dict[str, Any]) -> list[XPost]:
        """The posts, in thread order; a line ``image: FILE "alt"`` attaches an image
        from media/ to its post."""
        try:
            text = self._template.render(values)
        except Exception as exc:
            raise template_error(exc, self.name) from None
        posts = [p.strip() for p in _THREAD_SPLIT.split(text)]
        return [_x_post_with_images(p, self.name) for p in posts if p]


@dataclass(frozen=True)
class RenderedPress:
    headline: str
    dateline: str
    embargo: str
    body_html: str
    html: str  # the whole page


_PRESS_LAYOUT = "_layouts/press.html.j2"
_DEFAULT_PRESS_LAYOUT = """<!DOCTYPE html>
<html lang="{{ lang }}" dir="{{ dir }}"><head><meta charset="utf-8">
<title>{{ headline }}</title></head>
<body><article>
{% if embargo %}<p><strong>{{ embargo }}</strong></p>{% endif %}
<h1>{{ headline }}</h1>
<p>{{ dateline }}</p>
{{ body }}
</article></body></html>
"""


class PressTemplate:
    """``NAME.press.j2``: front matter and a Markdown body, in the press layout."""

    def __init__(self, text_env: _Sandbox, html_env: _Sandbox, name: str) -> None:
        self.name = name
        try:
            self._template = text_env.get_template(name)
            try:
                self._layout = html_env.get_template(_PRESS_LAYOUT)
            except TemplateNotFound:
                self._layout = html_env.from_string(_DEFAULT_PRESS_LAYOUT)
        except Exception as exc:
            raise template_error(exc, name) from None
        from markdown_it import MarkdownIt

        self._markdown = MarkdownIt("commonmark", {"html": False, "typographer": True})
        self._markdown.enable(["replacements", "smartquotes", "table"])

    def render(self, values: dict[str, Any]) -> RenderedPress:
        try:
            text = self._template.render(values)
        except Exception as exc:
            raise template_error(exc, self.name) from None
        match = _FRONT_MATTER.match(text)
        if not match:
            raise TemplateError(
                "a press release starts with front matter between two --- lines",
                file=self.name, hint="---\\nheadline: ...\\ndateline: ISTANBUL\\n---",
            )  # fmt: skip
        try:
            front = yaml.safe_load(match.group(1)) or {}
        except yaml.YAMLError as exc:
            raise TemplateError(f"front matter is not YAML: {exc}", file=self.name) from None
        if not isinstance(front, dict) or not front.get("headline"):
            raise TemplateError("the front matter needs a headline", file=self.name)
        unknown = set(front) - {"headline", "dateline", "embargo", "subheadline"}
        if unknown:
            raise TemplateError(
                f"unknown front matter key(s): {', '.join(sorted(unknown))}", file=self.name,
                hint="use headline, subheadline, dateline and embargo",
            )  # fmt: skip
        body_html = self._markdown.render(text[match.end() :])
        launch = (values.get("campaign") or {}).get("launch")
        city = str(front.get("dateline") or "").strip().upper()
        when = _f_date(self._layout.new_context(values), launch, "long") if launch else ""
        dateline = f"{city}, {when} –" if city and when else city or when
        page_values = {
            **values,
            "headline": header_value(str(front["headline"])),
            "subheadline": header_value(str(front.get("subheadline") or "")),
            "dateline": dateline,
            "embargo": header_value(str(front.get("embargo") or "")),
            "body": Markup(body_html),
        }
        try:
            page = self._layout.render(page_values)
        except Exception as exc:
            raise template_error(exc, _PRESS_LAYOUT) from None
        return RenderedPress(
            page_values["headline"], dateline, page_values["embargo"], body_html, page
        )


Compiled = EmailTemplate | XTemplate | PressTemplate
Compiler = Callable[[str], Compiled]
