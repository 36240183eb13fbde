"""``outreach send``, ``run``, ``log`` and ``resume``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import signal
import sys
import time
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from outreach import guards
from outreach.app import Services
from outreach.channels.smtp import parse_smtp_url
from outreach.children import die_with_parent
from outreach.cli.common import State, err_console, out_console, progress_wanted
from outreach.db.patience import Patience
from outreach.domain import audience
from outreach.domain.campaign import parse_launch
from outreach.domain.errors import ConfigError, InputFileError, NotFoundError, OutreachError
from outreach.domain.sender import HINT as SENDER_HINT
from outreach.domain.sender import sender_problem
from outreach.links import loopback_link_warning
from outreach.plans import default_campaign_id, plan_files, read_plan
from outreach.templating import check_templates


def register(app: typer.Typer) -> None:
    app.command("send")(send)
    app.command("run")(run)
    app.command("log")(log)
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
    for path in plan_files(services.settings.workspace):
        with contextlib.suppress(OutreachError):
            known.add(str((read_plan(path).get("campaign") or {}).get("id") or ""))
    known.discard("")
    if given not in known:
        raise NotFoundError(
            f"no campaign {given!r}" + (f" (known: {', '.join(sorted(known))})" if known else ""),
            hint="leave out --campaign to send outside any campaign",
        )
    return given


def _drain(services: Services, *, label: str, until_idle: bool = True, workers: int | None = None,
           child: bool = False, scheduler: bool = False, share: int = 1, lock=None) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    """Run the sender in the foreground until idle (or stopped), then return.

    With a relay, ``workers`` processes send side by side (default: one per core),
    each within its ``share`` of the rate limits; this one resolves what a stopped
    sender left behind first, holds the workspace's sender lock so that no second
    ``outreach run`` does that under it, and then forks the others.
    """
    console = err_console()
    relay = bool(services.settings.smtp_url)
    workers = share if child else 1 if not relay else (workers or os.cpu_count() or 1)
    progress = _progress(console) if progress_wanted() and not child else None
    task = (
        progress.add_task(label, total=None, sent=0, failed=0, deferred=0, rate=0.0)
        if progress
        else None
    )
    waiting = Patience(limit=None, notify=lambda m: console.print(f"[yellow]{escape(m)}[/]"))
    services.outbox.patience = services.posts.patience = waiting  # a stall is waited out
    lock = lock if lock is not None or child else _sender_lock(services)
    children: list[int] = []
    # made first: a misconfigured X channel is refused before any worker exists
    poster = None if child else services.poster()
    if not child:
        services.outbox.recover()
        if scheduler:
            from outreach.scheduling import fire_due, prepare

            prepare(services)
            if until_idle:  # what fell due while nothing ran fires before anything is sent
                fire_due(services)
        if workers > 1:  # before any thread starts: fork copies only the calling thread
            children = _fork_workers(services, workers - 1, until_idle, share=workers)

    async def watch(start_counts: dict[str, int], started: float) -> None:
        while progress is not None and task is not None:
            counts = services.outbox.counts()
            done = {
                k: counts.get(k, 0) - start_counts.get(k, 0) for k in ("sent", "failed", "deferred")
            }
            elapsed = max(time.monotonic() - started, 1e-9)
            progress.update(task, **done, rate=done["sent"] / elapsed)
            await asyncio.sleep(0.5)

    async def main() -> None:
        with services.email_channel() as (channel, where):
            if not child:
                console.print(
                    f"sending through {escape(where)}"
                    + (f" with {workers} processes" if workers > 1 else "")
                )
            dispatcher = services.dispatcher(channel)
            if workers > 1:
                dispatcher.policy = dataclasses.replace(
                    dispatcher.policy, per_second=dispatcher.policy.per_second / workers,
                    per_hour=max(1, dispatcher.policy.per_hour // workers),
                )  # fmt: skip
            halt = asyncio.Event()

            def stop() -> None:  # the poster checks between posts (it works in a thread)
                halt.set()
                if poster is not None:
                    poster.stopping.set()

            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop)
            watcher = asyncio.create_task(watch(services.outbox.counts(), time.monotonic()))
            jobs = None
            if scheduler and not until_idle:
                from outreach.scheduling import settle
                from outreach.scheduling import start as start_scheduler

                jobs = start_scheduler(services)

                async def promote() -> None:
                    while True:
                        await asyncio.to_thread(settle, services)
                        await asyncio.sleep(5)

                promoter = asyncio.create_task(promote())
            failed_here = False
            if poster is not None:
                console.print(f"posting to {escape(poster.x.name)}; publishing to {escape(poster.newsroom.name)}")  # type: ignore[union-attr]
            try:
                while True:
                    if poster is not None:
                        await asyncio.gather(
                            dispatcher.run(stop=halt, until_idle=until_idle, recover=False),
                            poster.run(stop=halt, until_idle=until_idle),
                        )
                    else:
                        await dispatcher.run(stop=halt, until_idle=until_idle, recover=False)
                    if child or halt.is_set() or not until_idle:
                        break
                    # steps that waited for what was just sent go on; jobs that fell
                    # due meanwhile fire: until nothing that is due is left
                    if not await asyncio.to_thread(_catch_up, services, scheduler):
                        break
            except BaseException:
                failed_here = True
                raise
            finally:
                for pid in children:  # they finish by themselves only when sending until idle
                    if halt.is_set() or failed_here or not until_idle:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGTERM)
                for pid in children:
                    _pid, status = await asyncio.to_thread(os.waitpid, pid, 0)
                    codes.append(os.waitstatus_to_exitcode(status))
                watcher.cancel()
                if jobs is not None:
                    promoter.cancel()
                    jobs.shutdown(wait=True)
                await channel.close()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

    codes: list[int] = []
    try:
        if progress:
            with progress:
                asyncio.run(main())
        else:
            asyncio.run(main())
    finally:
        if lock is not None:
            lock.close()
    failed = [code for code in codes if code]
    if failed:
        raise OutreachError(
            f"{len(failed)} sender process(es) stopped with an error; see the messages above"
        )


def _catch_up(services: Services, scheduler: bool) -> int:
    """Between two rounds of ``--until-idle``: how many steps changed (promoted, done,
    fired)."""
    from outreach.scheduling import fire_due, settle

    changed = settle(services)
    if scheduler:
        changed += fire_due(services)
    return changed


def _progress(console):  # type: ignore[no-untyped-def]
    return Progress(
        TextColumn("{task.description}"), BarColumn(),
        TextColumn("sent {task.fields[sent]} · failed {task.fields[failed]} · "
                   "deferred {task.fields[deferred]} · {task.fields[rate]:.0f}/s"),
        TimeElapsedColumn(), console=console, transient=True,
    )  # fmt: skip


def _fork_workers(services: Services, count: int, until_idle: bool, *, share: int) -> list[int]:
    """Worker senders, forked: they share this process's imports and compiled
    templates (no start-up of their own) and open their own database connections.
    Each dies with this process, even on kill -9 (PR_SET_PDEATHSIG): a sender left
    running would race the next one's recovery."""
    parent = os.getpid()
    pids = []
    for _ in range(count):
        pid = os.fork()
        if pid:
            pids.append(pid)
            continue
        code = 1
        try:
            services.engine.dispose(close=False)  # the parent's connections stay the parent's
            die_with_parent(parent)
            _drain(services, label="", until_idle=until_idle, child=True, share=share)
            code = 0
        except BaseException:  # reported, then this worker goes
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pids


def _sender_lock(services: Services):  # type: ignore[no-untyped-def]
    """One sender (with its worker processes) per workspace at a time."""
    handle = _try_sender_lock(services)
    if handle is None:
        raise OutreachError(
            "another outreach sender is running for this workspace",
            hint="let it finish, or stop it (Ctrl-C) before starting another",
        )
    return handle


def _try_sender_lock(services: Services):  # type: ignore[no-untyped-def]
    """The sender lock, or None when another sender holds it."""
    import fcntl

    path = services.settings.state_dir / "sender.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


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

    It queues and sends, or refuses and queues nothing. With another sender running
    (outreach run), it queues and leaves the sending to that one. Exit 0: all sent;
    1: some failed; 75: some wait for a retry or a resume (keep outreach run going).

    Example: outreach send cop-industry --where "kind:industry sector:'mobile operator' country:FJ"
    """
    state: State = ctx.obj
    services = state.services
    _warn_links(services)
    expr = audience.and_(audience.parse(where), audience.Term("status", ("active",)))
    services.templates.variants(template, "email")
    campaign_id = _campaign_of(services, campaign, template)
    guards.require_can_send(services, campaign_id)
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
    lock = None if later else _try_sender_lock(services)  # held from queuing to the end
    # The same send (template, audience, campaign) on the same day is the same step:
    # repeating it (after an error, or by mistake) sends nobody anything twice.
    same = hashlib.sha256(f"{template}\0{where}\0{campaign_id}".encode()).hexdigest()[:8]
    key = f"send-{template}-{when:%Y%m%d}-{same}"
    before = services.outbox.step_by_key(campaign_id, key)
    step = services.outbox.ensure_step(
        campaign=campaign_id, key=key, channel="email", template=template, audience=where, send_at=when,
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
    if lock is None:
        console.print("another outreach sender is running for this workspace: it sends them "
                      f"(outreach log --step {escape(key)} shows them go)")  # fmt: skip
        return
    _drain(services, label=f"sending {template}", lock=lock)
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
        parts.append(f"{paused:,} deliveries wait in paused steps (outreach status says why; "
                     "outreach resume CAMPAIGN continues them)")  # fmt: skip
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
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="Stop when nothing is due (exit 75 when mail is "
                           "left waiting for a retry, its time or a resume).")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(help="Sender processes when sending to a relay (default: one per core)."),
    ] = None,
) -> None:
    """Send what is due, and keep sending as more falls due (Ctrl-C stops after the
    messages in flight).

    Example: outreach run
    """
    state: State = ctx.obj
    _warn_links(state.services)
    _drain(state.services, label="sending", until_idle=until_idle, workers=workers, scheduler=True)
    if until_idle:
        _exit_status(state.services, None)


def _warn_links(services: Services) -> None:
    """Unsubscribe and view links on this machine while mail goes to a real relay."""
    warning = loopback_link_warning(services.settings)
    if warning:
        err_console().print(f"[yellow]warning:[/] {escape(warning)}")


def log(
    ctx: typer.Context,
    campaign: Annotated[str | None, typer.Option(help="Only this campaign.")] = None,
    step: Annotated[str | None, typer.Option(help="Only this step.")] = None,
    event: Annotated[
        str | None,
        typer.Option(help="Only this event: sent, failed, deferred, skipped, uncertain..."),
    ] = None,
    contact: Annotated[str | None, typer.Option(help="Only this contact (email address).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many events (the latest).")] = 50,
) -> None:
    """Who got what, when, and what failed and why.

    Example: outreach log --campaign cop-2014 --event failed
    """
    state: State = ctx.obj
    outbox = state.services.outbox
    console = out_console()
    summary = Table(title="Steps", title_justify="left")
    for column in ("campaign", "step", "channel", "template", "due (UTC)", "status", "deliveries"):
        summary.add_column(column)
    for s in outbox.steps(campaign):
        if step and s.key != step:
            continue
        counts = outbox.counts(step_id=s.id)
        summary.add_row(
            escape(s.campaign), escape(s.key), s.channel, escape(s.template),
            f"{s.send_at:%Y-%m-%d %H:%M}", s.status,
            ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())) or "-",
        )  # fmt: skip
    console.print(summary)
    events = outbox.events(
        campaign=campaign, step_key=step, event=event, email=contact, limit=limit
    )
    table = Table(title=f"Events (latest {len(events)})", title_justify="left")
    for column in ("at (UTC)", "step", "delivery", "to", "event", "detail"):
        table.add_column(column, overflow="fold")
    for e in events:
        table.add_row(
            f"{e['at']:%Y-%m-%d %H:%M:%S}", escape(e["step"]), str(e["delivery_id"] or ""),
            escape(_recipient(e)), e["event"], escape(_detail(e["detail"])),
        )  # fmt: skip
    console.print(table)


def _recipient(event: dict) -> str:
    if event["email"]:
        return event["email"]
    if event["delivery_id"] is None:
        return ""  # the step's own event
    if event["channel"] == "x":
        return f"X post {event['part'] + 1}"
    return "newsroom" if event["channel"] == "press" else ""


def _detail(detail: dict) -> str:
    keys = ("reason", "code", "reply", "next_attempt", "message_id", "post_id", "in_reply_to",
            "url", "duration_ms", "uncertain", "bounce", "attempt")  # fmt: skip
    return "; ".join(f"{k}={detail[k]}" for k in keys if detail.get(k) not in (None, ""))


def resume(
    ctx: typer.Context,
    campaign: Annotated[str, typer.Argument(help="Campaign id.")],
    step: Annotated[str | None, typer.Option(help="Only this step.")] = None,
) -> None:
    """Continue a paused campaign, or its steps paused because the relay looked down.

    Example: outreach resume cop-2014
    """
    from outreach.scheduling import resume_campaign

    state: State = ctx.obj
    resumed, fired = resume_campaign(state.services, campaign, step)
    typer.echo(
        f"resumed {resumed} step(s) of {campaign}"
        + (f"; {fired} held step(s) fired" if fired else "")
    )
