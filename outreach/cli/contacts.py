"""``outreach contacts ...``: import, look up, change and export the contact store."""

from __future__ import annotations

import csv
import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from outreach.cli.common import State, err_console, out_console, progress_wanted, selection, who
from outreach.cli.contact_view import print_contact
from outreach.domain.columns import parse_overrides
from outreach.domain.contact import FIELDS, Contact
from outreach.domain.errors import NotFoundError, OutreachError, shown
from outreach.imports import MODES, ImportReport, import_files

app = typer.Typer(no_args_is_help=True, help="Import, find, tag and export contacts.")

WhereOpt = Annotated[
    str | None,
    typer.Option(
        "--where",
        "-W",
        help='Segment expression, e.g. "kind:industry country:FJ,WS -tag:responded".',
    ),
]
EmailsArg = Annotated[list[str] | None, typer.Argument(help="Email addresses.", show_default=False)]


@app.command("import")
def import_(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(help="CSV files.", show_default=False)],
    mode: Annotated[
        str, typer.Option(help=f"{' or '.join(MODES)}: update existing contacts or leave them.")
    ] = "upsert",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would change; change nothing.")
    ] = False,
    encoding: Annotated[
        str, typer.Option(help="Text encoding of the files, e.g. cp1252 or latin-1.")
    ] = "utf-8",
    mapping: Annotated[
        list[str] | None,
        typer.Option(
            "--map", help="COLUMN=FIELD for a header outreach does not know (repeatable)."
        ),
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="Kind for rows that have none, e.g. media.")
    ] = None,
    rejects: Annotated[
        Path | None,
        typer.Option(
            help="Write every rejected row to this CSV file (control characters in it "
            "written as escapes such as \\x1b)."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Validation processes (default: one per core; 0: none).", hidden=True
        ),
    ] = None,
) -> None:
    """Import contacts from CSV files (upsert by email).

    An address met more than once in one import (twice in a file, or in two of the
    files; case does not matter) is reported with both lines, and the later row
    wins: its values replace the earlier row's, its blank cells keep them, and tags
    add up, as if the rows were imported one after the other.

    A cell holds at most 1 MiB (1,048,576 characters), in any column, ignored ones
    too: a longer one stops the import, changing nothing, and the error names its
    file and line. A quote inside a cell that does not start with one (Samsung 5"
    Display) is read as a character, as spreadsheet programs write it.

    Example: outreach contacts import contacts/industry-members.csv --map "Membership=ignore"
    """
    state: State = ctx.obj
    overrides = parse_overrides(mapping or [])
    store = state.services.contacts
    progress = (
        Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=err_console(),
            transient=True,
        )
        if progress_wanted()
        else None
    )
    task: list[int] = []

    def on_start(total: int) -> None:
        if progress:
            task.append(progress.add_task("importing", total=total))

    def on_bytes(done: int) -> None:
        if progress and task:
            progress.advance(task[0], done)

    with progress or nullcontext():
        report = import_files(
            store,
            files,
            mode=mode,
            dry_run=dry_run,
            encoding=encoding,
            overrides=overrides,
            default_kind=kind,
            rejects_path=rejects,
            workers=workers,
            on_start=on_start,
            on_bytes=on_bytes,
        )
    _print_report(report, rejects)


def _print_report(report: ImportReport, rejects_path: Path | None) -> None:
    console = out_console()
    title = "Import report (dry run: nothing was changed)" if report.dry_run else "Import report"
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("rows", justify="right")
    for label, value in (
        ("inserted", report.inserted),
        ("updated", report.updated),
        ("unchanged", report.unchanged),
        ("already stored, left alone (insert-only)", report.existing),
        ("rejected", report.rejected),
        ("address met again (later row wins)", report.repeated),
        ("blank rows skipped", report.blank),
    ):
        if value or label in ("inserted", "updated", "unchanged", "rejected"):
            table.add_row(label, f"{value:,}")
    console.print(table)
    if report.rejects:
        console.print(f"Rejected rows (first {len(report.rejects)} of {report.rejected:,}):")
        for r in report.rejects:
            console.print(f"  {_shown(r.file)}:{r.line}: {_shown(r.reason)}")
        if rejects_path:
            console.print(f"All rejected rows are in {_shown(str(rejects_path))}")
        elif report.rejected > len(report.rejects):
            console.print("Pass --rejects rejects.csv to get all of them in a file.")
    if report.repeats:
        console.print(
            f"Addresses met again, the later row wins (first {len(report.repeats)} "
            f"of {report.repeated:,}):"
        )
        for p in report.repeats:
            console.print(
                f"  {_shown(p.earlier_file)}:{p.earlier_line} and {_shown(p.file)}:{p.line}: "
                f"{_shown(p.address)}"
            )
    if report.notes:
        console.print(f"Lines with a quote read as a character (first {len(report.notes)} of {report.noted:,}):")
        for n in report.notes:
            console.print(f"  {_shown(n.file)}:{n.line}: {_shown(n.text)}")


def _shown(text: str) -> str:
    """File names and file content for the terminal: no markup, no raw control bytes."""
    return escape(shown(text))


@app.command("count")
def count(ctx: typer.Context, where: WhereOpt = None) -> None:
    """Count contacts.

    Example: outreach contacts count --where "kind:industry country:FJ"
    """
    state: State = ctx.obj
    typer.echo(state.services.contacts.count(selection(None, where, required=False)))


@app.command("list")
def list_(
    ctx: typer.Context,
    where: WhereOpt = None,
    limit: Annotated[int, typer.Option(help="At most this many (0: all).")] = 50,
    offset: Annotated[int, typer.Option(help="Skip this many first.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List contacts.

    Example: outreach contacts list --where "(kind:partner OR kind:un-agency) lang:fr"
    """
    state: State = ctx.obj
    expr = selection(None, where, required=False)
    found = state.services.contacts.find(expr, limit=limit or None, offset=offset)
    if as_json:
        for c in found:
            typer.echo(json.dumps(_as_json(c), ensure_ascii=False))
        return
    table = Table(show_lines=False)
    for col in ("email", "name", "organization", "kind", "country", "lang", "timezone", "status", "tags"):
        table.add_column(col, overflow="fold")
    for c in found:
        table.add_row(*(escape(v) for v in (c.email, c.name or "", c.organization or "", c.kind, c.country or "",
                                            c.language or "", c.timezone or "", c.status, ", ".join(c.tags))))  # fmt: skip
    console = out_console()
    console.print(table)
    total = state.services.contacts.count(expr)
    if total > len(found):
        console.print(f"{len(found)} of {total:,} shown; use --limit 0 for all, or --offset")


def _as_json(c: Contact) -> dict:
    row: dict = {f: getattr(c, f) for f in FIELDS}
    row["tags"] = list(c.tags)
    row["attrs"] = c.attrs
    row["created_at"] = c.created_at.isoformat()  # type: ignore[attr-defined]
    row["updated_at"] = c.updated_at.isoformat()  # type: ignore[attr-defined]
    return row


@app.command("show")
def show(ctx: typer.Context, email: Annotated[str, typer.Argument(help="Email address.")]) -> None:
    """Show one contact with every field, tag and attribute, and the bounces, complaints
    and auto-replies that came back about it.

    Example: outreach contacts show ana.tuilagi@example.org
    """
    state: State = ctx.obj
    contact = state.services.contacts.get(email)
    if contact is None:
        raise NotFoundError(
            f"no contact with the address {email!r}",
            hint="outreach contacts list --where 'email:*part*'",
        )
    print_contact(state.services, contact, _as_json(contact))


@app.command("export")
def export(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(help="CSV file to write, or - for standard output.")
    ] = Path("-"),
    where: WhereOpt = None,
) -> None:
    """Export contacts as CSV that imports back to the same store.

    Example: outreach contacts export pacific.csv --where "country:FJ,WS,TO"
    """
    state: State = ctx.obj
    store = state.services.contacts
    expr = selection(None, where, required=False)
    attr_keys = sorted({k for c in store.iterate(expr) for k in c.attrs})
    handle = sys.stdout if str(file) == "-" else file.open("w", encoding="utf-8", newline="")
    written = 0
    try:
        writer = csv.writer(handle)
        writer.writerow([*FIELDS, *(f"attr.{k}" for k in attr_keys)])
        for c in store.iterate(expr):
            row = c.as_row()
            writer.writerow([*(row[f] for f in FIELDS), *(c.attrs.get(k, "") for k in attr_keys)])
            written += 1
    finally:
        if handle is not sys.stdout:
            handle.close()
    if handle is not sys.stdout:
        err_console().print(f"exported {written:,} contacts to {escape(str(file))}")


@app.command("tag")
def tag(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The tag.")],
    emails: EmailsArg = None,
    where: WhereOpt = None,
) -> None:
    """Add a tag to contacts.

    Example: outreach contacts tag responded --where "org:*Telecom*"
    """
    from outreach.domain.contact import normalize_tag

    state: State = ctx.obj
    label = normalize_tag(name)
    n = state.services.contacts.add_tag(selection(emails, where, required=True), label)
    typer.echo(f"tagged {n} contact(s) with {label}")


@app.command("untag")
def untag(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The tag.")],
    emails: EmailsArg = None,
    where: WhereOpt = None,
) -> None:
    """Remove a tag from contacts.

    Example: outreach contacts untag responded --where "country:FJ"
    """
    from outreach.domain.contact import normalize_tag

    state: State = ctx.obj
    label = normalize_tag(name)
    n = state.services.contacts.remove_tag(selection(emails, where, required=True), label)
    typer.echo(f"removed {label} from {n} contact(s)")


@app.command("unsubscribe")
def unsubscribe(ctx: typer.Context, emails: EmailsArg = None, where: WhereOpt = None) -> None:
    """Mark contacts unsubscribed: no campaign email reaches them again.

    Example: outreach contacts unsubscribe someone@example.org
    """
    state: State = ctx.obj
    n = state.services.contacts.set_status(selection(emails, where, required=True), "unsubscribed", actor=who(None))
    typer.echo(f"unsubscribed {n} contact(s)")


@app.command("reactivate")
def reactivate(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="Email address of a bounced contact.")],
    reason: Annotated[str, typer.Option("--reason", help="Why the bounce was wrong (kept with the contact).")],
    by: Annotated[str | None, typer.Option(help="Who decides (default: your user name).")] = None,
) -> None:
    """Undo a wrong bounce: a bounced contact becomes active again. Who, when and why
    are kept in its attributes (reactivated_by, reactivated_at, reactivated_reason;
    outreach contacts show lists them). An unsubscribed or complained contact stays so.

    Example: outreach contacts reactivate ana.tuilagi@example.org --reason "the relay refused everyone that day"
    """
    state: State = ctx.obj
    if not (reason := " ".join(reason.split())):
        raise OutreachError("--reason is empty: say why the bounce was wrong", hint='--reason "..."')
    before = state.services.contacts.reactivate(email, reason=reason, by=who(by))
    if before is None:
        raise NotFoundError(f"no contact with the address {email!r}", hint="outreach contacts list --where status:bounced")
    if before not in ("bounced", "active"):
        raise OutreachError(f"{email} is {before}, not bounced: reactivate only undoes a bounce",
                            hint="a person who unsubscribed or complained is not written to again")  # fmt: skip
    typer.echo(f"reactivated {email}: bounced -> active" if before == "bounced" else f"{email} is active: nothing to undo")


@app.command("delete")
def delete(
    ctx: typer.Context,
    emails: EmailsArg = None,
    where: WhereOpt = None,
    erase: Annotated[
        bool,
        typer.Option(
            "--erase",
            help="Erase the person everywhere; keep only a hash keyed with the workspace's "
            "secret key (OUTREACH_SECRET_KEY, or the one made in .outreach/), so no import "
            "or send reaches them again. Keep that key: with another one, erased "
            "addresses could be imported again.",
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete contacts (with --erase: erase them for good).

    Example: outreach contacts delete someone@example.org --erase --yes
    """
    state: State = ctx.obj
    store = state.services.contacts
    expr = selection(emails, where, required=True)
    n = store.count(expr)
    if n == 0:
        typer.echo("no contact matches; nothing deleted")
        return
    if not yes and not typer.confirm(f"{'Erase' if erase else 'Delete'} {n} contact(s)?", err=True):
        raise typer.Exit(1)
    done = store.delete(expr, erase=erase)
    typer.echo(f"{'erased' if erase else 'deleted'} {done} contact(s)")
