"""What every command shares: lazily built settings and services, consoles, selections."""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

from rich.console import Console

from outreach.app import Services, build
from outreach.config import Settings, load_settings
from outreach.domain import audience
from outreach.domain.errors import OutreachError


@cache
def err_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def out_console() -> Console:
    # Off a terminal (pipes, files, CI logs) nothing is wrapped at 80 columns.
    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def progress_wanted() -> bool:
    return sys.stderr.isatty()


class State:
    """Per-invocation state: settings are read once, services built on first use."""

    def __init__(self, workspace: Path | None, rehearsal: bool = False) -> None:
        self._workspace = workspace
        self.rehearsal = rehearsal
        self._settings: Settings | None = None
        self._services: Services | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            settings = load_settings(self._workspace)
            self._settings = settings.rehearsal() if self.rehearsal else settings
        return self._settings

    @property
    def services(self) -> Services:
        if self._services is None:
            self._services = build(self.settings)
        return self._services


def selection(emails: list[str] | None, where: str | None, *, required: bool) -> audience.Expr:
    """The contacts a command acts on: EMAIL arguments and/or a --where expression."""
    parts: list[audience.Expr] = []
    if emails:
        parts.append(audience.Term("email", tuple(emails)))
    if where:
        parts.append(audience.parse(where))
    if required and not parts:
        raise OutreachError(
            "say which contacts: give EMAIL arguments or --where EXPR",
            hint='for example --where "kind:industry country:FJ"',
        )
    return audience.and_(*parts) if parts else audience.EVERYONE
