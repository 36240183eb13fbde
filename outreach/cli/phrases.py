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
    "campaign_paused": lambda f: f"outreach resume {f['campaign']} continues it",
    "user_exists": lambda f: f"outreach users passwd {f['user']} sets a new password",
    "unknown_user": lambda f: "outreach users add NAME --role viewer|operator|admin",
    "workspace_exists": lambda f: f"use it as it is (outreach -w {f['folder']} ...), or choose a new folder",
    "changed_since_approval": lambda f: f"outreach approve {f['campaign']} --by NAME",
    # returned mail (outreach bounces)
    "bounce_imap_unset": lambda f: "set OUTREACH_BOUNCE_IMAP_URL (e.g. imaps://bounces@mail.example.org/INBOX) "
    "and OUTREACH_BOUNCE_IMAP_PASSWORD; or read files with outreach bounces ingest PATH",
    "bounce_imap_password": lambda f: "set OUTREACH_BOUNCE_IMAP_PASSWORD in the environment (it is never kept "
    "in outreach.toml or the database)",
    "imap_login": lambda f: "check the user in OUTREACH_BOUNCE_IMAP_URL and the password in OUTREACH_BOUNCE_IMAP_PASSWORD",
    "imap_connect": lambda f: "check the host and port in OUTREACH_BOUNCE_IMAP_URL, and that the server is up",
    "imap_folder": lambda f: "check the folder in OUTREACH_BOUNCE_IMAP_URL and bounces.processed_folder",
    "unknown_inbound": lambda f: "outreach bounces list shows their ids",
    "inbound_not_kept": lambda f: f"outreach bounces show {f['inbound']} shows what was read from it",
    # processes around one database (outreach run --role)
    "scheduler_running": lambda f: "let it fire them; 'outreach run --role sender --until-idle' sends what is "
    "due from here, and 'outreach status' lists the processes",
    "scheduler_lock_held": lambda f: "a scheduler stopped a moment ago lets it go within seconds: try again; "
    "'outreach status' lists the processes",
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


def next_step(code: str | None, campaign: str) -> str:
    """``": COMMAND"`` for a campaign that may not send now (``guards.approval_state``)."""
    phrase = HINTS.get(code or "")
    return f": {phrase({'campaign': campaign})}" if phrase else ""
