"""What a person can do next, said as commands. Lower layers raise errors with a
``code`` and the facts; this table turns them into the command line's hint (a web
page links to the action instead)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from outreach.domain.errors import OutreachError

Facts = Mapping[str, Any]

HINTS: dict[str, Callable[[Facts], str]] = {
    "unknown_campaign": lambda f: "outreach schedule schedules/PLAN.yaml stores one; outreach status lists them",
    "unknown_step": lambda f: f"outreach status {f['campaign']} lists its steps",
    "unknown_delivery": lambda f: "outreach log shows delivery ids",
    "plan_has_errors": lambda f: f"fix them; outreach plan check {f['source']} shows them all",
    "plan_invalid": lambda f: f"fix them in the file; 'outreach plan check {f.get('source') or 'FILE'}' checks it again",
    "template_changed": lambda f: f"outreach schedule {f['plan_file']}, then approve it again",
    "not_approved": lambda f: f"outreach approve {f['campaign']} --by NAME",
    "changed_since_approval": lambda f: f"outreach approve {f['campaign']} --by NAME",
}


def hint_for(exc: OutreachError) -> str | None:
    """The hint to print under the error: the command for its code, else its own."""
    phrase = HINTS.get(exc.code or "")
    if phrase is None:
        return exc.hint
    try:
        return phrase(exc.facts)
    except KeyError:  # a fact the phrase needs is missing: say what the error itself says
        return exc.hint
