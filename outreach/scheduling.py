"""APScheduler wiring: ``outreach schedule`` turns a plan into steps and jobs; a job
firing makes its step's deliveries due (or holds it: not approved, paused, waiting
for a step it requires); ``outreach run`` runs the scheduler beside the senders.

Jobs live in APScheduler's SQLAlchemyJobStore in the same database, so they survive
restarts; the job function is importable (``outreach.jobs:fire_step``) and its id is
``campaign:step@wave@instant``. One scheduler runs them at a time, the leader
(``outreach.leadership``); any process may read or change them (``JobEditor``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler

from outreach.domain import audience as seg
from outreach.domain.plan import Plan
from outreach.domain.sender import sender_problem
from outreach.domain.status import NOT_SENT, StepStatus
from outreach.domain.timeline import Firing, Timeline, timeline, with_launches
from outreach.firing import fire, parse_launch_text, promote_waiting, release_held, settle
from outreach.guards import (
    GuardError,
    approval_problem,
    plan_hash,
    require_campaign,
    require_clean,
)
from outreach.plans import load
from outreach.snapshots import differences, take

# the guards' and firing's, used here and by callers
__all__ = ["approval_problem", "fire", "plan_hash", "promote_waiting", "release_held", "settle"]

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
    changed: list[str] = field(default_factory=list)  # files that differ from the last schedule


def _settings(plan: Plan, firing: Firing, line: Timeline) -> dict[str, Any]:
    step = firing.step
    settings: dict[str, Any] = {
        "plan_step": step.id, "wave": firing.wave.id, "requires": list(step.requires),
        "misfire_s": int(step.misfire.total_seconds()), **dict(step.rate),
    }  # fmt: skip
    if step.to:  # a report's staff addresses, as approved
        settings["to"] = list(step.to)
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
    report = ScheduleReport()
    snapshot = take(services.settings.workspace, plan_file.resolve(), source)
    report.changed = differences((stored or {}).get("snapshot"), snapshot) if stored else []
    outbox.save_campaign(plan.campaign.id, plan.campaign.name, str(plan_file.resolve()),
                         snapshot["hash"], snapshot)  # fmt: skip
    if overrides is not None:
        outbox.set_overrides(plan.campaign.id, texts)
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
            if s.status not in (*NOT_SENT, StepStatus.CANCELLED) and not s.settings.get("local")
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
            f"({timedelta(seconds=step.settings.get('misfire_s', 3600))}); nothing was sent",
            action="reschedule",
        )  # fmt: skip


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


class RunningScheduler(BackgroundScheduler):
    """APScheduler as the leader runs it. A job may leave the shared store under it
    (``cancel`` or ``reschedule`` in another process, between its read of the due jobs
    and its removal of the one it ran): that is no error that may stop its thread."""

    def remove_job(self, job_id: str, jobstore: str | None = None) -> None:
        with contextlib.suppress(JobLookupError):
            super().remove_job(job_id, jobstore)


def start(services: Services) -> BackgroundScheduler:
    """The running scheduler of the leader (``outreach run``, role scheduler or all):
    jobs fire in its threads. Only one process runs it for a database at a time
    (``leadership``): APScheduler 3 shares no job store between running schedulers."""
    from outreach import jobs

    scheduler = RunningScheduler(**_options(services))
    scheduler.add_listener(lambda event: record_missed(services, event), EVENT_JOB_MISSED)
    jobs.serve(services)  # its jobs fire with these services (the same database)
    scheduler.start()
    return scheduler
