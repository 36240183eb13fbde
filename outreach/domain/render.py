"""Rendering: compiled messages (email, X post or thread, press release), X post length.

Template files (found by ``outreach.templating``):

- ``NAME.email.j2``: blocks ``subject``, ``preheader`` (optional), ``text`` and/or
  ``html``; layouts with ``{% extends %}``, partials with ``{% include %}``.
- ``NAME.x.j2``: an X post, or a thread of posts separated by a line ``---``.
- ``NAME.press.j2``: front matter (headline, dateline, embargo) between ``---``
  lines, then a Markdown body, shown in ``_layouts/press.html.j2``.

Subjects and other text render without escaping, HTML with it; every value a
template can reach is data (dicts, strings, dates), and the sandbox
(``outreach.domain.sandbox``) refuses the rest. A message is compiled once per
template and rendered per recipient, each render within the limits of
``outreach.domain.limits`` (time, size, steps): a template that goes past one fails
with its file and line, and after a render that ran out of time or steps, later
renders of the same compiled template fail at once with the same error.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from jinja2 import TemplateNotFound
from jinja2.runtime import Context
from markupsafe import Markup

from outreach.domain import limits, safe_yaml
from outreach.domain.errors import TemplateError
from outreach.domain.inline_css import inline_html_block
from outreach.domain.layouts import layout_chain
from outreach.domain.sandbox import TemplateLimitError, _Sandbox, f_date, template_error

X_MAX_WEIGHTED = 280
_THREAD_SPLIT = re.compile(r"^---[ \t]*$", re.MULTILINE)
_HEADER_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_FRONT_MATTER = re.compile(r"\A\s*---[ \t]*\n(.*?)\n---[ \t]*\n", re.DOTALL)


# -- blocks with inheritance -------------------------------------------------------


class _Blocks:
    """Renders named blocks of a template and its layouts, without the rest."""

    def __init__(self, env: _Sandbox, name: str) -> None:
        self.name = name
        self.env = env
        try:
            self.template = env.get_template(name)
            self.parents = []
            for parent in layout_chain(env, name):
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
        return self.env.concat(ctx.blocks[block][0](ctx))


# -- one render within the limits ------------------------------------------------------


class _Limited:
    """A compiled template's renders, each within the limits; once one ran out of
    time or steps, the next fail at once (a sender would otherwise spend the time
    limit on every recipient)."""

    name: str
    _ran_long: TemplateLimitError | None = None

    def _limited(self, render: Callable[[dict[str, Any]], Any], values: dict[str, Any]) -> Any:
        if self._ran_long is not None:
            e = self._ran_long
            raise TemplateLimitError(e.detail, file=e.file, line=e.line, hint=e.hint, ran_long=True)
        token = limits.begin()
        try:
            return render(values)
        except (limits.RenderLimitError, TemplateLimitError) as exc:
            error = template_error(exc, self.name)
            if isinstance(error, TemplateLimitError) and error.ran_long:
                self._ran_long = error
            raise error from None
        finally:
            limits.end(token)


def _render_whole(template: Any, values: dict[str, Any]) -> str:
    """``template.render(values)`` without Jinja's traceback rewriting, so that an
    error can name the template's line, and joined within the size limit."""
    return template.environment.concat(template.root_render_func(template.new_context(values)))


# -- messages ----------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    preheader: str
    text: str
    html: str | None
    lang: str
    text_generated: bool = False  # the text part was made from the HTML


class EmailTemplate(_Limited):
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
        token = limits.begin()  # a limit is met again at the same place, with its own time
        try:
            blocks.render(blocks.context(values), "html")
        except Exception as exc:
            raise template_error(exc, self.name) from None
        finally:
            limits.end(token)

    def render(self, values: dict[str, Any]) -> RenderedEmail:
        return self._limited(self._render, values)

    def _render(self, values: dict[str, Any]) -> RenderedEmail:
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
                    html = self._html_env.concat(hctx.blocks["html"][0](hctx))
                except Exception:
                    self._locate_html_error(values)
                    raise
        except TemplateError:
            raise
        except Exception as exc:
            raise template_error(exc, self.name) from None
        if len(subject) + len(preheader) + len(text) + len(html or "") > limits.RENDER_MAX_CHARS:
            raise template_error(limits.too_large("the message"), self.name)
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


class XTemplate(_Limited):
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
        return self._limited(self._render, values)

    def _render(self, values: dict[str, Any]) -> list[XPost]:
        try:
            text = _render_whole(self._template, values)
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


class PressTemplate(_Limited):
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
        return self._limited(self._render, values)

    def _render(self, values: dict[str, Any]) -> RenderedPress:
        try:
            text = _render_whole(self._template, values)
        except Exception as exc:
            raise template_error(exc, self.name) from None
        match = _FRONT_MATTER.match(text)
        if not match:
            raise TemplateError(
                "a press release starts with front matter between two --- lines",
                file=self.name, hint="---\\nheadline: ...\\ndateline: ISTANBUL\\n---",
            )  # fmt: skip
        try:
            front = safe_yaml.safe_load(match.group(1)) or {}
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
        when = f_date(self._layout.new_context(values), launch, "long") if launch else ""
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
            page = _render_whole(self._layout, page_values)
        except Exception as exc:
            raise template_error(exc, _PRESS_LAYOUT) from None
        return RenderedPress(
            page_values["headline"], dateline, page_values["embargo"], body_html, page
        )


Compiled = EmailTemplate | XTemplate | PressTemplate
Compiler = Callable[[str], Compiled]
