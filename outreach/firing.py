"""What happens when a step's instant comes, and after: ``fire`` makes its deliveries
due (or holds it: not approved, paused; or fails it: nothing can be posted);
a step waits for the steps it ``requires``; finished steps become done; approval
releases held steps still within their grace."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from outreach.domain import audience as seg
from outreach.domain import channels
from outreach.domain.errors import OutreachError
from outreach.domain.plan import Wave, parse_at
from outreach.domain.timeline import zone_term, zones_at
from outreach.guards import approval_state, embargo_of
from outreach.ports import StepInfo

if TYPE_CHECKING:
    from outreach.app import Services

FIRING = ("scheduled", "held")  # the statuses a step fires from


def fire(services: Services, campaign_id: str, key: str, now: datetime | None = None) -> str:
    """What a job does when its instant comes; returns the step's new status. Nothing
    it meets raises: a step that cannot fire is held or failed with its reason."""
    step = services.outbox.step_by_key(campaign_id, key)
    if step is None or step.status not in FIRING:
        return step.status if step else "missing"
    try:
        return _fire(services, step, now or services.clock())
    except OutreachError as exc:
        return _move(services, step, "held", f"held at its time: {exc.message}")


def _move(services: Services, step: StepInfo, status: str, reason: str, **facts: object) -> str:
    """The firing step to ``status``, unless another firing moved it first (two
    schedulers for a moment, one that lost its leadership not knowing it yet): then
    what that one made of it, and nothing logged twice."""
    if services.outbox.set_step_status(step.id, status, reason, only_from=FIRING, **facts):
        return status
    return services.outbox.step(step.id).status

def _fire(services: Services, step: StepInfo, now: datetime) -> str:
    outbox = services.outbox
    campaign_id = step.campaign
    state = approval_state(services, campaign_id)
    if state:
        code, problem = state
        action = {"not_approved": "approve", "changed_since_approval": "approve",
                  "campaign_paused": "resume"}.get(code)  # fmt: skip
        return _move(services, step, "held", f"held at its time: {problem}",
                     **({"action": action} if action else {}))  # fmt: skip
    embargo = embargo_of(step)
    due = step if embargo is None or embargo <= step.send_at else replace(step, send_at=embargo)
    settings = step.settings
    if not channels.channel(step.channel).per_contact:
        from outreach.posting import prepare

        try:  # what it says is fixed now: a retry later posts exactly this
            items = prepare(services.library_for(step), services.campaign(campaign_id), step)
        except OutreachError as exc:
            return _move(services, step, "failed", f"fired, but nothing can be posted: {exc}")
        count = services.posts.materialize(due, items)
        return _go(services, step, f"fired: {count} {channels.channel(step.channel).units}"
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
            return _move(services, step, "done", "fired: none of its zones has a contact now")
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
    return _move(services, step, status, reason + (f"; waiting for {', '.join(waiting)}" if waiting else ""))

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
        if channels.channel(s.channel).per_contact:
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
        ready = all(requirement_done(services, step.campaign, r, step.settings.get("wave")) for r in need)
        if ready and services.outbox.set_step_status(step.id, "active", f"{', '.join(need)} complete",
                                                     only_from=("waiting",)):  # fmt: skip
            promoted += 1
    return promoted

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
        # (unless it changed meanwhile: paused by a person, say)
        if services.outbox.set_step_status(step.id, "done", f"done: {summary}", only_from=("active",)):
            finished += 1
    return finished

def settle(services: Services) -> int:
    """Steps waiting for others that are complete go on; finished steps are done."""
    return promote_waiting(services) + finish_steps(services)

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
            if services.outbox.set_step_status(
                step.id,
                "missed",
                f"approved too late: due at {step.send_at:%Y-%m-%d %H:%M} UTC, beyond its misfire grace ({grace})",
                only_from=("held",),
            ):
                missed += 1
    return fired, missed

def parse_launch_text(text: str) -> datetime:
    from outreach.domain.campaign import parse_launch

    return parse_launch(text, source="launch")
