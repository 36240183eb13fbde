"""``outreach log`` and ``outreach report``: the delivery log and a campaign's report,
read through ``outreach.review`` (which the web pages read too)."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from outreach import review
from outreach.cli.common import State, err_console, out_console
from outreach.domain.errors import InputFileError, OutreachError


def register(app: typer.Typer) -> None:
    app.command("log")(log)
    app.command("report")(report)


class LogFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


class ReportFormat(StrEnum):
    table = "table"
    markdown = "markdown"
    csv = "csv"
    json = "json"
    html = "html"


def _when(option: str, text: str | None, *, end: bool = False):  # type: ignore[no-untyped-def]
    if text is None:
        return None
    try:
        return review.parse_when(text, end=end)
    except InputFileError as exc:
        raise InputFileError(f"{option} {exc.message}", hint=exc.hint) from None


def log(
    ctx: typer.Context,
    campaign: Annotated[str | None, typer.Option(help="Only this campaign.")] = None,
    step: Annotated[
        str | None, typer.Option(help="Only this step: its key, or a plan step's id for all its firings.")
    ] = None,
    wave: Annotated[str | None, typer.Option(help="Only this wave of the plan ('launch' is the first).")] = None,
    channel: Annotated[str | None, typer.Option(help="Only this channel: email, x or press.")] = None,
    event: Annotated[
        str | None,
        typer.Option(help="Only this event: sent, failed, deferred, skipped, uncertain..."),
    ] = None,
    contact: Annotated[str | None, typer.Option(help="Only this contact (email address).")] = None,
    since: Annotated[
        str | None, typer.Option(help="From this date or time on: 2014-09-05, 2014-09-05T10:00 (UTC), "
                                 "2014-09-05T10:00+03:00.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Up to this date (the whole day) or time, as --since.")
    ] = None,
    fmt: Annotated[
        LogFormat, typer.Option("--format", help="table; csv (a header, then one row per event) or "
                                "json (one object per line), both streamed.")
    ] = LogFormat.table,
    limit: Annotated[int, typer.Option(help="At most this many events (the latest); 0: all.")] = 50,
) -> None:
    """Who got what, when, and what failed and why.

    Example: outreach log --campaign cop-2014 --event failed
    Example: outreach log --campaign cop-2014 --since 2014-09-05 --format csv --limit 0
    """
    if limit < 0:
        raise OutreachError(f"--limit {limit}: give a number of events, or 0 for all")
    flt = review.LogFilter(
        campaign=campaign, step=step, wave=wave, channel=channel, event=event, contact=contact,
        since=_when("--since", since), until=_when("--until", until, end=True),
    )  # fmt: skip
    services = ctx.obj.services
    if fmt == LogFormat.table:
        _table(services, flt, limit)
        return
    events = review.iter_log(services, flt, latest=limit)
    _stream(_csv_lines(events) if fmt == LogFormat.csv else _json_lines(events))


def _table(services: Any, flt: review.LogFilter, limit: int) -> None:
    console = out_console()
    summary = Table(title="Steps", title_justify="left")
    for column in ("campaign", "step", "channel", "template", "due (UTC)", "status", "deliveries"):
        summary.add_column(column)
    for row in review.step_rows(services, flt.campaign):
        s = row.step
        if not flt.step_matches(s):
            continue
        summary.add_row(
            escape(s.campaign), escape(s.key), s.channel, escape(s.template),
            f"{s.send_at:%Y-%m-%d %H:%M}", s.status, review.counts_text(row.counts),
        )  # fmt: skip
    console.print(summary)
    if limit:
        events = review.log_page(services, flt, limit=limit)[0][::-1]
        title = f"Events (latest {len(events)})"
    else:
        events = list(review.iter_log(services, flt))
        title = f"Events (all {len(events)})"
    table = Table(title=title, title_justify="left")
    for column in ("at (UTC)", "step", "delivery", "to", "event", "detail"):
        table.add_column(column, overflow="fold")
    for e in events:
        table.add_row(
            f"{e['at']:%Y-%m-%d %H:%M:%S}", escape(e["step"]), str(e["delivery_id"] or ""),
            escape(review.recipient(e)), e["event"], escape(review.detail(e["detail"]) + _what_next(e)),
        )  # fmt: skip
    console.print(table)


class _Lines:
    """Collects what csv.writer writes, one row at a time."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text = text


def _csv_lines(events: Iterable[dict[str, Any]]) -> Iterable[str]:
    buffer = _Lines()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(review.LOG_COLUMNS)
    yield buffer.text
    for e in events:
        writer.writerow(review.log_record(e).values())  # in the order of LOG_COLUMNS
        yield buffer.text


def _json_lines(events: Iterable[dict[str, Any]]) -> Iterable[str]:
    encoder = json.JSONEncoder(ensure_ascii=False, default=str)  # made once: per row it costs
    for e in events:  # the same keys as the csv, with every fact of "detail" as an object
        record: dict[str, Any] = review.log_record(e)
        record["detail"] = e["detail"]
        yield encoder.encode(record) + "\n"


def _stream(lines: Iterable[str]) -> None:
    """Write as the lines come (memory stays flat); a reader that stops early (| head)
    ends the command quietly."""
    out = sys.stdout
    try:
        for line in lines:
            out.write(line)
        out.flush()
    except BrokenPipeError:
        # nothing more reaches the closed pipe at exit (no file descriptor: in tests)
        with open(os.devnull, "w") as devnull, contextlib.suppress(OSError, ValueError):
            os.dup2(devnull.fileno(), out.fileno())
        raise typer.Exit(0) from None


def _what_next(event: dict) -> str:
    """The command for what the log says a person may do next (a fact it stores)."""
    detail, n, campaign = event["detail"], event["delivery_id"], event["campaign"]
    if detail.get("decide") and n is not None:
        return f"; decide: outreach deliveries retry {n}, or outreach deliveries mark-sent {n} --post-id N if it is on X"
    return {
        "resume": f"; continue with: outreach resume {campaign}",
        "approve": f"; approve it: outreach approve {campaign} --by NAME",
        "reschedule": f"; reschedule it (outreach reschedule {campaign} --launch ...) or send it by hand (outreach send)",
    }.get(detail.get("action", ""), "")


def report(
    ctx: typer.Context,
    campaign: Annotated[str, typer.Argument(help="Campaign id, e.g. cop-2014.")],
    fmt: Annotated[
        ReportFormat, typer.Option("--format", help="table (plain text), markdown, csv (one row per "
                                   "plan step and wave), json, or html (one file, charts inline).")
    ] = ReportFormat.table,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write it to this file (default: the screen).",
                                  dir_okay=False)
    ] = None,
) -> None:
    """A campaign's report: per step and wave what was planned, sent, failed (and why),
    skipped, unsubscribed or bounced since, how late, and what was published where.

    Example: outreach report cop-2014
    Example: outreach report cop-2014 --format html --output cop-2014-report.html
    """
    state: State = ctx.obj
    text = review.render_report(review.campaign_report(state.services, campaign), fmt.value)
    if output is None:
        _stream([text])
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise OutreachError(f"cannot write {output}: {exc.strerror or exc}") from None
    err_console().print(f"wrote the {fmt.value} report of {escape(campaign)} to {escape(str(output))}")
