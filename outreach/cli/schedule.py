"""``outreach schedule``, ``approve`` and ``status``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from outreach.app import Services
from outreach.cli.common import State, out_console, who
from outreach.cli.phrases import next_step
from outreach.domain.errors import OutreachError
from outreach.plans import load


def register(app: typer.Typer) -> None:
    app.command("schedule")(schedule)
    app.command("approve")(approve)
    app.command("status")(status)
    app.command("pause")(pause)
    app.command("cancel")(cancel)
    app.command("reschedule")(reschedule)


def reschedule(
    ctx: typer.Context,
    campaign: Annotated[str, typer.Argument(help="Campaign id.")],
    launch: Annotated[
        str | None, typer.Option(help="New launch: '2014-09-08 10:00' (the wave's zone) or with a zone.")
    ] = None,
    wave: Annotated[
        str, typer.Option(help="Which wave (default: the campaign's launch).")
    ] = "launch",
    embargo: Annotated[
        str | None,
        typer.Option(help="New embargo (default: it keeps its distance from the launch)."),
    ] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who moves it (default: your user name).")] = None,
) -> None:
    """Move a launch, and every step not yet sent with it (held and missed ones too).
    The embargo moves with the campaign's launch unless --embargo gives it; the moved
    plan is checked again, and it must be approved again.

    Example: outreach reschedule cop-2014 --launch "2014-09-08 10:00"
    """
    from outreach.checks import errors_of
    from outreach.scheduling import reschedule as do_reschedule

    state: State = ctx.obj
    if launch is None and embargo is None:
        raise OutreachError("say what moves: --launch and/or --embargo",
                            hint=f'outreach reschedule {campaign} --launch "2014-09-08 10:00"')  # fmt: skip
    services = state.services
    report = do_reschedule(services, campaign, launch, wave, embargo=embargo, check=errors_of(services))
    _scheduled_by(services, campaign, who(by))  # what is to be approved now is theirs
    moved = ", ".join(p for p in (f"{wave} moved to {launch}" if launch else "",
                                  f"embargo moved to {embargo}" if embargo else "") if p)  # fmt: skip
    typer.echo(
        f"{campaign}: {moved}; {report.added} firing(s) at new times, "
        f"{report.cancelled} old ones removed, {report.fired} already fired (left as they are)"
    )
    _approval_note(services, campaign)


def _scheduled_by(services: Services, campaign: str, by: str) -> None:
    """Record who scheduled what is to be approved (with approval.four_eyes on, they
    may not approve it)."""
    services.users.set_scheduled_by(campaign, by)


def _approval_note(services: Services, campaign: str) -> None:
    from outreach.guards import approval_state

    code, problem = approval_state(services, campaign) or (None, None)
    if problem:
        problem += next_step(code, campaign)
        out_console().print(f"[yellow]nothing will be sent yet:[/] {escape(problem)}")


def pause(
    ctx: typer.Context, campaign: Annotated[str, typer.Argument(help="Campaign id.")]
) -> None:
    """Stop a campaign: firings are held and sending stops after the messages in flight.

    Example: outreach pause cop-2014
    """
    from outreach.control import pause_campaign

    state: State = ctx.obj
    n = pause_campaign(state.services, campaign)
    typer.echo(
        f"{campaign} paused ({n} sending step(s) stopped); continue with: outreach resume {campaign}"
    )


def cancel(
    ctx: typer.Context,
    campaign: Annotated[str, typer.Argument(help="Campaign id.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Cancel what is left of a campaign: its jobs go, unsent deliveries are skipped.

    Example: outreach cancel cop-2014 --yes
    """
    from outreach.control import cancel_campaign

    state: State = ctx.obj
    if not yes and not typer.confirm(f"Cancel what is left of {campaign}?", err=True):
        raise typer.Exit(1)
    steps, skipped = cancel_campaign(state.services, campaign)
    typer.echo(f"{campaign} cancelled: {steps} step(s), {skipped} unsent delivery(ies) skipped")


def schedule(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(help="The plan, e.g. schedules/cop-guidelines-2014.yaml.")
    ],
    by: Annotated[
        str | None,
        typer.Option("--by", help="Who schedules it (default: your user name); with "
                     "approval.four_eyes on, someone else must approve it."),
    ] = None,
) -> None:
    """Store a plan and register a job for every firing (again: only what changed).

    Example: outreach schedule schedules/cop-guidelines-2014.yaml
    """
    from outreach.checks import errors_of
    from outreach.scheduling import schedule as do_schedule

    state: State = ctx.obj
    services = state.services
    plan = load(file)
    before = services.outbox.campaign(plan.campaign.id)
    report = do_schedule(services, file, check=errors_of(services))
    if before is None or report.changed or not before.get("scheduled_by"):
        _scheduled_by(services, plan.campaign.id, who(by))  # unchanged: still the first one's
    console = out_console()
    console.print(
        f"{plan.campaign.id}: {report.added} firing(s) added, {report.replaced} changed, {report.kept} unchanged, "
        f"{report.cancelled} cancelled, {report.fired} already fired (left as they are)"
    )
    if report.changed:
        console.print(f"changed since it was last scheduled: {escape(', '.join(report.changed))}")
    _approval_note(services, plan.campaign.id)
    console.print("'outreach run' fires them at their time")


def approve(
    ctx: typer.Context,
    campaign: Annotated[str, typer.Argument(help="Campaign id.")],
    by: Annotated[str, typer.Option("--by", help="Who approves (recorded with the time).")],
) -> None:
    """Approve a campaign as it was scheduled: its plan, every template it uses and its
    launch dates. A change to any of them (or a reschedule) asks for approval again.

    Example: outreach approve cop-2014 --by "Sarah Taylor"
    """
    from outreach.control import approve_campaign

    state: State = ctx.obj
    from outreach.guards import files_changed, require_campaign

    differ = files_changed(state.services, require_campaign(state.services, campaign))
    fired, missed = approve_campaign(state.services, campaign, by)
    typer.echo(
        f"{campaign} approved by {by}"
        + (f"; {fired} held step(s) fired, {missed} too late" if fired or missed else "")
    )
    if differ:
        typer.echo(f"note: approved as it was scheduled; the files differ since ({', '.join(differ)}): "
                   "'outreach schedule' takes them, and asks for approval again", err=True)  # fmt: skip


def status(
    ctx: typer.Context,
    campaign: Annotated[str | None, typer.Argument(help="Campaign id (default: all).")] = None,
) -> None:
    """Approval, the next firings, and what has run; without a campaign, also the
    schedulers and senders running around this database (host, pid, role, since, last
    heartbeat, which one leads, what each holds).

    Example: outreach status cop-2014
    """
    from outreach import review

    state: State = ctx.obj
    console = out_console()
    now = datetime.now(UTC)
    for c in review.campaign_status(state.services, campaign):
        approved = (f"approved by {escape(c.approved_by or '')} at {c.approved_at:%Y-%m-%d %H:%M} UTC"
                    if not c.problem else f"[yellow]{escape(c.problem + next_step(c.problem_code, c.id))}[/]")  # fmt: skip
        console.print(f"[bold]{escape(c.id)}[/] ({escape(c.name)}): {approved}")
        table = Table()
        for column in ("due (UTC)", "step", "channel", "status", "deliveries", "next firing"):
            table.add_column(column, overflow="fold")
        for row in c.steps:
            s = row.step
            table.add_row(
                f"{s.send_at:%Y-%m-%d %H:%M}", escape(s.key), s.channel,
                s.status + (" (overdue)" if row.overdue(now) else ""), review.counts_text(row.counts),
                f"{row.next_firing:%Y-%m-%d %H:%M}" if row.next_firing else "-",
            )  # fmt: skip
        console.print(table)
    if campaign is None:
        _processes(state.services, now)


def _processes(services: Services, now: datetime) -> None:
    """The processes table: one line per scheduler or sender, the leader first."""
    import os

    from outreach.leadership import Timing
    from outreach.review.status import process_rows

    console = out_console()
    rows = process_rows(services, now, Timing.from_env(os.environ).gone)
    if not rows:
        console.print("processes: none is running for this database ('outreach run' starts one)")
        return
    live = [r for r in rows if r.state == "live"]
    leader = next((r for r in rows if r.leads), None)
    console.print(f"[bold]processes[/]: {len(live)} live of {len(rows)}; "
                  + (f"the scheduler leading is {escape(leader.process.host)} pid {leader.process.pid}"
                     if leader else "no scheduler leads"))  # fmt: skip
    table = Table()
    for column in ("host", "pid", "role", "since (UTC)", "heartbeat", "state", "scheduler", "holds"):
        table.add_column(column, overflow="fold")
    for r in rows:
        p = r.process
        schedules = p.role in ("scheduler", "all") and "worker_of" not in p.state
        role = "leader" if r.leads else "standby" if schedules and r.state == "live" else "-"
        sends = p.role in ("sender", "all")
        holds = [f"sending {p.state.get('sending', 0):,}", f"sent {p.state.get('sent', 0):,}"] if sends else []
        if role == "leader":
            holds.insert(0, "the jobs")
        if p.state.get("workers"):
            holds.append(f"{p.state['workers']} workers")
        if p.state.get("worker_of"):
            holds.append(f"worker of pid {str(p.state['worker_of']).split(':')[-2]}")
        if p.state.get("once"):
            holds.append("until idle")
        table.add_row(escape(p.host), str(p.pid), p.role, f"{p.started_at:%Y-%m-%d %H:%M:%S}",
                      f"{r.age:.1f} s ago", r.state, role, ", ".join(holds) or "-")  # fmt: skip
    console.print(table)
