"""Limits on what a template can make a render do.

A template is written by a person and may be wrong, or hostile: two nested loops of
``range(100000)`` are ten billion steps, ``{{ 'x' * 10**9 }}`` is a gigabyte. Every
render (one email with its subject, text and HTML; one X post or thread; one press
release) runs within these limits, and a template that reaches one fails with a
``TemplateError`` naming its file and line:

- ``RENDER_SECONDS`` (2 s): the time one render may take.
- ``RENDER_MAX_CHARS`` (1 MiB, 1,048,576 characters): the text one render produces
  (subject, text and HTML together), and the size of any one value it computes (a
  string, or a list as it would be shown).
- ``RENDER_MAX_STEPS`` (1,000,000): loop iterations and calls in one render.
- ``RENDER_MAX_WORK`` (16 MiB): the characters of every value a render computes
  (filter results, operators, calls, macro and block output) added up.
- ``MAX_INT_BITS`` (65,536): the size of a number ``*`` or ``**`` may make.

Operations that could make a large value at once (``*``, ``**``, ``%``, ``+``, ``~``,
``str.format``, ``center``, ``indent``, ``join``, ``replace``...) are checked before
they run, so the memory is never taken; the others are checked on their result.

The limits on YAML files (plans, a press release's front matter) are in
``outreach.domain.safe_yaml``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from contextvars import ContextVar, Token
from itertools import islice
from string import Formatter
from time import monotonic
from typing import Any

from markupsafe import Markup

RENDER_SECONDS = 2.0
RENDER_MAX_CHARS = 1024 * 1024
RENDER_MAX_STEPS = 1_000_000
RENDER_MAX_WORK = 16 * RENDER_MAX_CHARS
MAX_INT_BITS = 65_536

_TIME_HINT = (
    "a loop or a macro repeats too often; nested loops multiply "
    "(two loops of 100,000 are 10,000,000,000 steps)"
)
_SIZE_HINT = "a repetition (*, a loop, a macro that calls itself) makes too much text"


class RenderLimitError(Exception):
    """A render went past a limit; ``location`` is (template, line) when known."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.location: tuple[str, int] | None = None
        self.ran_long = False  # the time or steps limit: the render took long to stop


def too_large(what: str = "a value") -> RenderLimitError:
    return RenderLimitError(
        f"{what} would be longer than {RENDER_MAX_CHARS:,} characters, "
        "the limit for one message", _SIZE_HINT,
    )  # fmt: skip


class Budget:
    """What one render has used so far."""

    __slots__ = ("deadline", "steps", "work")

    def __init__(self) -> None:
        self.deadline = monotonic() + RENDER_SECONDS
        self.steps = 0
        self.work = 0

    def step(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > RENDER_MAX_STEPS:
            exc = RenderLimitError(
                f"more than {RENDER_MAX_STEPS:,} loop steps and calls, the limit for one message",
                _TIME_HINT,
            )
        elif monotonic() > self.deadline:
            exc = RenderLimitError(
                f"rendering took longer than {RENDER_SECONDS:g} s, the limit for one message",
                _TIME_HINT,
            )
        else:
            return
        exc.ran_long = True
        raise exc

    def spend(self, n: int) -> None:
        self.work += n
        if self.work > RENDER_MAX_WORK:
            self.over_budget()

    def over_budget(self) -> None:
        raise RenderLimitError(
            f"the text and values computed add up to more than {RENDER_MAX_WORK:,} characters, "
            "the limit for one message", _SIZE_HINT,
        )  # fmt: skip


_BUDGET: ContextVar[Budget | None] = ContextVar("outreach_render_budget", default=None)


def begin() -> Token:
    """Start one render's budget (``end`` with the token, in a ``finally``)."""
    return _BUDGET.set(Budget())


def end(token: Token) -> None:
    _BUDGET.reset(token)


current = _BUDGET.get  # the running render's Budget, or None


# -- sizes -------------------------------------------------------------------------


def shown_size(value: Any, limit: int = RENDER_MAX_CHARS, depth: int = 0) -> int:
    """About how long ``value`` is as text (a list as ``str`` shows it); counting
    stops once past ``limit``."""
    if isinstance(value, (str, bytes)):
        return len(value) + 2 * (depth > 0)  # quoted, in a list
    if isinstance(value, int):
        return value.bit_length() * 3 // 10 + 1
    if depth > 20:
        return 8
    if isinstance(value, (list, tuple, set, frozenset)):
        items: Iterable[Any] = value
    elif isinstance(value, dict):
        items = (x for pair in value.items() for x in pair)
    else:
        return 8
    total = 2
    for item in items:
        total += 2 + shown_size(item, limit, depth + 1)
        if total > limit:
            break
    return total


_CONTAINERS = (list, tuple, dict, set, frozenset)
_SEQUENCES = (str, bytes, list, tuple)


def charge(value: Any) -> Any:
    """``value``, once checked against the size limits and added to the render's work."""
    cls = value.__class__
    if cls is str or cls is Markup or isinstance(value, str):
        n = len(value)
    elif isinstance(value, _CONTAINERS):
        n = shown_size(value)
    else:
        return value
    if n > RENDER_MAX_CHARS:
        raise too_large()
    budget = _BUDGET.get()
    if budget is not None:
        budget.work += n
        if budget.work > RENDER_MAX_WORK:
            budget.over_budget()
    return value


def charge_items(iterable: Iterable[Any]) -> Iterable[Any]:
    """The items of ``iterable`` (lists made by ``batch``, ``slice``...), each charged."""
    for item in iterable:
        yield charge(item)


def check_shown(value: Any) -> None:
    """Refuse a container whose text would be too long, before it is made into text."""
    if isinstance(value, _CONTAINERS) and shown_size(value) > RENDER_MAX_CHARS:
        raise too_large()


def check_number(n: Any, what: str = "a width") -> None:
    if isinstance(n, int) and n > RENDER_MAX_CHARS:
        raise too_large(f"{what} of {n:,}: the text")


def check_int_bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise RenderLimitError(
            f"a number would have more than {MAX_INT_BITS:,} bits", "check the arithmetic"
        )


# -- operators and formats -----------------------------------------------------------

_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([a-zA-Z%])")


def check_printf(fmt: Any, args: Any) -> None:
    """``fmt % args`` (and the ``format`` filter): widths and the values' sizes."""
    if not isinstance(fmt, str):
        return
    values = args if isinstance(args, tuple) else (args,)
    if isinstance(args, dict):
        values = tuple(args.values())
    size = len(fmt)
    for value in values:
        size += shown_size(value)
    if size > RENDER_MAX_CHARS:
        raise too_large()
    for width, precision, _kind in _PRINTF.findall(fmt):
        for number in (width, precision):
            if number == "*":
                for value in values:
                    check_number(value)
            elif number:
                check_number(int(number))


def check_str_format(fmt: str, args: tuple, kwargs: dict) -> None:
    """``str.format``: the widths of its fields, and nested widths given as values."""
    try:
        fields = list(Formatter().parse(fmt))
    except ValueError:
        return  # the call itself says what is wrong
    values = (*args, *kwargs.values())
    size = len(fmt) + sum(shown_size(v) for v in values)
    if size > RENDER_MAX_CHARS:
        raise too_large()
    for _literal, _name, spec, _conversion in fields:
        if not spec:
            continue
        for number in re.findall(r"\d+", spec):
            check_number(int(number))
        if "{" in spec:
            for value in values:
                check_number(value)


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Before ``left OPERATOR right`` runs (``+``, ``*``, ``**``, ``%``)."""
    if operator == "*":
        if isinstance(left, int) and not isinstance(right, int):
            left, right = right, left
        if isinstance(left, int) and isinstance(right, int):
            check_int_bits(left.bit_length() + right.bit_length())
        elif isinstance(right, int) and isinstance(left, _SEQUENCES) and right > 0:
            check_number(shown_size(left) * right, "a length")
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            check_int_bits(left.bit_length() * right)
    elif operator == "%":
        check_printf(left, right)
    elif operator == "+" and isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
        check_number(shown_size(left) + shown_size(right), "a length")


def check_str_method(owner: str, name: str, args: tuple, kwargs: dict) -> None:
    """Before a method of a string that can make a much longer one runs."""
    if name in ("center", "ljust", "rjust", "zfill"):
        check_number(args[0] if args else kwargs.get("width"))
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(size, int) and size > 0:
            check_number(len(owner) * size, "a length")
    elif name == "replace" and len(args) >= 2:
        old, new = args[0], args[1]
        if isinstance(old, str) and isinstance(new, str):
            count = owner.count(old) if old else len(owner) + 1
            check_number(len(owner) + count * max(len(new) - len(old), 0), "a length")
    elif name in ("format", "format_map"):
        check_str_format(owner, args, kwargs if name == "format" else (args[0] if args else {}))


# -- output --------------------------------------------------------------------------


def generator_location(gen: Any) -> tuple[str, int] | None:
    """The innermost template and line a suspended render generator is at."""
    found = None
    while gen is not None:
        frame = getattr(gen, "gi_frame", None)
        if frame is None:
            break
        template = frame.f_globals.get("__jinja_template__")
        if template is not None:
            found = (template.name, template.get_corresponding_lineno(frame.f_lineno))
        gen = getattr(gen, "gi_yieldfrom", None)
    return found


class Buffer(list):
    """The output of a macro, a ``{% set %}`` block, a ``{% filter %}`` or ``{% call %}``
    block: it stops growing at the size limit."""

    __slots__ = ("size",)

    def __init__(self) -> None:
        super().__init__()
        self.size = 0

    def append(self, text: str) -> None:
        self.size += len(text)
        if self.size > RENDER_MAX_CHARS:
            raise too_large("the text")
        super().append(text)

    def extend(self, texts: Iterable[str]) -> None:
        texts = tuple(texts)
        self.size += sum(map(len, texts))
        if self.size > RENDER_MAX_CHARS:
            raise too_large("the text")
        super().extend(texts)


_BATCH = 64


def bounded_concat(parts: Iterable[str]) -> str:
    """``"".join(parts)`` that stops at the size limit (and, for a render that is
    produced piece by piece, at the time limit) before taking the memory."""
    if isinstance(parts, list):  # a buffer: every piece is there
        size = parts.size if isinstance(parts, Buffer) else sum(map(len, parts))
        if size > RENDER_MAX_CHARS:
            raise too_large("the text")
        text = "".join(parts)
    else:
        it = iter(parts)
        batch = list(islice(it, _BATCH))
        if len(batch) < _BATCH:  # the usual case: a message's text, all there
            text = "".join(batch)
            if len(text) > RENDER_MAX_CHARS:
                raise too_large("the text")
        else:
            text = _concat_rest(parts, it, batch, sum(map(len, batch)))
    budget = _BUDGET.get()
    if budget is not None:
        budget.work += len(text)
        if budget.work > RENDER_MAX_WORK:
            budget.over_budget()
    return text


def _concat_rest(parts: Any, it: Any, batch: list[str], size: int) -> str:
    budget = _BUDGET.get()
    out: list[str] = []
    while batch:
        try:
            if size > RENDER_MAX_CHARS:
                raise too_large("the text")
            if budget is not None:
                budget.step(0)
        except RenderLimitError as exc:
            exc.location = generator_location(parts)
            raise
        out.append("".join(batch))
        batch = list(islice(it, _BATCH))
        size += sum(map(len, batch))
    return "".join(out)
