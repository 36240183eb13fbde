"""The sandboxed Jinja2 environment templates are rendered in, with its filters,
its limits (``outreach.domain.limits``) and the translation of Jinja's errors.

Every value a template can reach is data (dicts, strings, dates), and the sandbox
refuses the rest. On top of Jinja's sandbox, each render is held to the limits:
the operators and string methods that can make a large value at once are checked
before they run, each filter's, call's and ``~``'s result after, each loop counts
its steps, and the output is joined only while it stays within the size limit.
"""

from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime, format_time
from babel.numbers import format_decimal
from jinja2 import (
    BaseLoader,
    StrictUndefined,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    nodes,
    pass_context,
)
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum

from outreach.domain import limits
from outreach.domain.errors import TemplateError, TemplateSecurityError

_LOOP_FILTER = "outreach_loop_steps"


class TemplateLimitError(TemplateError):
    """A render went past a limit (``ran_long``: the time or the steps limit)."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 hint: str | None = None, ran_long: bool = False) -> None:  # fmt: skip
        super().__init__(message, file=file, line=line, hint=hint)
        self.ran_long = ran_long


@pass_context
def _loop_steps(_ctx: Context, iterable: Any) -> Any:
    """Every ``{% for %}``'s iterable goes through here: its steps count."""
    budget = limits.current()
    return iterable if budget is None else _counted(iterable, budget)


def _counted(iterable: Any, budget: limits.Budget) -> Any:
    count = 0
    for item in iterable:
        count += 1
        if count == 64:
            budget.step(64)
            count = 0
        yield item
    budget.step(count)


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator, with each loop's steps counted and ``~`` checked."""

    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.new_buffer()")

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        for loop in node.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, _LOOP_FILTER, [], [], None, None,
                                     lineno=loop.iter.lineno)  # fmt: skip
            loop.iter.set_environment(self.environment)
        super().visit_Template(node, frame)

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            escaped = "context.eval_ctx.autoescape"
        else:
            escaped = repr(bool(frame.eval_ctx.autoescape))
        self.write("environment.concat_values((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(f"), {escaped})")


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with the render limits, and a fast path for the plain dicts that
    carry every value.

    ``contact.name`` on a dict is an item lookup; Jinja would first try (and fail)
    an attribute, which costs an exception per access. Items of a dict are data, so
    answering from them directly is as safe as the sandbox itself.
    """

    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"+", "*", "**", "%"})
    concat = staticmethod(limits.bounded_concat)
    new_buffer = limits.Buffer

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = limits.current()
        if budget is not None:
            budget.step()
        target = getattr(obj, "__wrapped__", obj)  # str.format comes wrapped by the sandbox
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            limits.check_str_method(owner, getattr(target, "__name__", ""), args, kwargs)
            if getattr(target, "__name__", "") == "join" and args:
                args = (list(args[0]), *args[1:])
                limits.check_number(len(owner) * max(len(args[0]) - 1, 0)
                                    + limits.shown_size(args[0]), "a length")  # fmt: skip
        return limits.charge(super().call(context, obj, *args, **kwargs))

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        limits.check_binop(operator, left, right)
        return limits.charge(self.binop_table[operator](left, right))

    @staticmethod
    def concat_values(values: tuple[Any, ...], escaped: bool) -> str:
        """``a ~ b``: refused before the text is made when it would be too long."""
        if sum(limits.shown_size(v) for v in values) > limits.RENDER_MAX_CHARS:
            raise limits.too_large()
        return limits.charge(markup_join(values) if escaped else str_join(values))


# -- filters -------------------------------------------------------------------------

# Filters that turn their whole input into text: a list is refused first if its text
# would be too long.
_TEXT_FILTERS = {
    "capitalize", "center", "e", "escape", "forceescape", "format", "indent", "lower",
    "pprint", "replace", "safe", "string", "striptags", "title", "tojson", "trim",
    "truncate", "upper", "urlencode", "urlize", "wordcount", "wordwrap", "xmlattr",
}  # fmt: skip


def _pre_center(value: Any, width: int = 80) -> None:
    limits.check_number(width)


def _pre_indent(s: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> None:
    text = str(s)
    step = len(width) if isinstance(width, str) else width
    if isinstance(step, int) and step > 0:
        limits.check_number(len(text) + (text.count("\n") + 2) * step, "a length")


def _pre_format(value: Any, *args: Any, **kwargs: Any) -> None:
    limits.check_printf(str(value), kwargs or tuple(args))


def _pre_replace(s: Any, old: Any, new: Any, count: int | None = None) -> None:
    limits.check_str_method(str(s), "replace", (str(old), str(new)), {})


def _pre_wordwrap(s: Any, width: int = 79, break_long_words: bool = True,
                  wrapstring: str | None = None, break_on_hyphens: bool = True) -> None:  # fmt: skip
    text, joiner = str(s), str(wrapstring or "\n")
    lines = 2 * len(text) // max(int(width), 1) + text.count("\n") + 1
    limits.check_number(len(text) + lines * len(joiner), "a length")


def _pre_batch(value: Any, linecount: int, fill_with: Any = None) -> None:
    if fill_with is not None:
        limits.check_number(linecount * limits.shown_size(fill_with), "a length")


def _pre_slice(value: Any, slices: int, fill_with: Any = None) -> None:
    limits.check_number(slices * (2 + limits.shown_size(fill_with)), "a length")


def _pre_tojson(value: Any, indent: int | str | None = None) -> None:
    if indent is not None and (len(indent) if isinstance(indent, str) else indent) > 16:
        raise limits.RenderLimitError("tojson indents by at most 16", "use indent=2")


# Checks before a filter runs, given its arguments without the context Jinja passes.
_PRECHECKS = {"center": _pre_center, "indent": _pre_indent, "format": _pre_format,
              "replace": _pre_replace, "wordwrap": _pre_wordwrap, "batch": _pre_batch,
              "slice": _pre_slice, "tojson": _pre_tojson}  # fmt: skip


def _join(join: Any) -> Any:
    def do_join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
        items = list(value)
        limits.check_number(len(str(d)) * max(len(items) - 1, 0) + limits.shown_size(items),
                            "a length")  # fmt: skip
        return join(eval_ctx, items, d, attribute)

    return do_join


_ITEM_FILTERS = {"batch", "slice", "groupby"}  # lazy: each list they make is checked
# Filters that return one of the values they are given, a number, a short text, or a
# lazy sequence of other filters' results: nothing to check (and nothing to slow down).
_PLAIN_FILTERS = {
    "abs", "attr", "count", "country", "d", "date", "datetime", "default", "filesizeformat",
    "first", "float", "int", "items", "last", "length", "map", "max", "min", "number",
    "random", "reject", "rejectattr", "round", "select", "selectattr", "time", "wordcount",
}  # fmt: skip


def _checked(name: str, f: Any) -> Any:
    """``f`` with its input and result held to the size limits."""
    pre = _PRECHECKS.get(name)
    text = name in _TEXT_FILTERS
    skip = 1 if hasattr(f, "jinja_pass_arg") else 0  # the context comes first
    charge = limits.charge

    if name in _ITEM_FILTERS:

        def filter_(*args: Any, **kwargs: Any) -> Any:
            if pre is not None:
                pre(*args[skip:], **kwargs)
            return limits.charge_items(f(*args, **kwargs))

    elif text or pre is not None:

        def filter_(*args: Any, **kwargs: Any) -> Any:
            if text and len(args) > skip:
                limits.check_shown(args[skip])
            if pre is not None:
                pre(*args[skip:], **kwargs)
            return charge(f(*args, **kwargs))

    else:

        def filter_(*args: Any, **kwargs: Any) -> Any:
            return charge(f(*args, **kwargs))

    filter_.__dict__.update(getattr(f, "__dict__", {}))  # keeps pass_context and the like
    filter_.__name__ = getattr(f, "__name__", name)
    filter_.__doc__ = f.__doc__
    return filter_


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    if n > 100 or max > 1000:
        raise limits.RenderLimitError("lipsum makes at most 100 paragraphs of 1000 words", "")
    return generate_lorem_ipsum(n, html, min, max)


# -- dates, numbers and countries in the message's language -----------------------------


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
def f_date(ctx: Context, value: date | datetime, format: str = "medium") -> str:
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
        env.filters.update(date=f_date, datetime=_f_datetime, time=_f_time, number=_f_number,
                           country=_f_country)  # fmt: skip
        join = env.filters["join"]
        env.filters["join"] = _join(join)
        env.filters["join"].__dict__.update(join.__dict__)
        env.filters = {name: f if name in _PLAIN_FILTERS else _checked(name, f)
                       for name, f in env.filters.items()}  # fmt: skip
        env.filters[_LOOP_FILTER] = _loop_steps
        env.globals["lipsum"] = _lipsum
        envs.append(env)
    return envs[0], envs[1]


# -- errors ----------------------------------------------------------------------


def template_error(exc: Exception, name: str) -> TemplateError:
    """A Jinja exception as a ``TemplateError`` naming the file and line."""
    if isinstance(exc, TemplateError):
        return exc
    if isinstance(exc, TemplateSyntaxError):
        return TemplateError(f"syntax error: {exc.message}", file=exc.name or name, line=exc.lineno)
    file, line = _template_frame(exc)
    if isinstance(exc, limits.RenderLimitError):
        if exc.location is not None:
            file, line = exc.location
        return TemplateLimitError(exc.message, file=file or name, line=line,
                                  hint=exc.hint or None, ran_long=exc.ran_long)  # fmt: skip
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
    if isinstance(exc, RecursionError):
        return TemplateError("macros or includes call each other too deeply",
                             file=file or name, line=line)  # fmt: skip
    return TemplateError(f"{type(exc).__name__}: {exc}", file=file or name, line=line)


def _template_frame(exc: Exception) -> tuple[str | None, int | None]:
    """The innermost template and its line in a traceback, from the compiled code's
    debug information (templates rendered directly are not rewritten by Jinja)."""
    found: tuple[str | None, int | None] = (None, None)
    tb = exc.__traceback__
    while tb is not None:
        template = tb.tb_frame.f_globals.get("__jinja_template__")
        if template is not None:
            found = (template.name, template.get_corresponding_lineno(tb.tb_lineno))
        tb = tb.tb_next
    return found
