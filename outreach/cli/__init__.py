"""Command line: a thin layer over the services. Errors become messages here only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from typer.core import TyperGroup

from outreach import __version__
from outreach.cli import bounces as bounces_cli
from outreach.cli import contacts as contacts_cli
from outreach.cli import deliveries as deliveries_cli
from outreach.cli import plans as plans_cli
from outreach.cli import rehearse as rehearse_cli
from outreach.cli import review as review_cli
from outreach.cli import schedule as schedule_cli
from outreach.cli import sending as sending_cli
from outreach.cli import templates as templates_cli
from outreach.cli import users as users_cli
from outreach.cli import web as web_cli
from outreach.cli import workspace as workspace_cli
from outreach.cli.common import State, err_console
from outreach.cli.phrases import hint_for
from outreach.domain.errors import OutreachError


class _Group(TyperGroup):
    """Turns an ``OutreachError`` from any command into a clear message and exit code."""

    def invoke(self, ctx: typer.Context):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except OutreachError as exc:
            # the message is text, never markup: "steps[industry-email]" stays as it is
            err_console().print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False)
            hint = hint_for(exc)
            if hint:
                err_console().print(f"  [yellow]hint:[/] {escape(hint)}", highlight=False)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=_Group,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
    help="Plan a campaign launch, reach its stakeholders, and review every delivery.\n\n"
    "Example: outreach contacts import contacts/*.csv",
    epilog="Run 'outreach COMMAND --help' for examples.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"outreach {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    workspace: Annotated[
        Path | None,
        typer.Option(
            "--workspace",
            "-w",
            help="Workspace folder (default: $OUTREACH_WORKSPACE or the current folder): one "
            "with outreach.toml, contacts/, templates/ or schedules/ ('outreach init DIR' makes "
            "one). Commands refuse any other folder, except init, config and db; with "
            "OUTREACH_DATABASE_URL set, contacts, log, report, deliveries, pause, cancel, users, serve, bounces, run and status run anywhere.",
            file_okay=False,
        ),
    ] = None,
    rehearsal: Annotated[
        bool,
        typer.Option("--rehearsal", help="Work on the last rehearsal's database (see 'outreach rehearse')."),
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    ctx.obj = State(workspace, rehearsal, command=ctx.invoked_subcommand)


workspace_cli.register(app)
app.add_typer(contacts_cli.app, name="contacts")
app.add_typer(templates_cli.app, name="templates")
app.add_typer(plans_cli.app, name="plan")
app.command("preview")(templates_cli.preview)
sending_cli.register(app)
review_cli.register(app)
app.add_typer(deliveries_cli.app, name="deliveries")
app.add_typer(bounces_cli.app, name="bounces")
rehearse_cli.register(app)
schedule_cli.register(app)
app.add_typer(users_cli.app, name="users")
web_cli.register(app)


def main() -> None:
    app()
