"""Template inheritance: which layouts a template extends, followed to the last one.

One resolver for the renderer (``render``: blocks of a template and its layouts) and
the CSS inliner (``inline_css``: the HTML block written out whole), so that both
refuse the same things with the same words: a layout named by an expression (it
must be a string, for the check and the snapshot to know it), a layout that is not
there, layouts that extend each other in a loop. Each error names the file and line
of the ``{% extends %}`` at fault.
"""

from __future__ import annotations

from jinja2 import Environment, TemplateNotFound, TemplateSyntaxError, nodes

from outreach.domain.errors import TemplateError
from outreach.domain.sandbox import template_error

EXTENDS_HINT = '{% extends "_layouts/email.html.j2" %}'


def layout_chain(env: Environment, name: str) -> list[str]:
    """The layouts ``name`` extends, nearest first (``name`` itself left out); empty
    for a template without ``{% extends %}``. Raises ``TemplateError``."""
    chain: list[str] = []
    current, named_at = name, None
    while True:
        found = _extends(env, current, named_at)
        if found is None:
            return chain
        layout, line = found
        if layout == name or layout in chain:
            loop = " -> ".join([name, *chain, layout])
            raise TemplateError(
                f"layouts extend each other in a loop: {loop}", file=current, line=line,
                hint="the last layout of a chain extends nothing",
            )  # fmt: skip
        chain.append(layout)
        current, named_at = layout, (current, line)


def _extends(env: Environment, name: str, named_at: tuple[str, int] | None) -> tuple[str, int] | None:
    """The layout ``name`` extends and the line that says so, or None. ``named_at``:
    the file and line of the ``{% extends %}`` that names ``name``, if one does."""
    try:
        source = env.loader.get_source(env, name)[0]  # type: ignore[union-attr]
    except TemplateNotFound:
        if named_at is None:
            raise TemplateError(f"template {name!r} not found", file=name) from None
        raise TemplateError(
            f"layout {name!r} not found", file=named_at[0], line=named_at[1],
            hint="a layout is a file in templates/, named from there: " + EXTENDS_HINT,
        ) from None  # fmt: skip
    try:
        tag = next(iter(env.parse(source, name).find_all(nodes.Extends)), None)
    except TemplateSyntaxError as exc:  # with its file and line
        raise template_error(exc, name) from None
    if tag is None:
        return None
    if not isinstance(tag.template, nodes.Const) or not isinstance(tag.template.value, str):
        raise TemplateError("the layout's name must be written as a string", file=name,
                            line=tag.lineno, hint=EXTENDS_HINT)  # fmt: skip
    return tag.template.value, tag.lineno
