"""Workspace commands: init, config, db, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from outreach.cli.common import State, out_console
from outreach.domain.errors import OutreachError


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("config")(config)
    db = typer.Typer(no_args_is_help=True, help="The database: create, upgrade, inspect.")
    db.command("upgrade")(db_upgrade)
    app.add_typer(db, name="db")
    app.command("demo")(demo)


def init(directory: Annotated[Path, typer.Argument(help="Folder for the new workspace.")]) -> None:
    """Create a new workspace, with a small example launch to start from.

    The example: a plan (schedules/my-launch.yaml), its email (with a French variant),
    X and press templates, a dozen invented contacts, and a commented outreach.toml.
    It rehearses as it is; then put your own in its place. A folder that is a
    workspace already is refused.

    Example: outreach init ~/campaigns/cop-2015
    """
    from outreach.workspace import STARTER_PLAN, init_workspace

    created = init_workspace(directory)
    for path in created:
        if path.is_dir() or path.parent.resolve() == directory.resolve():
            typer.echo(f"created {path}{'/' if path.is_dir() else ''}")
    files = [p for p in created if p.is_file() and p.parent.resolve() != directory.resolve()]
    typer.echo(f"created {len(files)} example files in contacts/, templates/ and schedules/")
    typer.echo(
        f"next, in {directory}:\n"
        f"  outreach contacts import contacts/*.csv\n"
        f"  outreach plan check {STARTER_PLAN}\n"
        f"  outreach rehearse {STARTER_PLAN} --speed 1d=5s\n"
        f"then put your own contacts, words and dates in place of the examples"
    )


def config(ctx: typer.Context) -> None:
    """Show the effective settings and where each comes from (secrets redacted).

    Works in any folder: says when the folder is not a workspace, and warns when
    unsubscribe links would point at this machine while mail goes to a relay.

    Example: OUTREACH_SMTP_URL=smtp://u:p@relay:587 outreach config
    """
    from outreach.links import loopback_link_warning

    state: State = ctx.obj
    rows = state.settings.described()
    width = max(len(name) for name, _v, _o in rows)
    for name, value, origin in rows:
        typer.echo(f"{name:<{width}}  {value or '-'}    ({origin})")
    warning = loopback_link_warning(state.settings)
    if warning:
        typer.echo(f"warning: {warning}")
    problem = state.workspace_problem()
    if problem is not None:
        typer.echo(f"note: {problem.message}; commands that need a workspace refuse to run there")
        typer.echo(f"  hint: {problem.hint}")


def db_upgrade(ctx: typer.Context) -> None:
    """Create the database or upgrade its schema to this version of outreach.

    Example: OUTREACH_DATABASE_URL=postgresql+psycopg://outreach@localhost/outreach outreach db upgrade
    """
    from outreach.db.engine import make_engine, redact_url, upgrade

    state: State = ctx.obj
    engine = make_engine(state.settings.database_url)
    try:
        before, after = upgrade(engine)
    finally:
        engine.dispose()
    where = redact_url(state.settings.database_url)
    if before == after:
        typer.echo(f"{where}: schema is current ({', '.join(sorted(after))})")
    else:
        typer.echo(
            f"{where}: upgraded {', '.join(sorted(before)) or 'empty'} -> {', '.join(sorted(after))}"
        )


DEMO_SEGMENTS = (
    ("industry members", "kind:industry"),
    ("industry in Pacific Island countries", "kind:industry country:FJ,WS,TO,VU,SB,PG,KI,CK,NU,TV"),
    ("mobile operators and ISPs", 'kind:industry sector:"mobile operator",isp'),
    ("partners and UN agencies", "kind:partner OR kind:un-agency"),
    ("French speakers", "lang:fr"),
    ("media", "kind:media"),
    ("governments", "kind:government"),
    ("contacts with an X handle", "has:x"),
    ("not yet responded", "-tag:responded kind:industry"),
)


SAMPLE_PLAN = "schedules/cop-guidelines-2014.yaml"


def demo(
    ctx: typer.Context,
    speed: Annotated[str, typer.Option(help="How much plan time passes per real time.")] = "1w=10s",
) -> None:
    """Rehearse the sample COP 2014 launch end to end, on its own fresh database.

    The contacts imported, the plan's every step fired on compressed time (a week of
    the plan in ten seconds), email over SMTP to a local Maildir, the X thread to a
    file, the press release to a local newsroom; a summary at the end. No credentials
    needed. Run it in the outreach repository (its sample campaign).

    Example: outreach -w . demo
    """
    from outreach.cli.rehearse import import_sample, run_rehearsal
    from outreach.domain import audience
    from outreach.rehearsal import parse_speed

    state: State = ctx.obj
    settings = state.settings
    plan = settings.workspace / SAMPLE_PLAN
    if not plan.is_file() or not any((settings.workspace / "contacts").glob("*.csv")):
        raise OutreachError(
            f"no sample plan ({SAMPLE_PLAN}) or contacts/*.csv in {settings.workspace}",
            hint="run the demo from the outreach repository root, or pass -w to it",
        )
    factor = parse_speed(speed)
    console = out_console()
    console.rule("outreach demo: Guidelines for Industry on Child Online Protection, 2014")

    def fill(services) -> str:  # type: ignore[no-untyped-def]
        console.print(import_sample(services))
        table = Table(title="Audience segments", title_justify="left")
        table.add_column("segment")
        table.add_column("expression", style="cyan")
        table.add_column("contacts", justify="right")
        for label, expr in DEMO_SEGMENTS:
            table.add_row(label, escape(expr), f"{services.contacts.count(audience.parse(expr)):,}")
        console.print(table)
        return "Now the launch, step by step."

    run_rehearsal(settings, plan, factor, console, fill)
