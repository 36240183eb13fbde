"""A scheduled campaign's course, changed by a person: approve, pause, resume, cancel."""

from __future__ import annotations

from typing import TYPE_CHECKING

from outreach.firing import release_held
from outreach.guards import (
    GuardError,
    approval_problem,
    require_campaign,
    require_other_approver,
    require_scheduled_as_is,
)
from outreach.scheduling import job_id, make_scheduler

if TYPE_CHECKING:
    from outreach.app import Services


def approve_campaign(services: Services, campaign_id: str, by: str) -> tuple[int, int]:
    """Approve the campaign as it was scheduled (and checked); held steps still within
    their grace fire. Returns (fired, missed)."""
    stored = require_campaign(services, campaign_id)
    if stored["status"] == "cancelled":
        raise GuardError("campaign_cancelled", f"campaign {campaign_id} is cancelled",
                         campaign=campaign_id)  # fmt: skip
    if services.settings.four_eyes:
        require_other_approver(stored, by)
    services.outbox.approve(campaign_id, by, require_scheduled_as_is(services, stored))
    return release_held(services, campaign_id)

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
            services.outbox.set_step_status(step.id, "paused", "campaign paused by a person", action="resume")
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
                         campaign=campaign_id)  # fmt: skip
    if stored is not None and stored["status"] == "cancelled":
        raise GuardError("campaign_cancelled", f"campaign {campaign_id} is cancelled",
                         campaign=campaign_id)  # fmt: skip
    if stored is not None and step_key is None:
        services.outbox.set_campaign_status(campaign_id, "active")
    resumed = 0
    for step in steps:
        if step.status == "paused" and (step_key is None or step.key == step_key):
            services.outbox.set_step_status(step.id, "active", "resumed by a person")
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
            # cancelled first: a firing of it under way makes nothing more, and
            # what it made before is skipped next
            services.outbox.set_step_status(
                step.id, "cancelled", "campaign cancelled by a person"
            )
            skipped += services.outbox.skip_pending(step.id, "campaign cancelled")
            steps += 1
    finally:
        editor.shutdown()
    return steps, skipped
