"""``outreach rehearse PLAN --speed 1d=10s``: the whole plan, time compressed, to local
targets only, with a summary at the end (the Quick-start demo is one)."""

from __future__ import annotations

import asyncio
import json
import mailbox
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from outreach.app import Services, build
from outreach.cli.common import State, out_console
from outreach.config import Settings
from outreach.domain.errors import OutreachError
from outreach.ports import StepInfo
from outreach.rehearsal import (
    CompressedClock,
    Rehearsal,
    copy_contacts,
    first_instant,
    parse_speed,
    rehearse,
)


def register(app: typer.Typer) -> None:
    app.command("rehearse")(rehearse_command)


def rehearse_command(
    ctx: typer.Context,
    plan: Annotated[
        Path,
        typer.Argument(help="The plan file, e.g. schedules/cop-guidelines-2014.yaml.", exists=True, dir_okay=False),
    ],
    speed: Annotated[str, typer.Option(help="How much plan time passes per real time: PLAN=REAL.")] = "1d=10s",
) -> None:
    """Rehearse a whole plan with time compressed, to local targets only: email over
    SMTP to a local Maildir, X posts to a file, press releases to a local newsroom.
    The workspace's contacts are copied into the rehearsal's own database; nothing
    reaches anyone. Review it afterwards with 'outreach --rehearsal log'.

    Example: outreach rehearse schedules/cop-guidelines-2014.yaml --speed 1d=10s
    """
    state: State = ctx.obj
    if state.rehearsal:
        raise OutreachError("rehearse already works on its own database; leave out --rehearsal")
    factor = parse_speed(speed)
    source = state.services

    def fill(target: Services) -> str:
        copied = copy_contacts(source, target)
        if copied:
            return f"{copied:,} contacts copied from the workspace's database"
        return import_sample(target)

    run_rehearsal(state.settings, plan, factor, out_console(), fill)


def import_sample(target: Services) -> str:
    """The workspace's contacts/*.csv, for a workspace whose database is empty."""
    from outreach.imports import import_files

    files = sorted((target.settings.workspace / "contacts").glob("*.csv"))
    if not files:
        raise OutreachError("the workspace has no contacts to rehearse with",
                            hint="outreach contacts import contacts/*.csv")  # fmt: skip
    report = import_files(target.contacts, files)
    return f"{report.inserted:,} contacts imported from {', '.join(f.name for f in files)}"


def run_rehearsal(settings: Settings, plan: Path, factor: float, console: Console, fill) -> Rehearsal:  # type: ignore[no-untyped-def]
    from outreach.plans import load

    load(plan)  # a broken plan is refused before anything is set up
    target_settings = settings.rehearsal()
    shutil.rmtree(target_settings.state_dir, ignore_errors=True)
    clock = CompressedClock(start=datetime.now(UTC), factor=factor)
    services = build(target_settings, clock)
    try:
        console.print(f"Rehearsal database: {escape(str(target_settings.state_dir / 'outreach.db'))}")
        console.print(fill(services))
        start = first_instant(services, plan)
        clock.restart(start - timedelta(minutes=1))  # plan time starts just before the first step
        console.print(f"Plan time runs {factor:,.0f}× faster, from {start:%Y-%m-%d %H:%M} UTC; "
                      "each step fires at its instant:")  # fmt: skip

        def on_fire(step: StepInfo, status: str) -> None:
            counts = services.outbox.counts(step_id=step.id)
            size = sum(counts.values())
            console.print(f"  {step.send_at:%Y-%m-%d %H:%M} UTC  {escape(step.key):<44} {step.channel:<5} "
                          f"{status:<8} {size:>5,} {'item(s)' if step.channel != 'email' else 'recipient(s)'}")  # fmt: skip

        report = asyncio.run(rehearse(services, plan, clock, on_fire=on_fire))
        _summary(services, report, console)
        return report
    finally:
        services.close()


def _summary(services: Services, report: Rehearsal, console: Console) -> None:
    """One row per step of the plan and wave (a local step's firings together)."""
    from collections import Counter

    groups: dict[tuple[str, str], list[StepInfo]] = {}
    by_step = services.outbox.counts_by_step(report.campaign)
    for step in services.outbox.steps(report.campaign):
        key = (step.settings.get("plan_step") or step.key, step.settings.get("wave") or "")
        groups.setdefault(key, []).append(step)
    table = Table(title=f"Rehearsal of {report.campaign}: the delivery log by step", title_justify="left")
    for column in ("step", "wave", "channel", "firings", "first (UTC)", "last (UTC)", "deliveries"):
        table.add_column(column)
    for (name, wave), members in groups.items():
        counts: Counter[str] = Counter()
        for step in members:
            counts.update(by_step.get(step.id, {}))
        table.add_row(escape(name), wave, members[0].channel, str(len(members)),
                      f"{members[0].send_at:%Y-%m-%d %H:%M}", f"{members[-1].send_at:%Y-%m-%d %H:%M}",
                      ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())) or "-")  # fmt: skip
    console.print(table)
    totals = services.outbox.counts(campaign=report.campaign)
    console.print("Totals: " + ", ".join(f"{k} {v:,}" for k, v in sorted(totals.items()))
                  + f" in {report.seconds:.1f} s")  # fmt: skip
    state = services.settings.state_dir
    outbox = state / "outbox"
    if outbox.is_dir():
        console.print(f"Email: {len(mailbox.Maildir(outbox, create=False)):,} messages in {escape(str(outbox))}")
    posts = state / "x" / "posts.jsonl"
    if posts.is_file():
        console.print(f"X: what would be posted, in {escape(str(posts))}:")
        for line in posts.read_text("utf-8").splitlines():
            post = json.loads(line)
            reply = f" (reply to {post['in_reply_to']})" if post["in_reply_to"] else ""
            console.print(f"  {escape('[' + post['id'] + ']')}{reply} {escape(post['text'])}")
    newsroom = services.newsroom()
    for release in newsroom.releases():
        console.print(f"Newsroom: {escape(release['headline'])} -> {escape(str(newsroom.folder / (release['slug'] + '.html')))}"
                      f" (feed: {escape(str(newsroom.folder / 'feed.atom'))})")  # fmt: skip
    if report.stuck:
        console.print(f"[yellow]Not finished:[/] {escape(', '.join(report.stuck))}")
    console.print("Review it: outreach --rehearsal log   (or --rehearsal status)")
