"""``outreach users``: the staff who sign in to the web pages, each with a role:
viewers read; operators also pause, resume, retry and resolve; admins also approve and
cancel. Passwords are kept as argon2 hashes only."""

from __future__ import annotations

import secrets
import sys
from enum import StrEnum
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from outreach.cli.common import State, err_console, out_console
from outreach.domain.errors import OutreachError

app = typer.Typer(no_args_is_help=True, help="Staff who sign in to the web pages ('outreach serve').")


class Role(StrEnum):
    viewer = "viewer"
    operator = "operator"
    admin = "admin"


def _users(ctx: typer.Context):  # type: ignore[no-untyped-def]
    state: State = ctx.obj
    return state.services.users


def _password(stdin: bool, generate: bool) -> tuple[str, bool]:
    """The new password, and whether it was made here (then it is shown once)."""
    from outreach.domain.users import password_problem

    if stdin and generate:
        raise OutreachError("give --password-stdin or --generate, not both")
    if generate:
        return secrets.token_urlsafe(18), True
    if stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    elif sys.stdin.isatty():
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    else:
        raise OutreachError("no terminal to ask for the password on",
                            hint="pipe it in with --password-stdin, or let outreach make one with --generate")  # fmt: skip
    problem = password_problem(password)
    if problem:
        raise OutreachError(f"{problem}; nothing was changed")
    return password, False


def _show_made(name: str, password: str) -> None:
    err_console().print(f"password of {escape(name)} (shown once, keep it safe):")
    typer.echo(password)


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The name to sign in with (lower case; letters, digits, . _ @ -).")],
    role: Annotated[Role, typer.Option("--role", help="viewer: reads; operator: also pauses, resumes, "
                                       "retries, resolves; admin: also approves and cancels.")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from the "
                                                 "first line of standard input.")] = False,
    generate: Annotated[bool, typer.Option("--generate", help="Make a strong password and show it once.")] = False,
) -> None:
    """Add a user of the web pages. The password is asked twice (hidden), read from
    standard input with --password-stdin, or made with --generate; it needs at least
    10 characters.

    Example: outreach users add sarah --role admin --generate
    """
    password, made = _password(password_stdin, generate)
    user = _users(ctx).add(name, role.value, password)
    out_console().print(f"added {escape(user.name)} ({user.role})")
    if made:
        _show_made(user.name, password)


@app.command("list")
def list_users(ctx: typer.Context) -> None:
    """The users of the web pages and their roles.

    Example: outreach users list
    """
    users = _users(ctx).all()
    if not users:
        out_console().print("no user yet: outreach users add NAME --role admin")
        return
    table = Table()
    for column in ("name", "role", "added (UTC)"):
        table.add_column(column)
    for u in users:
        table.add_row(escape(u.name), u.role, f"{u.created_at:%Y-%m-%d %H:%M}")
    out_console().print(table)


@app.command("passwd")
def passwd(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Whose password.")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from the "
                                                 "first line of standard input.")] = False,
    generate: Annotated[bool, typer.Option("--generate", help="Make a strong password and show it once.")] = False,
) -> None:
    """Set a user's password; every web session of theirs ends.

    Example: outreach users passwd sarah --generate
    """
    users = _users(ctx)
    user = users.require(name)
    password, made = _password(password_stdin, generate)
    users.set_password(user.name, password)
    out_console().print(f"new password for {escape(user.name)}; their sessions have ended")
    if made:
        _show_made(user.name, password)


@app.command("remove")
def remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Who.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove a user: they can no longer sign in, and their sessions end. What they
    approved keeps their name.

    Example: outreach users remove sarah --yes
    """
    users = _users(ctx)
    user = users.require(name)
    if not yes and not typer.confirm(f"Remove the user {user.name}?", err=True):
        raise typer.Exit(1)
    users.remove(user.name)
    out_console().print(f"removed {escape(user.name)}")
