"""APScheduler wiring: ``outreach schedule`` turns a plan into steps and jobs; a job
firing makes its step's deliveries due (or holds it: not approved, paused, waiting
for a step it requires); ``outreach run`` runs the scheduler beside the senders.

Jobs live in APScheduler's SQLAlchemyJobStore in the same database, so they survive
restarts; the job function is importable (``outreach.jobs:fire_step``) and its id is
``campaign:step@wave@instant``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
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
from outreach.plans import load
from outreach.ports import StepInfo

if TYPE_CHECKING:  # scheduling sits below app (which wires it); only the type is needed
    from outreach.app import Services

JOB_TABLE = "apscheduler_jobs"


def plan_timeline(services: Services, plan: Plan) -> Timeline:
    def zone_counts(expr: str) -> dict[str | None, int]:
        return services.contacts.zone_counts(
            seg.and_(seg.parse(expr), seg.Term("status", ("active",)))
        )

    return timeline(plan, zone_counts)


def plan_hash(workspace: Path, plan_file: Path, plan: Plan) -> str:
    """A hash of the plan file and of every template file it can use (the named
    templates, their language variants, layouts and partials)."""
    digest = hashlib.sha256(plan_file.read_bytes())
    root = workspace / "templates"
    used = {s.template for s in plan.steps}
    for path in sorted(root.rglob("*.j2")) if root.is_dir() else []:
        rel = path.relative_to(root)
        if rel.parts[0] in ("_layouts", "_partials") or path.name.split(".")[0] in used:
            digest.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


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


def schedule(services: Services, plan_file: Path) -> ScheduleReport:
    """Store the plan and register a job per firing; running it again changes only
    what changed, and never touches steps that have fired."""
    plan = load(plan_file)
    outbox = services.outbox
    outbox.save_campaign(plan.campaign.id, plan.campaign.name, str(plan_file.resolve()),
                         plan_hash(services.settings.workspace, plan_file, plan))  # fmt: skip
    plan = with_launches(plan, launch_overrides(services, plan.campaign.id))
    line = plan_timeline(services, plan)
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
            if s.status not in ("scheduled", "cancelled", "held") and not s.settings.get("local")
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
            if old is not None and old.status != "scheduled":
                report.fired += 1
                continue
            if old is None:
                step = outbox.ensure_step(
                    campaign=plan.campaign.id, key=firing.key, status="scheduled", **values
                )
                report.added += 1
            elif (old.template, old.audience, old.send_at, old.channel, old.settings) == tuple(
                values.values()
            ):
                step = old
                report.kept += 1
                if scheduler.get_job(job_id(plan.campaign.id, firing.key)) is not None:
                    continue
            else:
                outbox.update_step(old.id, **values)
                step = old
                report.replaced += 1
            scheduler.add_job(
                "outreach.jobs:fire_step", "date", run_date=firing.at,
                id=job_id(plan.campaign.id, firing.key), replace_existing=True,
                args=[str(services.settings.workspace), plan.campaign.id, firing.key],
                misfire_grace_time=max(1, int(firing.step.misfire.total_seconds())),
                name=f"{firing.step.id} ({firing.step.channel}) of {plan.campaign.id}",
            )  # fmt: skip
            del step
        for key, old in existing.items():
            if key not in wanted and old.status == "scheduled":
                outbox.set_step_status(old.id, "cancelled", "no longer in the plan")
                job = scheduler.get_job(job_id(plan.campaign.id, key))
                if job is not None:
                    job.remove()
                report.cancelled += 1
    finally:
        scheduler.shutdown()
    return report


def launch_overrides(services: Services, campaign_id: str) -> dict[str, datetime]:
    stored = services.outbox.campaign(campaign_id)
    return {
        wave: parse_launch_text(text)
        for wave, text in ((stored or {}).get("overrides") or {}).items()
    }


def reschedule(
    services: Services, campaign_id: str, launch: str, wave: str = "launch"
) -> ScheduleReport:
    """Move a wave's launch (default: the campaign's) and every step not yet fired
    with it."""
    stored = services.outbox.campaign(campaign_id)
    if stored is None:
        raise OutreachError(
            f"campaign {campaign_id} is not scheduled", hint="outreach schedule schedules/PLAN.yaml"
        )
    plan_file = Path(stored["plan_file"])
    plan = load(plan_file)
    target = next((w for w in plan.waves if w.id == wave), None)
    if target is None:
        raise OutreachError(
            f"no wave {wave!r} in {campaign_id}",
            hint=f"waves: {', '.join(w.id for w in plan.waves)}",
        )
    text = launch if len(launch.split()) == 3 else f"{launch} {target.zone}"
    parse_launch_text(text)  # refuses a bad date, time or zone
    overrides = {**(stored.get("overrides") or {}), wave: text}
    services.outbox.set_overrides(campaign_id, overrides)
    return schedule(services, plan_file)


def approval_problem(services: Services, campaign_id: str) -> str | None:
    """Why the campaign may not send now, or None."""
    campaign = services.outbox.campaign(campaign_id)
    if campaign is None:
        return f"campaign {campaign_id} is not scheduled"
    if campaign["status"] != "active":
        return f"campaign {campaign_id} is {campaign['status']}"
    if not campaign["approved_hash"]:
        return f"campaign {campaign_id} is not approved: outreach approve {campaign_id} --by NAME"
    plan_file = Path(campaign["plan_file"])
    current = plan_hash(services.settings.workspace, plan_file, load(plan_file))
    if current != campaign["approved_hash"]:
        return (f"the plan or a template of {campaign_id} changed since {campaign['approved_by']} approved it "
                f"at {campaign['approved_at']:%Y-%m-%d %H:%M} UTC: outreach approve {campaign_id} --by NAME")  # fmt: skip
    return None


def fire(services: Services, campaign_id: str, key: str, now: datetime | None = None) -> str:
    """What a job does when its instant comes; returns the step's new status."""
    outbox = services.outbox
    step = outbox.step_by_key(campaign_id, key)
    if step is None or step.status not in ("scheduled", "held"):
        return step.status if step else "missing"
    now = now or services.clock()
    problem = approval_problem(services, campaign_id)
    if problem:
        outbox.set_step_status(step.id, "held", f"held at its time: {problem}")
        return "held"
    settings = step.settings
    if step.channel != "email":
        from outreach.posting import prepare

        try:  # what it says is fixed now: a retry later posts exactly this
            items = prepare(services.templates, services.campaign(campaign_id), step)
        except OutreachError as exc:
            outbox.set_step_status(step.id, "failed", f"fired, but nothing can be posted: {exc}")
            return "failed"
        count = services.posts.materialize(step, items)
        return _go(services, step, f"fired: {count} {'post(s)' if step.channel == 'x' else 'release'}")
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
    # Other firings of the same plan step (zone groups, or times before a reschedule)
    # may have reached some of these contacts already: nobody gets it twice.
    siblings = [s.id for s in outbox.steps(campaign_id) if s.id != step.id
                and s.settings.get("plan_step") == settings.get("plan_step")
                and s.settings.get("wave") == settings.get("wave")]  # fmt: skip
    count = outbox.materialize(step, exclude_steps=siblings)
    return _go(services, step, f"fired: {count} deliveries")


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
    step = services.outbox.step_by_key(campaign_id, key)
    if step is not None and step.status == "scheduled":
        late = datetime.now(UTC) - event.scheduled_run_time
        services.outbox.set_step_status(
            step.id, "missed",
            f"missed: due at {event.scheduled_run_time:%Y-%m-%d %H:%M} UTC, the sender was not running "
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
    if services.outbox.campaign(campaign_id) is not None and step_key is None:
        services.outbox.set_campaign_status(campaign_id, "active")
    resumed = 0
    for step in services.outbox.steps(campaign_id):
        if step.status == "paused" and (step_key is None or step.key == step_key):
            services.outbox.set_step_status(step.id, "active", "resumed by outreach resume")
            resumed += 1
    fired = 0
    if (
        services.outbox.campaign(campaign_id) is not None
        and approval_problem(services, campaign_id) is None
    ):
        fired, _missed = release_held(services, campaign_id)
    return resumed, fired


def cancel_campaign(services: Services, campaign_id: str) -> tuple[int, int]:
    """Every step not yet done is cancelled, its jobs removed and its unsent
    deliveries skipped (logged). Returns (steps, deliveries)."""
    if services.outbox.campaign(campaign_id) is not None:
        services.outbox.set_campaign_status(campaign_id, "cancelled")
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
