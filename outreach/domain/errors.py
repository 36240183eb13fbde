"""Errors that reach a person: each says what is wrong, where, and what to do.

Messages quote what people wrote (a CSV header, a cell, a plan's value); they reach a
terminal, so what is quoted is shown with its unprintable characters escaped.
"""

from __future__ import annotations


def shown(text: str) -> str:
    """``text`` as a message may quote it: every character that is not printable (ESC,
    NUL, CR, LF, TAB, C1 controls, bidirectional overrides, invisible spaces) written
    as its escape (``\\x1b``, ``\\n``, ``\\u202e``), the rest as it is."""
    if text.isprintable():
        return text
    return "".join([c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text])


def _lines_shown(text: str) -> str:
    """``shown`` for each line of a message that has several (a pointer, a hint)."""
    if text.isprintable():
        return text
    return "\n".join(shown(line) for line in text.split("\n"))


class OutreachError(Exception):
    """Base class. The CLI prints the message and exits with ``exit_code``.

    ``code`` names the situation and ``facts`` carry its details (a campaign id, a
    delivery id, a plan file), so that the edge (the CLI, a web page) can say what to do
    in its own terms: a command to run, a link to follow. ``hint`` is for advice that
    is the same everywhere (a file's syntax, a setting's form)."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None,
                 **facts: object) -> None:  # fmt: skip
        # whatever a caller quoted, no raw control byte reaches the terminal
        message = _lines_shown(message)
        hint = None if hint is None else _lines_shown(hint)
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code
        self.facts = facts

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(OutreachError):
    """Settings file or environment value is wrong."""


class InputFileError(OutreachError):
    """A file given by the user cannot be read as what it should be (CSV, YAML...)."""


class SegmentError(OutreachError):
    """A segment expression cannot be parsed or names something unknown."""

    def __init__(self, message: str, *, expression: str, position: int, hint: str | None = None):
        # the caret stays under its character when characters before it are escaped
        before = len(shown(expression[:position]))
        pointer = f"\n    {shown(expression)}\n    {' ' * before}^"
        super().__init__(f"{message} (at position {position}){pointer}", hint=hint)
        self.expression = expression
        self.position = position


class ContactValueError(OutreachError):
    """A contact field holds a value that cannot be stored."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFoundError(OutreachError):
    """A named thing (contact, campaign...) does not exist."""


class DatabaseError(OutreachError):
    """The database cannot be opened or migrated."""


class TemplateError(OutreachError):
    """A template cannot be compiled or rendered; names the file and line."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 hint: str | None = None) -> None:  # fmt: skip
        where = f"{file}:{line}: " if file and line else f"{file}: " if file else ""
        super().__init__(f"{where}{message}", hint=hint)
        self.file = file
        self.line = line
        self.detail = message


class TemplateSecurityError(TemplateError):
    """A template tried to reach something the sandbox forbids."""
