"""What every command shares: lazily built settings and services, consoles, selections."""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

from rich.console import Console

from outreach.app import Services, build
from outreach.config import (
    SETTINGS_FILE,
    WORKSPACE_FOLDERS,
    Settings,
    load_settings,
    workspace_markers,
)
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


# Commands that work in any folder: they make a workspace or a database on purpose
# (init, db upgrade) or only say which settings apply and where they were looked for.
ANYWHERE = frozenset({"init", "config", "db"})
# Commands that use nothing but the database: with OUTREACH_DATABASE_URL set they also
# run outside a workspace (a machine with the shared database). Every other command
# reads the workspace's files (templates, plans) or keeps state in its .outreach/.
DATABASE_ONLY = frozenset({"contacts", "log", "report", "deliveries", "pause", "cancel", "users", "serve", "bounces", "run", "status"})

_ORIGIN = {
    "--workspace": "given with -w",
    "env OUTREACH_WORKSPACE": "from OUTREACH_WORKSPACE",
    "current folder": "the current folder",
}


def not_a_workspace(
    settings: Settings, command: str | None, rehearsal: bool
) -> OutreachError | None:
    """Why ``command`` may not run in ``settings.workspace``, or None when it may: a
    folder without outreach.toml, contacts/, templates/ or schedules/ is no workspace,
    and a command there would only make an empty database in a stray folder. The
    message names the folder and why; the hint says how to get a workspace."""
    folder = settings.workspace
    if workspace_markers(folder):
        return None
    explicit_db = settings.origin.get("database_url", "").startswith("env ")
    if command in DATABASE_ONLY and explicit_db and not rehearsal:
        return None
    origin = _ORIGIN.get(settings.origin.get("workspace", ""), "")
    where = f"{folder} ({origin})" if origin else str(folder)
    names = [SETTINGS_FILE, *(f"{name}/" for name in WORKSPACE_FOLDERS)]
    if not folder.exists():
        message = f"{where} does not exist"
    else:
        message = (f"{where} is not an outreach workspace "
                   f"(it has no {', '.join(names[:-1])} or {names[-1]})")  # fmt: skip
    hint = "make one with 'outreach init DIR', or name one with -w DIR or OUTREACH_WORKSPACE=DIR"
    if command in DATABASE_ONLY and not rehearsal:
        hint += f" (with OUTREACH_DATABASE_URL set, 'outreach {command}' runs in any folder)"
    return OutreachError(message, hint=hint)


class State:
    """Per-invocation state: settings are read once, services built on first use.

    ``command`` is the top-level command being run: unless it is one that works
    anywhere, settings (and so the database) are refused outside a workspace."""

    def __init__(
        self, workspace: Path | None, rehearsal: bool = False, command: str | None = None
    ) -> None:
        self._workspace = workspace
        self.rehearsal = rehearsal
        self.command = command
        self._loaded: Settings | None = None
        self._settings: Settings | None = None
        self._services: Services | None = None

    def _load(self) -> Settings:
        if self._loaded is None:
            self._loaded = load_settings(self._workspace)
        return self._loaded

    def workspace_problem(self) -> OutreachError | None:
        """Why this command may not run where it was asked to, or None."""
        return not_a_workspace(self._load(), self.command, self.rehearsal)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            settings = self._load()
            if self.command not in ANYWHERE:
                problem = self.workspace_problem()
                if problem is not None:
                    raise OutreachError(
                        f"{problem.message}; nothing was created", hint=problem.hint
                    )
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


def who(by: str | None) -> str:
    """Who decides: the name given with --by, or the user's own."""
    import getpass

    return by or getpass.getuser()
