"""Steps with their counts, campaigns with their approval and next firings, the
processes running around the database, event wording. Set-based (one query for every step's counts, one read of the job store); the
CLI prints these, and a web page can show the same."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from outreach.app import Services
from outreach.guards import approval_state, require_campaign
from outreach.ports import ProcessInfo, StepInfo
from outreach.scheduling import make_scheduler


@dataclass(frozen=True)
class ProcessRow:
    """A scheduler or sender around this database, as ``status`` shows it."""

    process: ProcessInfo
    age: float  # seconds since its last heartbeat
    state: str  # live | silent (missed three heartbeats) | gone (silent past the gone time: pruned soon)

    @property
    def leads(self) -> bool:
        return self.state == "live" and self.process.leader


def process_rows(services: Services, now: datetime, gone: float = 60.0) -> list[ProcessRow]:
    """Every process in the table, leader first, with how long it has been silent."""
    rows = []
    for p in services.processes.listed():
        age = p.age(now)
        state = "live" if p.live(now) else "gone" if age > max(gone, 3 * p.every) else "silent"
        rows.append(ProcessRow(p, age, state))
    return rows


@dataclass(frozen=True)
class StepRow:
    step: StepInfo
    counts: dict[str, int]
    next_firing: datetime | None = None

    def overdue(self, now: datetime) -> bool:
        return self.step.status == "scheduled" and self.step.send_at < now


@dataclass
class CampaignStatus:
    id: str
    name: str
    approved_by: str | None
    approved_at: datetime | None
    problem: str | None  # why it may not send now, or None
    problem_code: str | None = None  # which rule (guards.approval_state), for the edge to phrase
    steps: list[StepRow] = field(default_factory=list)


def step_rows(services: Services, campaign: str | None = None, step_key: str | None = None) -> list[StepRow]:
    """Each step (of a campaign, or one step) with its deliveries by status."""
    counts = services.outbox.counts_by_step(campaign)
    return [StepRow(s, counts.get(s.id, {})) for s in services.outbox.steps(campaign)
            if step_key is None or s.key == step_key]  # fmt: skip


def campaign_status(services: Services, campaign: str | None = None) -> list[CampaignStatus]:
    """Scheduled campaigns (one, or all): approval, and every step with its counts and
    next firing."""
    if campaign is not None and not services.outbox.steps(campaign):
        require_campaign(services, campaign)
    rows = step_rows(services, campaign)
    scheduler = make_scheduler(services)
    scheduler.start(paused=True)
    try:
        firing = {job.id: job.next_run_time for job in scheduler.get_jobs()}
    finally:
        scheduler.shutdown()
    out = []
    for cid in sorted({r.step.campaign for r in rows}):
        stored = services.outbox.campaign(cid)
        if stored is None:  # ad hoc sends only: see the log
            continue
        code, problem = approval_state(services, cid) or (None, None)
        status = CampaignStatus(cid, stored["name"], stored["approved_by"], stored["approved_at"],
                                problem, code)  # fmt: skip
        status.steps = [StepRow(r.step, r.counts, firing.get(f"{cid}:{r.step.key}"))
                        for r in rows if r.step.campaign == cid]  # fmt: skip
        out.append(status)
    return out


def events(services: Services, **filters: Any) -> list[dict[str, Any]]:
    """Log events, the latest ``limit``; filters as ``Outbox.events`` takes them."""
    return services.outbox.events(**filters)


def counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())) or "-"


def recipient(event: dict[str, Any]) -> str:
    """Who or what an event is about: an address, an X post of a thread, the newsroom."""
    if event["email"]:
        return event["email"]
    if event["delivery_id"] is None:
        return ""  # the step's own event
    if event["channel"] == "x":
        return f"X post {event['part'] + 1}"
    return "newsroom" if event["channel"] == "press" else ""


DETAIL_KEYS = ("reason", "code", "reply", "next_attempt", "message_id", "post_id", "in_reply_to",
               "url", "duration_ms", "uncertain", "bounce", "attempt", "stage", "counts_as_attempt")  # fmt: skip


def detail(facts: dict[str, Any]) -> str:
    return "; ".join(f"{k}={facts[k]}" for k in DETAIL_KEYS if facts.get(k) not in (None, ""))
