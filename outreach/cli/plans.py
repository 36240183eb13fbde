"""``outreach plan check`` and ``outreach plan show``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from outreach.checks import audience_size, check_plan
from outreach.cli.common import State, out_console
from outreach.domain.plan import Plan
from outreach.plans import load
from outreach.scheduling import plan_timeline, scheduled_plan

app = typer.Typer(no_args_is_help=True, help="Check a campaign plan and show its timeline.")

PlanArg = Annotated[Path, typer.Argument(help="The plan, e.g. schedules/cop-guidelines-2014.yaml.")]


@app.command("check")
def check(
    ctx: typer.Context,
    file: PlanArg,
    sample: Annotated[
        int | None, typer.Option(help="Render each email for at most N of its audience.")
    ] = None,
) -> None:
    """Check a plan: its fields, templates (rendered for their audiences), audiences,
    the sender, the embargo in every time zone, requirements, and X posting volume.
    'schedule', 'reschedule' and 'rehearse' refuse a plan with errors.

    Example: outreach plan check schedules/cop-guidelines-2014.yaml
    """
    state: State = ctx.obj
    plan, moved = scheduled_plan(state.services, load(file))
    report = check_plan(state.services, plan, sample=sample)
    console = out_console()
    if moved:
        console.print(f"{escape(plan.campaign.id)} is scheduled and was rescheduled: {escape(moved)}")
    if report.x_usage:
        console.print(escape(report.x_usage))
    for message in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(message)}")
    for message in report.errors:
        console.print(f"[red]error:[/] {escape(message)}")
    console.print(
        f"{file}: {len(plan.steps)} steps, {len(plan.waves)} wave(s), {len(report.timeline.firings)} firings, "
        f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)"
    )
    if report.errors:
        raise typer.Exit(1)


@app.command("show")
def show(
    ctx: typer.Context,
    file: PlanArg,
    ics: Annotated[
        Path | None, typer.Option(help="Also write the timeline as an iCalendar file.")
    ] = None,
) -> None:
    """Show every firing of a plan: when (UTC and the launch's zone), what, to how many.

    Example: outreach plan show schedules/cop-guidelines-2014.yaml --ics launch.ics
    """
    state: State = ctx.obj
    services = state.services
    plan, moved = scheduled_plan(services, load(file))
    line = plan_timeline(services, plan)
    zone = plan.campaign.launch.tzinfo
    if moved:
        out_console().print(f"{escape(plan.campaign.id)} is scheduled and was rescheduled: {escape(moved)}")
    table = Table(title=f"{plan.campaign.name}: timeline", title_justify="left")
    for column in ("UTC", f"{zone}", "wave", "step", "channel", "template", "audience", "zones"):
        table.add_column(column, overflow="fold")
    rows = []
    for f in line.firings:
        size = audience_size(services, f.audience) if f.step.channel == "email" else None
        zones = ", ".join(f.zones[:4]) + (f" +{len(f.zones) - 4}" if len(f.zones) > 4 else "")
        if f.clamped_from:
            zones += " (held to the embargo)"
        rows.append((f, size))
        table.add_row(
            f"{f.at:%Y-%m-%d %H:%M}", f"{f.at.astimezone(zone):%a %d %b %H:%M}", f.wave.id, escape(f.step.id),
            f.step.channel, escape(f.step.template), "-" if size is None else f"{size:,}", escape(zones),
        )  # fmt: skip
    out_console().print(table)
    if ics:
        _write_ics(plan, rows, ics)
        out_console().print(f"calendar written to {escape(str(ics))}")


def _write_ics(plan: Plan, rows: list, path: Path) -> None:
    from icalendar import Calendar, Event

    calendar = Calendar()
    calendar.add("prodid", "-//outreach//campaign timeline//EN")
    calendar.add("version", "2.0")
    calendar.add("x-wr-calname", plan.campaign.name)
    for firing, size in rows:
        event = Event()
        event.add("uid", f"{plan.campaign.id}.{firing.key}@outreach")
        event.add("dtstamp", plan.campaign.launch)
        event.add("dtstart", firing.at)
        event.add("dtend", firing.at + timedelta(minutes=15))
        who = f" to {size:,} contacts" if size is not None else ""
        event.add("summary", f"{firing.step.id} ({firing.step.channel}){who}")
        event.add(
            "description",
            f"template {firing.step.template}; audience: {firing.audience or 'everyone'}; wave {firing.wave.id}",
        )
        calendar.add_component(event)
    path.write_bytes(calendar.to_ical())
