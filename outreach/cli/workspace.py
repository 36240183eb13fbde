"""Workspace commands: init, config, db, demo."""

from __future__ import annotations

import dataclasses
import shutil
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
    """Create a new, empty workspace.

    Example: outreach init ~/campaigns/cop-2015
    """
    from outreach.workspace import init_workspace

    for path in init_workspace(directory):
        typer.echo(f"created {path}")
    typer.echo(
        f"next: put CSV files in {directory / 'contacts'} and run "
        f"'outreach -w {directory} contacts import {directory / 'contacts'}/*.csv'"
    )


def config(ctx: typer.Context) -> None:
    """Show the effective settings and where each comes from (secrets redacted).

    Example: OUTREACH_SMTP_URL=smtp://u:p@relay:587 outreach config
    """
    state: State = ctx.obj
    rows = state.settings.described()
    width = max(len(name) for name, _v, _o in rows)
    for name, value, origin in rows:
        typer.echo(f"{name:<{width}}  {value or '-'}    ({origin})")


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


def _demo_send(services, demo_dir: Path, console) -> None:  # type: ignore[no-untyped-def]
    """The industry email to every industry member, over real SMTP to a local Maildir."""
    import asyncio
    import mailbox
    from datetime import UTC, datetime
    from email import policy
    from email.parser import BytesParser

    from outreach.plans import campaign_for

    campaign = campaign_for(services.settings.workspace)
    step = services.outbox.ensure_step(
        campaign=campaign.id, key="demo-industry-email", channel="email", template="cop-industry",
        audience="kind:industry", send_at=datetime.now(UTC),
    )  # fmt: skip
    queued = services.outbox.materialize(step)
    console.rule("Sending the industry email")
    folder = demo_dir / "outbox"
    with services.email_channel(maildir=folder) as (channel, where):
        console.print(f"{queued:,} deliveries queued; sending over SMTP to {escape(where)}")
        started = datetime.now(UTC)

        async def send_all():  # type: ignore[no-untyped-def]
            try:
                return await services.dispatcher(channel).run(until_idle=True)
            finally:
                await channel.close()

        stats = asyncio.run(send_all())
        seconds = (datetime.now(UTC) - started).total_seconds()
    counts = services.outbox.counts(step_id=step.id)
    console.print(
        f"delivery log: {', '.join(f'{k} {v:,}' for k, v in sorted(counts.items()))} "
        f"in {seconds:.1f} s ({stats.sent / max(seconds, 1e-9):,.0f} messages/s)"
    )
    box = mailbox.Maildir(folder, create=False)
    key = next(iter(box.keys()))
    message = BytesParser(policy=policy.default).parsebytes(box.get_bytes(key))
    console.print(f"{len(box):,} messages in {escape(str(folder))}; one of them:")
    for header in ("From", "To", "Subject", "Message-ID", "List-Unsubscribe"):
        console.print(f"  {header}: {escape(str(message[header]))}")
    for event in services.outbox.events(event="sent", limit=3):
        console.print(
            f"  {event['at']:%H:%M:%S} sent to {escape(event['email'])}: {event['detail']['code']} "
            f"{escape(event['detail']['reply'][:40])}"
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


def demo(ctx: typer.Context) -> None:
    """Rehearse the sample COP 2014 launch on a fresh demo database.

    Example: outreach -w . demo
    """
    from outreach.app import build
    from outreach.cli.contacts import _print_report
    from outreach.domain import audience
    from outreach.imports import import_files

    state: State = ctx.obj
    settings = state.settings
    files = sorted((settings.workspace / "contacts").glob("*.csv"))
    if not files:
        raise OutreachError(
            f"no CSV files in {settings.workspace / 'contacts'}",
            hint="run the demo from the outreach repository root, or pass -w to it",
        )
    demo_dir = settings.state_dir / "demo"
    shutil.rmtree(demo_dir, ignore_errors=True)
    demo_settings = dataclasses.replace(
        settings, database_url=f"sqlite:///{demo_dir / 'outreach.db'}"
    )
    console = out_console()
    console.rule("outreach demo: Guidelines for Industry on Child Online Protection, 2014")
    console.print(f"Fresh demo database: {escape(str(demo_dir / 'outreach.db'))}")
    services = build(demo_settings)
    try:
        console.print(f"Importing {', '.join(f.name for f in files)}")
        report = import_files(services.contacts, files)
        _print_report(report, None)
        table = Table(title="Audience segments", title_justify="left")
        table.add_column("segment")
        table.add_column("expression", style="cyan")
        table.add_column("contacts", justify="right")
        for label, expr in DEMO_SEGMENTS:
            n = services.contacts.count(audience.parse(expr))
            table.add_row(label, escape(expr), f"{n:,}")
        console.print(table)
        _demo_send(services, demo_dir, console)
    finally:
        services.close()
    console.print(
        "Explore it: OUTREACH_DATABASE_URL=sqlite:///"
        f"{escape(str(demo_dir / 'outreach.db'))} .venv/bin/outreach log --event sent"
    )
