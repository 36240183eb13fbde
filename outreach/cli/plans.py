"""``outreach plan check`` and ``outreach plan show``."""

from __future__ import annotations

import itertools
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from outreach.app import Services
from outreach.cli.common import State, out_console
from outreach.domain import audience as seg
from outreach.domain.errors import OutreachError
from outreach.domain.plan import Plan, Timeline, audience_of
from outreach.plans import load
from outreach.posting import render_posts
from outreach.scheduling import plan_timeline
from outreach.templating import check_templates

app = typer.Typer(no_args_is_help=True, help="Check a campaign plan and show its timeline.")

# X's posting limits for one account (posts, including replies in a thread).
X_PER_15_MIN = 100
X_PER_DAY = 2_400

PlanArg = Annotated[Path, typer.Argument(help="The plan, e.g. schedules/cop-guidelines-2014.yaml.")]


def audience_size(services: Services, expr: str) -> int:
    return services.contacts.count(seg.and_(seg.parse(expr), seg.Term("status", ("active",))))


@app.command("check")
def check(
    ctx: typer.Context,
    file: PlanArg,
    sample: Annotated[
        int | None, typer.Option(help="Render each email for at most N of its audience.")
    ] = None,
) -> None:
    """Check a plan: its fields, templates (rendered for their audiences), audiences,
    the embargo in every time zone, requirements, and X posting volume.

    Example: outreach plan check schedules/cop-guidelines-2014.yaml
    """
    state: State = ctx.obj
    services = state.services
    plan = load(file)
    console = out_console()
    errors: list[str] = []
    warnings: list[str] = []
    timeline_ = plan_timeline(services, plan)
    for breach in timeline_.breaches:
        errors.append(
            f"{breach} (make it later, or add 'not_before: embargo' to hold those groups until then)"
        )
    links = services.links
    for step in plan.steps:
        kind = {"email": "email", "x": "x", "press": "press"}[step.channel]
        try:
            services.templates.variants(step.template, kind)
        except OutreachError as exc:
            errors.append(f"steps[{step.id}]: {exc.message}")
            continue
        if step.channel != "email":
            report = check_templates(
                services.templates, plan.campaign, [], names=[f"{step.template}.{kind}"]
            )
        else:
            firings = [f for f in timeline_.firings if f.step.id == step.id]
            sizes = [audience_size(services, f.audience) for f in firings]
            if not firings or sum(sizes) == 0:
                errors.append(
                    f"steps[{step.id}]: the audience '{step.audience}' has no active contact"
                )
                continue
            people = itertools.chain.from_iterable(
                services.contacts.iterate(seg.parse(f.audience)) for f in firings
            )
            if sample is not None:
                people = itertools.islice(people, sample)
            report = check_templates(
                services.templates, plan.campaign, people, names=[f"{step.template}.email"],
                urls_for=lambda c, key=step.id: links.for_contact(plan.campaign.id, key, c.id),
            )  # fmt: skip
        for finding in report.findings:
            (errors if finding.level == "error" else warnings).append(
                f"steps[{step.id}]: {finding}"
            )
    warnings += _twice(services, plan)
    x_usage, x_warnings = _x_volume(services, plan, timeline_)
    warnings += x_warnings
    if x_usage:
        console.print(escape(x_usage))
    for message in warnings:
        console.print(f"[yellow]warning:[/] {escape(message)}")
    for message in errors:
        console.print(f"[red]error:[/] {escape(message)}")
    console.print(
        f"{file}: {len(plan.steps)} steps, {len(plan.waves)} wave(s), {len(timeline_.firings)} firings, "
        f"{len(errors)} error(s), {len(warnings)} warning(s)"
    )
    if errors:
        raise typer.Exit(1)


def _twice(services: Services, plan: Plan) -> list[str]:
    """An email step that applies to several waves reaches a contact in each wave whose
    audience has them: the launch wave has no restriction, so a national wave's
    contacts are in it too unless the step's audience leaves them out."""
    out = []
    for step in plan.steps:
        if step.channel != "email":
            continue
        waves = [w for w in plan.waves if step.waves is None or w.id in step.waves]
        for i, first in enumerate(waves):
            for second in waves[i + 1 :]:
                both = seg.and_(seg.parse(audience_of(step, first) or "status:active"),
                                seg.parse(audience_of(step, second) or "status:active"),
                                seg.Term("status", ("active",)))  # fmt: skip
                n = services.contacts.count(both)
                if n:
                    out.append(f"steps[{step.id}]: {n:,} contact(s) are in the audience of both the "
                               f"{first.id} and the {second.id} wave and would get it twice; limit the "
                               f"step's waves, or leave the {second.id} wave's contacts out of its audience")  # fmt: skip
    return out


def _x_volume(services: Services, plan: Plan, line: Timeline) -> tuple[str, list[str]]:
    """The plan's X usage: (a summary line, warnings where it passes a posting limit)."""
    from twitter_text import extract_urls

    posts: list[tuple] = []  # (instant, step id, has a URL)
    for firing in line.firings:
        if firing.step.channel != "x":
            continue
        try:
            rendered = render_posts(services.templates, plan.campaign, firing.step.template)
        except OutreachError:
            rendered = []  # the template check reports it
        posts += [(firing.at, firing.step.id, bool(extract_urls(p.text))) for p in rendered] or [(firing.at, firing.step.id, False)]
    if not posts:
        return "", []
    windows = [(at, step_id, sum(1 for t, _s, _u in posts if at <= t < at + timedelta(minutes=15)),
                sum(1 for t, _s, _u in posts if at <= t < at + timedelta(days=1))) for at, step_id, _u in posts]  # fmt: skip
    peak15 = max(windows, key=lambda w: w[2])
    peak_day = max(windows, key=lambda w: w[3])
    with_url = sum(1 for *_x, url in posts if url)
    summary = (f"X usage: {len(posts)} post(s), {with_url} with a URL; at most {peak15[2]} in 15 minutes "
               f"and {peak_day[3]} in 24 hours (limits: {X_PER_15_MIN} per 15 minutes, {X_PER_DAY:,} per day)")  # fmt: skip
    out = []
    if peak15[2] > X_PER_15_MIN:
        out.append(f"X: {peak15[2]} posts in the 15 minutes from {peak15[0]:%Y-%m-%d %H:%M} UTC "
                   f"(steps around {peak15[1]}); X allows {X_PER_15_MIN}: the rest wait for X's reset")  # fmt: skip
    if peak_day[3] > X_PER_DAY:
        out.append(f"X: {peak_day[3]} posts in the day from {peak_day[0]:%Y-%m-%d %H:%M} UTC; "
                   f"X allows {X_PER_DAY:,} a day")  # fmt: skip
    return summary, out


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
    plan = load(file)
    line = plan_timeline(services, plan)
    zone = plan.campaign.launch.tzinfo
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
