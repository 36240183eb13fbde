"""APScheduler wiring: ``outreach schedule`` turns a plan into steps and jobs; a job
firing makes its step's deliveries due (or holds it: not approved, paused, waiting
for a step it requires); ``outreach run`` runs the scheduler beside the senders.

Jobs live in APScheduler's SQLAlchemyJobStore in the same database, so they survive
restarts; the job function is importable (``outreach.jobs:fire_step``) and its id is
``campaign:step@wave@instant``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler

from outreach.domain import audience as seg
from outreach.domain.errors import OutreachError
from outreach.domain.plan import (
    Firing,
    Plan,
    Timeline,
    Wave,
    parse_at,
    timeline,
    with_launches,
    zone_term,
    zones_at,
)
from outreach.domain.sender import sender_problem
from outreach.guards import (
    GuardError,
    approval_problem,
    embargo_of,
    plan_hash,
    require_campaign,
    require_clean,
    require_scheduled_as_is,
)
from outreach.plans import load
from outreach.ports import StepInfo

__all__ = ["approval_problem", "plan_hash"]  # the guards', used here and by callers

if TYPE_CHECKING:  # scheduling sits below app (which wires it); only the type is needed
    from outreach.app import Services

JOB_TABLE = "apscheduler_jobs"


def plan_timeline(services: Services, plan: Plan) -> Timeline:
    def zone_counts(expr: str) -> dict[str | None, int]:
        return services.contacts.zone_counts(
            seg.and_(seg.parse(expr), seg.Term("status", ("active",)))
        )

    return timeline(plan, zone_counts)


class JobEditor(BaseScheduler):
    """Reads and changes jobs in the store without running any: no thread, so none
    can fire (a paused BackgroundScheduler's thread may still process due jobs as it
    shuts down)."""

    def wakeup(self) -> None:
        pass

    def shutdown(self, wait: bool = True) -> None:
        super().shutdown(wait)


def _options(services: Services) -> dict[str, Any]:
    return {
        "jobstores": {"default": SQLAlchemyJobStore(engine=services.engine, tablename=JOB_TABLE)},
        "timezone": UTC,
        "job_defaults": {"coalesce": True, "max_instances": 1},
    }


def make_scheduler(services: Services) -> JobEditor:
    """Start it with ``start(paused=True)`` to read or change jobs; ``start`` (below)
    runs them."""
    return JobEditor(**_options(services))


def job_id(campaign: str, key: str) -> str:
    return f"{campaign}:{key}"


@dataclass
class ScheduleReport:
    added: int = 0
    replaced: int = 0
    kept: int = 0
    cancelled: int = 0
    fired: int = 0  # already fired or done: left as they are


def _settings(plan: Plan, firing: Firing, line: Timeline) -> dict[str, Any]:
    step = firing.step
    settings: dict[str, Any] = {
        "plan_step": step.id, "wave": firing.wave.id, "requires": list(step.requires),
        "misfire_s": int(step.misfire.total_seconds()), **dict(step.rate),
    }  # fmt: skip
    if step.public or step.not_before_embargo:  # checked again when it fires
        settings.update(public=step.public, not_before=step.not_before_embargo,
                        embargo=plan.embargo.astimezone(UTC).isoformat())  # fmt: skip
    if step.at.local:
        same = [f.at for f in line.firings if f.step.id == step.id and f.wave.id == firing.wave.id]
        settings.update(
            local=True, offset=str(step.at), base=" ".join(
                p for p in (f"({step.audience})" if step.audience else "",
                            f"({firing.wave.audience})" if firing.wave.audience else "") if p),
            wave_launch=f"{firing.wave.launch:%Y-%m-%d %H:%M} {firing.wave.zone}",
            instants=[i.isoformat() for i in sorted(same)],
            hold_until=plan.embargo.astimezone(UTC).isoformat() if step.not_before_embargo else None,
        )  # fmt: skip
    return settings


# A step in one of these has sent nothing: a reschedule moves it.
NOT_SENT = ("scheduled", "held", "missed")

PlanCheck = Callable[[Plan], list[str]]  # a plan's check errors (checks.check_plan's)


def _basic_errors(services: Services, plan: Plan, line: Timeline) -> list[str]:
    """What is refused even without the full check: the embargo and the sender."""
    errors = [f"{b} (make it later, or add 'not_before: embargo')" for b in line.breaches]
    if any(s.channel == "email" for s in plan.steps):
        problem = sender_problem(services.settings.sender or plan.campaign.sender)
        if problem:
            errors.append(f"campaign.from: {problem}")
    return errors


def schedule(services: Services, plan_file: Path, *, check: PlanCheck | None = None,
             overrides: dict[str, str] | None = None) -> ScheduleReport:  # fmt: skip
    """Check the plan (as moved by ``overrides``, or by the stored ones), store it and
    register a job per firing; running it again changes only what changed, never
    touches what has been sent, and moves what has not (held and missed steps too).
    A plan with errors changes nothing."""
    source = load(plan_file)
    outbox = services.outbox
    stored = outbox.campaign(source.campaign.id)
    texts = dict((stored or {}).get("overrides") or {}) if overrides is None else overrides
    plan = with_launches(source, {k: parse_launch_text(v) for k, v in texts.items()})
    line = plan_timeline(services, plan)
    errors = check(plan) if check is not None else _basic_errors(services, plan, line)
    require_clean(errors, action="scheduled", source=str(plan_file))
    outbox.save_campaign(plan.campaign.id, plan.campaign.name, str(plan_file.resolve()),
                         plan_hash(services.settings.workspace, plan_file, source))  # fmt: skip
    if overrides is not None:
        outbox.set_overrides(plan.campaign.id, texts)
    report = ScheduleReport()
    existing = {s.key: s for s in outbox.steps(plan.campaign.id)}
    scheduler = make_scheduler(services)
    scheduler.start(paused=True)
    try:
        wanted = set()
        # a non-local step (in a wave) that has fired is not planned again by a
        # reschedule: it went out at its time
        done_before = {
            (s.settings.get("plan_step"), s.settings.get("wave"))
            for s in existing.values()
            if s.status not in (*NOT_SENT, "cancelled") and not s.settings.get("local")
        }
        for firing in line.firings:
            if (firing.step.id, firing.wave.id) in done_before and firing.key not in existing:
                report.fired += 1
                continue
            wanted.add(firing.key)
            settings = _settings(plan, firing, line)
            values = {"template": firing.step.template, "audience": firing.audience, "send_at": firing.at,
                      "channel": firing.step.channel, "settings": settings}  # fmt: skip
            old = existing.get(firing.key)
            same = old is not None and (old.template, old.audience, old.send_at, old.channel,
                                        old.settings) == tuple(values.values())  # fmt: skip
            if old is not None and old.status in ("held", "missed"):
                if not same:  # approval releases it as the plan now says
                    outbox.update_step(old.id, **values)
                report.kept += same
                report.replaced += not same
                continue
            if old is not None and old.status != "scheduled":
                report.fired += 1
                continue
            if old is None:
                outbox.ensure_step(
                    campaign=plan.campaign.id, key=firing.key, status="scheduled", **values
                )
                report.added += 1
            elif same:
                report.kept += 1
                if scheduler.get_job(job_id(plan.campaign.id, firing.key)) is not None:
                    continue
            else:
                outbox.update_step(old.id, **values)
                report.replaced += 1
            scheduler.add_job(
                "outreach.jobs:fire_step", "date", run_date=firing.at,
                id=job_id(plan.campaign.id, firing.key), replace_existing=True,
                args=[str(services.settings.workspace), plan.campaign.id, firing.key],
                misfire_grace_time=max(1, int(firing.step.misfire.total_seconds())),
                name=f"{firing.step.id} ({firing.step.channel}) of {plan.campaign.id}",
            )  # fmt: skip
        for key, old in existing.items():
            if key not in wanted and old.status in NOT_SENT:
                outbox.set_step_status(old.id, "cancelled", "no longer in the plan at this instant"
                                       + (" (rescheduled)" if texts else ""))  # fmt: skip
                job = scheduler.get_job(job_id(plan.campaign.id, key))
                if job is not None:
                    job.remove()
                report.cancelled += 1
    finally:
        scheduler.shutdown()
    return report


def scheduled_plan(services: Services, plan: Plan) -> tuple[Plan, str]:
    """The plan as it fires: with the launches (and embargo) that ``reschedule`` moved,
    when its campaign is scheduled; and a sentence saying what moved ("" if nothing)."""
    texts = (services.outbox.campaign(plan.campaign.id) or {}).get("overrides") or {}
    moved = ", ".join(f"{wave} to {text}" for wave, text in texts.items())
    return with_launches(plan, {k: parse_launch_text(v) for k, v in texts.items()}), moved


def launch_overrides(services: Services, campaign_id: str) -> dict[str, datetime]:
    stored = services.outbox.campaign(campaign_id)
    return {
        wave: parse_launch_text(text)
        for wave, text in ((stored or {}).get("overrides") or {}).items()
    }


def reschedule(services: Services, campaign_id: str, launch: str | None, wave: str = "launch", *,
               embargo: str | None = None, check: PlanCheck | None = None) -> ScheduleReport:  # fmt: skip
    """Move a wave's launch (default: the campaign's) and every step not yet sent with
    it; the embargo keeps its distance from the campaign's launch unless ``embargo``
    gives it. The moved plan is checked as ``schedule`` checks it (a public step
    before the embargo is refused), and approval is asked for again."""
    stored = require_campaign(services, campaign_id)
    if stored["status"] == "cancelled":
        raise GuardError("campaign_cancelled", f"campaign {campaign_id} is cancelled; nothing to move",
                         campaign=campaign_id)  # fmt: skip
    plan_file = Path(stored["plan_file"])
    plan = load(plan_file)
    overrides = dict(stored.get("overrides") or {})
    if launch is not None:
        target = next((w for w in plan.waves if w.id == wave), None)
        if target is None:
            raise GuardError("unknown_wave", f"no wave {wave!r} in {campaign_id}",
                             hint=f"waves: {', '.join(w.id for w in plan.waves)}")  # fmt: skip
        text = launch if len(launch.split()) == 3 else f"{launch} {target.zone}"
        parse_launch_text(text)  # refuses a bad date, time or zone
        overrides[wave] = text
    if embargo is not None:
        text = embargo if len(embargo.split()) == 3 else f"{embargo} {plan.embargo.tzinfo}"
        parse_launch_text(text)
        overrides["embargo"] = text
    return schedule(services, plan_file, check=check, overrides=overrides)


def approve_campaign(services: Services, campaign_id: str, by: str) -> tuple[int, int]:
    """Approve the campaign as it was scheduled (and checked); held steps still within
    their grace fire. Returns (fired, missed)."""
    stored = require_campaign(services, campaign_id)
    if stored["status"] == "cancelled":
        raise GuardError("campaign_cancelled", f"campaign {campaign_id} is cancelled",
                         campaign=campaign_id)  # fmt: skip
    services.outbox.approve(campaign_id, by, require_scheduled_as_is(services, stored))
    return release_held(services, campaign_id)


def fire(services: Services, campaign_id: str, key: str, now: datetime | None = None) -> str:
    """What a job does when its instant comes; returns the step's new status. Nothing
    it meets raises: a step that cannot fire is held or failed with its reason."""
    step = services.outbox.step_by_key(campaign_id, key)
    if step is None or step.status not in ("scheduled", "held"):
        return step.status if step else "missing"
    try:
        return _fire(services, step, now or services.clock())
    except OutreachError as exc:
        services.outbox.set_step_status(step.id, "held", f"held at its time: {exc.message}")
        return "held"


def _fire(services: Services, step: StepInfo, now: datetime) -> str:
    outbox = services.outbox
    campaign_id = step.campaign
    problem = approval_problem(services, campaign_id)
    if problem:
        outbox.set_step_status(step.id, "held", f"held at its time: {problem}")
        return "held"
    embargo = embargo_of(step)
    due = step if embargo is None or embargo <= step.send_at else replace(step, send_at=embargo)
    settings = step.settings
    if step.channel != "email":
        from outreach.posting import prepare

        try:  # what it says is fixed now: a retry later posts exactly this
            items = prepare(services.templates, services.campaign(campaign_id), step)
        except OutreachError as exc:
            outbox.set_step_status(step.id, "failed", f"fired, but nothing can be posted: {exc}")
            return "failed"
        count = services.posts.materialize(due, items)
        return _go(services, step, f"fired: {count} {'post(s)' if step.channel == 'x' else 'release'}"
                   + _held_note(due, step))  # fmt: skip
    audience = step.audience
    if settings.get("local"):
        wave = Wave(settings["wave"], parse_launch_text(settings["wave_launch"]), "")
        zones = list(services.contacts.zone_counts(
            seg.and_(seg.parse(settings["base"]), seg.Term("status", ("active",)))
        ))  # fmt: skip
        hold = (
            datetime.fromisoformat(settings["hold_until"]) if settings.get("hold_until") else None
        )
        mine = zones_at(wave, parse_at(settings["offset"]), [datetime.fromisoformat(i) for i in settings["instants"]],
                        step.send_at, zones, hold_until=hold)  # fmt: skip
        if not mine:  # every zone of this group has left the audience
            outbox.set_step_status(step.id, "done", "fired: none of its zones has a contact now")
            return "done"
        audience = " ".join(p for p in (settings["base"], zone_term(mine)) if p)
        outbox.update_step(step.id, audience=audience)
        step = outbox.step(step.id)
        due = replace(due, audience=audience)
    # Other firings of the same plan step (zone groups, or times before a reschedule)
    # may have reached some of these contacts already: nobody gets it twice.
    siblings = [s.id for s in outbox.steps(campaign_id) if s.id != step.id
                and s.settings.get("plan_step") == settings.get("plan_step")
                and s.settings.get("wave") == settings.get("wave")]  # fmt: skip
    count = outbox.materialize(due, exclude_steps=siblings)
    return _go(services, step, f"fired: {count} deliveries" + _held_note(due, step))


def _held_note(due: StepInfo, step: StepInfo) -> str:
    if due.send_at == step.send_at:
        return ""
    return f"; due at the embargo, {due.send_at:%Y-%m-%d %H:%M} UTC, not before"


def _go(services: Services, step: StepInfo, reason: str) -> str:
    """A fired step sends now, or waits for the steps it requires."""
    waiting = [
        r
        for r in step.settings.get("requires", [])
        if not requirement_done(services, step.campaign, r, step.settings.get("wave"))
    ]
    status = "waiting" if waiting else "active"
    services.outbox.set_step_status(
        step.id, status, reason + (f"; waiting for {', '.join(waiting)}" if waiting else "")
    )
    return status


def parse_launch_text(text: str) -> datetime:
    from outreach.domain.campaign import parse_launch

    return parse_launch(text, source="launch")


def requirement_done(
    services: Services, campaign_id: str, plan_step: str, wave: str | None
) -> bool:
    steps = [s for s in services.outbox.steps(campaign_id)
             if s.settings.get("plan_step") == plan_step and (wave is None or s.settings.get("wave") == wave)]  # fmt: skip
    if not steps:
        return True
    for s in steps:
        if s.status == "done":
            continue
        if s.status != "active":
            return False
        if s.channel == "email":
            if services.outbox.pending(s.id) == 0:
                continue  # every recipient had their attempt
        elif set(services.outbox.counts(step_id=s.id)) == {"sent"}:
            continue  # published, or every post of the thread is up
        return False
    return True


def promote_waiting(services: Services) -> int:
    """Steps waiting for others that are now complete become active."""
    promoted = 0
    for step in services.outbox.steps():
        if step.status != "waiting":
            continue
        need = step.settings.get("requires", [])
        if all(
            requirement_done(services, step.campaign, r, step.settings.get("wave")) for r in need
        ):
            services.outbox.set_step_status(step.id, "active", f"{', '.join(need)} complete")
            promoted += 1
    return promoted


def record_missed(services: Services, event: JobExecutionEvent) -> None:
    campaign_id, _sep, key = event.job_id.partition(":")
    _missed(services, campaign_id, key, event.scheduled_run_time, datetime.now(UTC))


def _missed(services: Services, campaign_id: str, key: str, due: datetime, now: datetime) -> None:
    step = services.outbox.step_by_key(campaign_id, key)
    if step is not None and step.status == "scheduled":
        late = now - due
        services.outbox.set_step_status(
            step.id, "missed",
            f"missed: due at {due:%Y-%m-%d %H:%M} UTC, the sender was not running "
            f"and {late.total_seconds() / 60:.0f} min is more than its misfire grace "
            f"({timedelta(seconds=step.settings.get('misfire_s', 3600))}); nothing was sent. "
            f"Reschedule it, or send it by hand with outreach send",
        )  # fmt: skip


def release_held(
    services: Services, campaign_id: str, now: datetime | None = None
) -> tuple[int, int]:
    """After approval: held steps still within their misfire grace fire now, the
    others are marked missed. Returns (fired, missed)."""
    now = now or services.clock()
    fired = missed = 0
    for step in services.outbox.steps(campaign_id):
        if step.status != "held":
            continue
        grace = timedelta(seconds=step.settings.get("misfire_s", 3600))
        if now - step.send_at <= grace:
            fire(services, campaign_id, step.key, now)
            fired += 1
        else:
            services.outbox.set_step_status(
                step.id,
                "missed",
                f"approved too late: due at {step.send_at:%Y-%m-%d %H:%M} UTC, beyond its misfire grace ({grace})",
            )
            missed += 1
    return fired, missed


def pause_campaign(services: Services, campaign_id: str) -> int:
    """Nothing more of the campaign goes out until resumed: firings are held, sending
    steps stop after the messages in flight."""
    stored = require_campaign(services, campaign_id)
    if stored["status"] == "cancelled":
        raise GuardError("campaign_cancelled", f"campaign {campaign_id} is cancelled",
                         campaign=campaign_id)  # fmt: skip
    services.outbox.set_campaign_status(campaign_id, "paused")
    paused = 0
    for step in services.outbox.steps(campaign_id):
        if step.status in ("active", "waiting"):
            services.outbox.set_step_status(step.id, "paused", "campaign paused by outreach pause")
            paused += 1
    return paused


def resume_campaign(
    services: Services, campaign_id: str, step_key: str | None = None
) -> tuple[int, int]:
    """Paused steps (by ``pause`` or an error budget) continue; held firings still
    within their grace fire. Returns (resumed, fired)."""
    stored = services.outbox.campaign(campaign_id)
    steps = services.outbox.steps(campaign_id)
    if stored is None and not steps:  # an ad hoc send's campaign has steps only
        require_campaign(services, campaign_id)
    if step_key is not None and step_key not in {s.key for s in steps}:
        paused = [s.key for s in steps if s.status == "paused"]
        raise GuardError("unknown_step", f"no step {step_key!r} in {campaign_id}"
                         + (f" (paused: {', '.join(paused[:10])}{' ...' if len(paused) > 10 else ''})"
                            if paused else " (none of its steps is paused)"),
                         hint=f"outreach status {campaign_id} lists its steps", campaign=campaign_id)  # fmt: skip
    if stored is not None and stored["status"] == "cancelled":
        raise GuardError("campaign_cancelled", f"campaign {campaign_id} is cancelled",
                         campaign=campaign_id)  # fmt: skip
    if stored is not None and step_key is None:
        services.outbox.set_campaign_status(campaign_id, "active")
    resumed = 0
    for step in steps:
        if step.status == "paused" and (step_key is None or step.key == step_key):
            services.outbox.set_step_status(step.id, "active", "resumed by outreach resume")
            resumed += 1
    fired = 0
    if stored is not None and approval_problem(services, campaign_id) is None:
        fired, _missed = release_held(services, campaign_id)
    return resumed, fired


def cancel_campaign(services: Services, campaign_id: str) -> tuple[int, int]:
    """Every step not yet done is cancelled, its jobs removed and its unsent
    deliveries skipped (logged). Returns (steps, deliveries)."""
    if services.outbox.campaign(campaign_id) is not None:
        services.outbox.set_campaign_status(campaign_id, "cancelled")
    elif not services.outbox.steps(campaign_id):
        require_campaign(services, campaign_id)
    editor = make_scheduler(services)
    editor.start(paused=True)
    steps = skipped = 0
    try:
        for step in services.outbox.steps(campaign_id):
            job = editor.get_job(job_id(campaign_id, step.key))
            if job is not None:
                job.remove()
            if step.status in ("done", "cancelled", "missed"):
                continue
            skipped += services.outbox.skip_pending(step.id, "campaign cancelled")
            services.outbox.set_step_status(
                step.id, "cancelled", "campaign cancelled by outreach cancel"
            )
            steps += 1
    finally:
        editor.shutdown()
    return steps, skipped


def finish_steps(services: Services) -> int:
    """Active steps with nothing left to send (every delivery sent, failed or skipped)
    become done. Returns how many."""
    finished = 0
    by_step = services.outbox.counts_by_step()
    for step in services.outbox.steps():
        if step.status != "active":
            continue
        counts = by_step.get(step.id, {})
        if any(counts.get(k) for k in ("queued", "deferred", "sending", "uncertain")):
            continue
        summary = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())) or "nothing to send"
        services.outbox.set_step_status(step.id, "done", f"done: {summary}")
        finished += 1
    return finished


def settle(services: Services) -> int:
    """Steps waiting for others that are complete go on; finished steps are done."""
    return promote_waiting(services) + finish_steps(services)


def fire_due(services: Services, now: datetime | None = None) -> int:
    """Fire every stored job that is due now, in this thread (``run --until-idle``);
    a job later than its misfire grace is recorded missed. Returns how many fired."""
    now = now or services.clock()
    editor = make_scheduler(services)
    editor.start(paused=True)
    fired = 0
    try:
        fired += _orphans(services, editor, now)
        for job in editor.get_jobs():
            if job.next_run_time is None or job.next_run_time > now:
                continue
            campaign_id, _sep, key = job.id.partition(":")
            grace = timedelta(seconds=job.misfire_grace_time or 1)
            if now - job.next_run_time > grace:
                _missed(services, campaign_id, key, job.next_run_time, now)
            else:
                services.outbox.patience.run(f"firing {key}", lambda c=campaign_id, k=key: fire(services, c, k, now))
                fired += 1
            editor.remove_job(job.id)
    finally:
        editor.shutdown()
    return fired


def _orphans(services: Services, editor: BaseScheduler, now: datetime) -> int:
    """Steps still ``scheduled`` and due whose job is gone: APScheduler takes a date
    job out of its store just before running it, so a process killed in between
    would lose the firing. They fire now (or are logged missed beyond their grace)."""
    fired = 0
    for step in services.outbox.steps():
        if step.status != "scheduled" or step.send_at > now:
            continue
        if editor.get_job(job_id(step.campaign, step.key)) is not None:
            continue
        if now - step.send_at > timedelta(seconds=step.settings.get("misfire_s", 3600)):
            _missed(services, step.campaign, step.key, step.send_at, now)
        else:
            services.outbox.patience.run(f"firing {step.key}", lambda s=step: fire(services, s.campaign, s.key, now))
            fired += 1
    return fired


def recover_orphans(services: Services) -> int:
    """``_orphans`` on its own, before the running scheduler starts."""
    editor = make_scheduler(services)
    editor.start(paused=True)
    try:
        return _orphans(services, editor, services.clock())
    finally:
        editor.shutdown()


def prepare(services: Services) -> None:
    """Create the job store's table if it is not there, with no thread running:
    done before the sender forks its workers, so that creating it (a read that turns
    into a write) never meets their writes."""
    editor = make_scheduler(services)
    editor.start(paused=True)
    editor.shutdown()


def start(services: Services) -> BackgroundScheduler:
    """The running scheduler of ``outreach run``: jobs fire in its threads."""
    scheduler = BackgroundScheduler(**_options(services))
    scheduler.add_listener(lambda event: record_missed(services, event), EVENT_JOB_MISSED)
    scheduler.start()
    return scheduler
