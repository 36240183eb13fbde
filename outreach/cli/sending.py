"""``outreach send``, ``run`` and ``resume`` (``log``: cli/review.py)."""

from __future__ import annotations

import contextlib
import hashlib
import os
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from outreach import guards, runner
from outreach.app import Services
from outreach.channels.smtp import parse_smtp_url
from outreach.cli.common import State, err_console, out_console, progress_wanted
from outreach.domain import audience
from outreach.domain.campaign import parse_launch
from outreach.domain.errors import ConfigError, InputFileError, NotFoundError, OutreachError
from outreach.domain.sender import HINT as SENDER_HINT
from outreach.domain.sender import sender_problem
from outreach.leadership import Role, Timing, live_senders
from outreach.links import loopback_link_warning
from outreach.plans import default_campaign_id, scan_plans
from outreach.snapshots import template_sources
from outreach.templating import check_templates


def register(app: typer.Typer) -> None:
    app.command("send")(send)
    app.command("run")(run)
    app.command("resume")(resume)


def _parse_at(text: str | None) -> datetime:
    if not text:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text)
        if value.tzinfo is None:
            raise InputFileError(
                f"--at {text!r} has no time zone",
                hint="2014-09-05T10:00+03:00 or '2014-09-05 10:00 Europe/Istanbul'",
            )
        return value.astimezone(UTC)
    except ValueError:
        return parse_launch(text, source="--at").astimezone(UTC)


def _default_campaign(services: Services, template: str) -> str:
    """The campaign of the plan whose steps use the template (the only plan's), or
    'adhoc' when none does."""
    return default_campaign_id(services.settings.workspace, f"{template}.email") or "adhoc"


def _campaign_of(services: Services, given: str | None, template: str) -> str:
    """The campaign an ad hoc send is logged under: the one given (scheduled, or the
    id of a plan in schedules/), or else the workspace's only plan's, or 'adhoc'."""
    if given is None:
        return _default_campaign(services, template)
    known = set(services.outbox.campaign_ids())
    known |= {e.campaign_id for e in scan_plans(services.settings.workspace) if e.campaign_id}
    if given not in known:
        raise NotFoundError(
            f"no campaign {given!r}" + (f" (known: {', '.join(sorted(known))})" if known else ""),
            hint="leave out --campaign to send outside any campaign",
        )
    return given


def _drain(services: Services, label: str, **options) -> None:  # type: ignore[no-untyped-def]
    """The runner in the foreground, its words on stderr with a progress bar (when it sends)."""
    console = err_console()
    bar = _progress(console) if progress_wanted() and options.get("role", Role.SENDER).sends else None
    task = bar.add_task(label, total=None, sent=0, failed=0, deferred=0, rate=0.0) if bar else None

    def show(done: dict[str, int], rate: float) -> None:
        if bar is not None and task is not None:
            bar.update(task, **done, rate=rate)

    report = runner.Report(say=lambda m: console.print(escape(m)),
                           warn=lambda m: console.print(f"[yellow]{escape(m)}[/]"),
                           progress=show if bar else None)  # fmt: skip
    with bar if bar is not None else contextlib.nullcontext():
        runner.drain(services, report=report, **options)


def _progress(console):  # type: ignore[no-untyped-def]
    return Progress(
        TextColumn("{task.description}"), BarColumn(),
        TextColumn("sent {task.fields[sent]} · failed {task.fields[failed]} · "
                   "deferred {task.fields[deferred]} · {task.fields[rate]:.0f}/s"),
        TimeElapsedColumn(), console=console, transient=True,
    )  # fmt: skip


def send(
    ctx: typer.Context,
    template: Annotated[str, typer.Argument(help="Email template name, e.g. cop-industry.")],
    where: Annotated[str, typer.Option("--where", "-W", help="Who gets it: a segment expression.")],
    campaign: Annotated[
        str | None, typer.Option(help="Campaign id for the log (default: the plan's).")
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(help="When: '2014-09-05 10:00 Europe/Istanbul' or ISO 8601 (default: now)."),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Send an email template to a segment now (or at --at), through the outbox.

    It queues and sends, or refuses and queues nothing. With a sender running for the
    same database (outreach run, on any machine), it queues and leaves the sending to
    that one. Exit 0: all sent;
    1: some failed; 75: some wait for a retry or a resume (keep outreach run going).

    Example: outreach send cop-industry --where "kind:industry sector:'mobile operator' country:FJ"
    """
    state: State = ctx.obj
    services = state.services
    _warn_links(services)
    expr = audience.and_(audience.parse(where), audience.Term("status", ("active",)))
    services.templates.variants(template, "email")
    campaign_id = _campaign_of(services, campaign, template)
    sources = template_sources(services.settings.workspace, [template])  # what will go out
    guards.require_can_send(services, campaign_id, sources)
    problem = sender_problem(services.settings.sender or services.campaign(campaign_id).sender)
    if problem:
        raise ConfigError(f"{problem}; nothing was queued", hint=SENDER_HINT)
    count = services.contacts.count(expr)
    if count == 0:
        raise OutreachError(
            f"nobody active matches {where!r}; nothing to send",
            hint=f'outreach contacts count --where "{where}"',
        )
    sample = services.contacts.find(expr, limit=5)
    console = out_console()
    console.print(
        f"[bold]{escape(template)}[/] to [bold]{count:,}[/] contact(s) matching {escape(where)}, e.g.:"
    )
    for c in sample:
        console.print(
            f"  {escape(c.email)}  {escape(c.name or '')}  {escape(c.organization or '')}  [{c.language or '-'}]"
        )
    report = check_templates(
        services.templates, services.campaign(campaign_id), services.contacts.find(expr, limit=50),
        names=[f"{template}.email"],
        urls_for=lambda c: services.links.for_contact(campaign_id, "check", c.id),
    )  # fmt: skip
    errors = [f for f in report.findings if f.level == "error"]
    if errors:
        for f in errors:
            console.print(f"[red]{escape(str(f))}[/]")
        raise OutreachError(
            "the template has errors for this audience; nothing was sent",
            hint=f"outreach templates check {template}",
        )
    when = _parse_at(at)
    if services.settings.smtp_url:  # a relay URL that cannot be used is refused before queuing
        parse_smtp_url(services.settings.smtp_url)
    if not yes and not typer.confirm(f"Send to {count:,} contact(s)?", err=True):
        raise typer.Exit(1)
    later = when > datetime.now(UTC)
    # a sender running for this database (here or on another machine) sends them
    running = [] if later else live_senders(services.processes)
    # The same send (template, audience, campaign) on the same day is the same step:
    # repeating it (after an error, or by mistake) sends nobody anything twice.
    same = hashlib.sha256(f"{template}\0{where}\0{campaign_id}".encode()).hexdigest()[:8]
    key = f"send-{template}-{when:%Y%m%d}-{same}"
    before = services.outbox.step_by_key(campaign_id, key)
    step = services.outbox.ensure_step(
        campaign=campaign_id, key=key, channel="email", template=template, audience=where, send_at=when,
        settings={"templates": sources},  # sent as it is now, whatever the files say later
    )  # fmt: skip
    queued = services.outbox.materialize(step)
    if before is not None:
        console.print(f"the same send was queued before today as step {escape(key)}: nobody gets it "
                      f"twice; {queued:,} more contact(s) match now")  # fmt: skip
    console.print(
        f"queued {queued:,} delivery(ies) as step {escape(key)} of campaign {escape(campaign_id)}"
    )
    if later:
        console.print(f"due at {when:%Y-%m-%d %H:%M} UTC: 'outreach run' sends it then")
        return
    if running:
        where = ", ".join(f"{p.host} (pid {p.pid})" for p in running[:3])
        console.print(f"a sender is running for this database on {escape(where)}: it sends them "
                      f"(outreach log --step {escape(key)} shows them go)")  # fmt: skip
        return
    _drain(services, f"sending {template}", timing=_timing())
    _summary(services, step.id)
    _exit_status(services, step.id, key)


EXIT_WAITING = 75  # EX_TEMPFAIL: mail is left waiting for a retry, its time or a resume


def _exit_status(services: Services, step_id: int | None, key: str | None = None) -> None:
    """Exit non-zero, with what to do, when mail is left waiting or (for one step) failed."""
    later, first, paused = services.outbox.left_waiting(step_id)
    parts = []
    if later:
        parts.append(f"{later:,} deliveries wait for a retry or their time (the next at "
                     f"{first:%Y-%m-%d %H:%M} UTC); keep 'outreach run' going")  # fmt: skip
    if paused:
        steps = [s for s in services.outbox.steps() if s.status == "paused" and (step_id is None or s.id == step_id)]
        why = [f"{s.key}: {e[0]['detail'].get('reason', '')}" for s in steps[:3]
               if (e := services.outbox.events(campaign=s.campaign, step_key=s.key, event="paused", limit=1))]
        parts.append(f"{paused:,} deliveries wait in paused steps ({'; '.join(why) or 'see outreach log --event paused'}); "
                     f"outreach resume {steps[0].campaign if steps else 'CAMPAIGN'} continues them")  # fmt: skip
    if parts:
        err_console().print(f"[yellow]{escape('; '.join(parts))}[/]")
        raise typer.Exit(EXIT_WAITING)
    failed = services.outbox.counts(step_id=step_id).get("failed", 0) if step_id is not None else 0
    if failed:
        err_console().print(f"[red]{failed:,} failed:[/] outreach log --step {escape(key or '')} --event failed")
        raise typer.Exit(1)


def _summary(services: Services, step_id: int) -> None:
    counts = services.outbox.counts(step_id=step_id)
    parts = [f"{status} {n:,}" for status, n in sorted(counts.items())]
    out_console().print("delivery log: " + ", ".join(parts))


def run(
    ctx: typer.Context,
    role: Annotated[
        Role, typer.Option(case_sensitive=False, help="scheduler: fires jobs and settles steps, one "
                           "active per database (the others stand by); sender: sends email and posts; "
                           "all: both.")
    ] = Role.ALL,
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="Stop when nothing is due (exit 75 when mail is "
                           "left waiting for a retry, its time or a resume). With a scheduler role it "
                           "takes the leadership for the run, and refuses while another scheduler leads.")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(help="Sender processes when sending to a relay (default: one per core)."),
    ] = None,
) -> None:
    """Send what is due, and keep sending as more falls due (Ctrl-C stops after the
    messages in flight); fire each job at its time. Any number of processes, on any
    machines, may run around one database: each is listed by 'outreach status'.
    Heartbeats and take-overs follow OUTREACH_HEARTBEAT_SECONDS (5),
    OUTREACH_STANDBY_SECONDS (2) and OUTREACH_GONE_SECONDS (60); a claimed delivery's
    lease, OUTREACH_LEASE_SECONDS (30).

    Example: outreach run --role all
    """
    state: State = ctx.obj
    if workers is not None and not role.sends:
        raise typer.BadParameter("--workers is for the sender roles (sender, all)", param_hint="--workers")
    timing = _timing()
    if role.sends:
        _warn_links(state.services)
    label = "sending" if role.sends else "scheduling"
    _drain(state.services, label, until_idle=until_idle, workers=workers, role=role, timing=timing)
    if until_idle and role.sends:
        _exit_status(state.services, None)


def _timing() -> Timing:
    """Heartbeat, standby and gone intervals (seconds) from the environment."""
    return Timing.from_env(os.environ)


def _warn_links(services: Services) -> None:
    """Unsubscribe and view links on this machine while mail goes to a real relay."""
    warning = loopback_link_warning(services.settings)
    if warning:
        err_console().print(f"[yellow]warning:[/] {escape(warning)}")


def resume(
    ctx: typer.Context,
    campaign: Annotated[str, typer.Argument(help="Campaign id.")],
    step: Annotated[str | None, typer.Option(help="Only this step.")] = None,
) -> None:
    """Continue a paused campaign, or its steps paused because the relay looked down.

    Example: outreach resume cop-2014
    """
    from outreach.control import resume_campaign

    state: State = ctx.obj
    resumed, fired = resume_campaign(state.services, campaign, step)
    typer.echo(
        f"resumed {resumed} step(s) of {campaign}"
        + (f"; {fired} held step(s) fired" if fired else "")
    )
