"""``outreach bounces ...``: read mail that came back (bounces, complaints,
auto-replies) from files, standard input or the IMAP bounce mailbox, and list it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from outreach import bounces
from outreach.cli.common import State, err_console, out_console, progress_wanted
from outreach.domain.errors import NotFoundError, OutreachError
from outreach.inbound import read_paths

app = typer.Typer(no_args_is_help=True, help="Read bounces, complaints and auto-replies; list them.")


@contextmanager
def _counting(what: str) -> Iterator[None]:
    """A line on a terminal while the messages are read."""
    if not progress_wanted():
        yield
        return
    with err_console().status(f"{what}..."):
        yield


def _said(tally: bounces.Tally) -> str:
    """What a read did, in one line, with the commands that show the rest."""
    if not tally.read:
        return "no message to read"
    kinds = ", ".join(f"{tally.kinds[k]} {k.replace('_', ' ')}" for k in bounces.KINDS if tally.kinds[k])
    parts = [f"read {tally.read} message(s)" + (f": {kinds}" if kinds else "")]
    if tally.again:
        parts.append(f"{tally.again} read before, nothing done again")
    if tally.changed:
        parts.append(", ".join(f"{n} contact(s) now {s}" for s, n in sorted(tally.changed.items())))
    if tally.unmatched:
        parts.append(f"{tally.unmatched} match no delivery (outreach bounces list --unmatched)")
    if tally.kinds["unparseable"]:
        parts.append(f"{tally.kinds['unparseable']} set aside unread (outreach bounces list --kind unparseable)")
    if tally.stopped:
        parts.append("stopped before the end: run it again for the rest")
    return "; ".join(parts)


@app.command("ingest")
def ingest(
    ctx: typer.Context,
    paths: Annotated[list[str], typer.Argument(help="A Maildir folder, an mbox file, .eml files or a folder "
                                               "of them, or - for one message on standard input.",
                                               show_default=False)],
) -> None:
    """Read returned mail from files, or from standard input (-), and act on it: a hard
    bounce or a complaint suppresses the contact, soft bounces are counted, auto-replies
    logged. A Maildir's messages move to its .Processed folder once stored. The same
    message read twice does nothing the second time.

    Pipe the bounce address into it from the mail server, e.g. in /etc/aliases:
    bounces: "|outreach -w /srv/outreach bounces ingest -"

    Example: outreach bounces ingest -
    """
    state: State = ctx.obj
    services = state.services
    messages = read_paths(paths)  # every path checked before anything is read
    with _counting("reading returned mail"):
        tally = bounces.ingest(services, messages)
    typer.echo(_said(tally))


@app.command("fetch")
def fetch(
    ctx: typer.Context,
    limit: Annotated[int | None, typer.Option(help="At most this many messages.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Also the messages a person has opened "
                                        "(by default only unseen ones).")] = False,
    check: Annotated[bool, typer.Option("--check", help="Check the settings and stop: the URL can be "
                                        "used and a password is set. Connects to nothing.")] = False,
) -> None:
    """Read the IMAP bounce mailbox and act on what came back; each message moves to the
    processed folder (bounces.processed_folder, default Processed) once it is stored.
    The mailbox is OUTREACH_BOUNCE_IMAP_URL (imaps://user@host/INBOX), its password
    OUTREACH_BOUNCE_IMAP_PASSWORD (never stored). 'outreach run' also does this every
    bounces.fetch_minutes (default 5).

    Example: OUTREACH_BOUNCE_IMAP_URL=imaps://bounces@mail.example.org/INBOX OUTREACH_BOUNCE_IMAP_PASSWORD=secret outreach bounces fetch --check
    """
    state: State = ctx.obj
    services = state.services
    if limit is not None and limit < 1:
        raise OutreachError(f"--limit {limit}: give a number of messages above 0")
    if check:
        box = bounces.mailbox(services.settings)
        which = "all the" if every else "the unseen"
        typer.echo(f"would read {which} messages of {box.folder} as {box.user} at {box.host}:{box.port} "
                   f"({_SECURITY[box.tls]}), moving each to {box.processed}; the password is set; "
                   "not connecting (--check)")
        return
    with _counting(f"reading {services.settings.bounce_imap_url or 'the bounce mailbox'}"):
        tally = bounces.fetch(services, limit=limit, every=every)
    typer.echo(_said(tally))


_SECURITY = {"tls": "TLS", "starttls": "STARTTLS", "none": "no TLS: loopback only"}


@app.command("list")
def list_(
    ctx: typer.Context,
    unmatched: Annotated[bool, typer.Option("--unmatched", help="Only messages that name someone "
                                            "no delivery matches (kept for a person).")] = False,
    kind: Annotated[str | None, typer.Option(help=f"Only this kind: {', '.join(bounces.KINDS)}.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many messages (the latest).")] = 50,
) -> None:
    """How many returned messages of each kind were read, and the latest of them: who
    each is about, the delivery it matched (and how) and what it did, or why not.

    Example: outreach bounces list --unmatched
    """
    state: State = ctx.obj
    if kind is not None and kind not in bounces.KINDS:
        raise OutreachError(f"--kind {kind!r}: one of {', '.join(bounces.KINDS)}")
    counts, rows = bounces.listing(state.services, kind=kind, unmatched=unmatched, limit=max(limit, 1))
    console = out_console()
    console.print("by kind: " + ", ".join(f"{k.replace('_', ' ')} {counts.get(k, 0):,}" for k in bounces.KINDS)
                  + f"; unmatched {counts.get('unmatched', 0):,}")  # fmt: skip
    if not rows:
        console.print("no returned message" + (" fits" if kind or unmatched else " read yet"))
        return
    table = Table()
    for column in ("id", "read (UTC)", "kind", "about", "what it did", "why"):
        table.add_column(column, overflow="fold")
    for row in rows:
        about = "; ".join(r["address"] or "(no address)" for r in row["recipients"]) or "-"
        did = "; ".join(_did(r) for r in row["recipients"]) or ("set aside" if row["kind"] == "unparseable" else "-")
        why = row["reason"] + (f" [{row['source']}]" if row["kind"] == "unparseable" or row["unmatched"] else "")
        table.add_row(str(row["id"]), f"{row['received_at']:%Y-%m-%d %H:%M}", row["kind"], escape(about),
                      escape(did), escape(why))  # fmt: skip
    console.print(table)


@app.command("show")
def show(
    ctx: typer.Context,
    message: Annotated[int, typer.Argument(help="Its id (outreach bounces list shows them).")],
    raw: Annotated[bool, typer.Option("--raw", help="Write the message itself to standard output "
                                      "(kept when it is unparseable or matches no delivery).")] = False,
) -> None:
    """One returned message: what it is, whom it is about, what it did.

    Example: outreach bounces show 1
    """
    state: State = ctx.obj
    row = state.services.inbound.message(message)
    if row is None:
        raise NotFoundError(f"no returned message {message}", code="unknown_inbound")
    if raw:
        if row["raw"] is None:
            raise OutreachError(f"returned message {message} was not kept: only unparseable and unmatched ones are",
                                code="inbound_not_kept", inbound=message)  # fmt: skip
        sys.stdout.buffer.write(row["raw"])
        sys.stdout.buffer.flush()
        return
    console = out_console()
    console.print(f"returned message {message}: [bold]{row['kind']}[/] ({escape(row['format'] or '-')}), "
                  f"read {row['received_at']:%Y-%m-%d %H:%M:%S} UTC from {escape(row['source'])}")  # fmt: skip
    console.print(f"why: {escape(row['reason'])}")
    for name in ("dated", "message_id", "original_message_id", "feedback_type"):
        if row[name]:
            console.print(f"{name.replace('_', ' ')}: {escape(str(row[name]))}")
    for r in row["recipients"]:
        console.print(f"  {escape(r['address'] or '(no address)')}: {r['kind']}"
                      + (f" {r['status']}" if r["status"] else "") + f"; {escape(_did(r))}"
                      + (f"; {escape(r['diagnostic'])}" if r["diagnostic"] else ""))  # fmt: skip
    if row["raw"] is not None:
        console.print(f"kept: outreach bounces show {message} --raw")


def _did(r: dict) -> str:
    if r["effect"] == "unmatched":
        return "no delivery matches"
    return f"{r['effect']} on delivery {r['delivery_id']} (by {r['matched_by'].replace('_', '-')})"
