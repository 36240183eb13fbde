"""The rules every path to the outbox obeys. ``schedule``, ``approve``,
``reschedule``, ``send``, ``rehearse`` and the moment a step fires all ask here:

- a plan with check errors is not scheduled (nor rehearsed, nor moved);
- nothing of a campaign goes out unless it is active and approved as it stands
  (its plan file, the templates it uses, and its reschedules);
- a public delivery is never due before the embargo;
- an unknown campaign is an error that lists the known ones.

Errors carry a ``code`` and the facts; the CLI phrases them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from outreach.domain.errors import NotFoundError, OutreachError
from outreach.domain.plan import Plan

if TYPE_CHECKING:
    from outreach.app import Services
    from outreach.ports import StepInfo


class GuardError(OutreachError):
    """A guard refuses: ``code`` says which rule, ``facts`` the details."""

    def __init__(self, code: str, message: str, *, hint: str | None = None, **facts: Any) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.facts = facts


# -- approval: of the plan file, the templates it uses and the reschedules ---------------


def plan_hash(workspace: Path, plan_file: Path, plan: Plan) -> str:
    """The hash of the plan file and of every template it can use, as ``schedule``
    stores it (``snapshots.take``)."""
    from outreach.snapshots import take

    return str(take(workspace, plan_file, plan)["hash"])


def approval_key(files_hash: str, overrides: Mapping[str, str] | None) -> str:
    """What an approval is of: the files' hash, and the moved launches if any (a
    reschedule asks for approval again)."""
    if not overrides:
        return files_hash
    moved = json.dumps(dict(overrides), sort_keys=True)
    return hashlib.sha256(f"{files_hash}\0{moved}".encode()).hexdigest()


def current_key(stored: Mapping[str, Any]) -> str:
    """The approval key of what is scheduled: its snapshot's hash and its reschedules
    (never the files: they change nothing until the plan is scheduled again)."""
    return approval_key(stored["plan_hash"], stored.get("overrides"))


def files_changed(services: Services, stored: Mapping[str, Any]) -> list[str]:
    """What in the workspace's files differs from what was scheduled (empty when the
    files are gone: a machine with only the database)."""
    from outreach.plans import load
    from outreach.snapshots import differences, take

    plan_file = Path(stored["plan_file"])
    snapshot = stored.get("snapshot")
    if snapshot is None or not plan_file.is_file():
        return []
    try:
        return differences(snapshot, take(services.settings.workspace, plan_file, load(plan_file)))
    except (OutreachError, OSError, UnicodeDecodeError):
        return ["the plan (it cannot be read now)"]


def require_campaign(services: Services, campaign_id: str) -> dict[str, Any]:
    """The stored campaign, or an error that lists the known ones."""
    stored = services.outbox.campaign(campaign_id)
    if stored is None:
        known = services.outbox.campaign_ids()
        raise NotFoundError(
            f"no campaign {campaign_id!r} is scheduled"
            + (f" (scheduled: {', '.join(known)})" if known else " (none is scheduled yet)"),
            code="unknown_campaign", campaign=campaign_id, known=known,
        )
    return stored


def approval_state(services: Services, campaign_id: str) -> tuple[str, str] | None:
    """Why the campaign may not send now, as (code, words), or None. The words state
    the facts; the edge says what to do (``cli.phrases``: the command for the code)."""
    campaign = services.outbox.campaign(campaign_id)
    if campaign is None:
        return "not_scheduled", f"campaign {campaign_id} is not scheduled"
    if campaign["status"] != "active":
        return f"campaign_{campaign['status']}", f"campaign {campaign_id} is {campaign['status']}"
    if not campaign["approved_hash"]:
        return "not_approved", f"campaign {campaign_id} is not approved"
    if current_key(campaign) != campaign["approved_hash"]:
        return "changed_since_approval", (
            f"the plan, a template or a launch of {campaign_id} changed since "
            f"{campaign['approved_by']} approved it at {campaign['approved_at']:%Y-%m-%d %H:%M} UTC")
    return None


def approval_problem(services: Services, campaign_id: str) -> str | None:
    """Why the campaign may not send now, in words, or None."""
    state = approval_state(services, campaign_id)
    return None if state is None else state[1]


def same_person(a: str | None, b: str | None) -> bool:
    """Whether two recorded names are one person's (case and outer spaces aside)."""
    return bool(a and b) and a.strip().casefold() == b.strip().casefold()  # type: ignore[union-attr]


def require_other_approver(stored: Mapping[str, Any], by: str) -> None:
    """Four eyes: who scheduled what is to be approved may not approve it."""
    if same_person(stored.get("scheduled_by"), by):
        raise GuardError("four_eyes", f"{by} scheduled {stored['id']} and may not approve it too "
                         "(four eyes: approval.four_eyes is on)", campaign=stored["id"], by=by)  # fmt: skip


def require_scheduled_as_is(services: Services, stored: Mapping[str, Any]) -> str:
    """The approval key of what was scheduled (and checked): its snapshot."""
    return current_key(stored)


# -- plans ---------------------------------------------------------------------------


def require_clean(errors: list[str], *, action: str, source: str) -> None:
    """A plan with check errors is not scheduled, moved or rehearsed."""
    if errors:
        shown = "\n  ".join(errors[:20]) + (f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else "")
        raise GuardError(
            "plan_has_errors", f"{source}: {len(errors)} error(s); nothing was {action}:\n  {shown}",
            source=source, errors=errors,
        )  # fmt: skip


# -- ad hoc sends --------------------------------------------------------------------


def require_can_send(services: Services, campaign_id: str, sources: Mapping[str, str] | None = None) -> None:
    """An ad hoc send into a scheduled campaign obeys its state and its approval; a
    template of the campaign goes out only as it was approved."""
    stored = services.outbox.campaign(campaign_id)
    if stored is None:
        return  # a campaign that was never scheduled has no state or approval yet
    state = approval_state(services, campaign_id)
    if state:
        raise GuardError(state[0], f"nothing was queued: {state[1]}", campaign=campaign_id)
    approved = (stored.get("snapshot") or {}).get("templates", {})
    changed = sorted(rel for rel, text in (sources or {}).items() if rel in approved and approved[rel] != text)
    if changed:
        raise GuardError("template_changed", f"nothing was queued: templates/{changed[0]} changed since "
                         f"{stored['approved_by']} approved {campaign_id}",
                         campaign=campaign_id, plan_file=stored["plan_file"])  # fmt: skip


# -- the embargo at firing time -------------------------------------------------------


def embargo_of(step: StepInfo) -> datetime | None:
    """The embargo a public step (or one held to it) may not go out before."""
    text = step.settings.get("embargo")
    if not text or not (step.settings.get("public") or step.settings.get("not_before")):
        return None
    return datetime.fromisoformat(text).astimezone(UTC)


def due_at(step: StepInfo, now: datetime) -> datetime:
    """When a fired step's deliveries fall due: now, or the embargo if that is later."""
    embargo = embargo_of(step)
    return embargo if embargo is not None and embargo > now else now
