"""A campaign's report: per step and wave what was planned and what became of it, why
deliveries failed or were skipped, how late the sends were, what was published where.

Read in a fixed number of set-based queries (steps; deliveries by step and status; first
and last send per step; failure reasons; skip reasons; recipients lost since; published
posts; sends per span of time), never one per step or per row.

"Unsubscribed / bounced / complained since": among a step's recipients that it reached
(delivery sent, or uncertain), those whose contact has that status now, or whose
delivery has that event (a recipient's own unsubscribe is logged on their latest
delivery of the campaign; a bounce or complaint that comes back, on the delivery it
answers). Suppression is checked at send time, so each was active when the step sent
to them: the change came after. An address refused at RCPT while sending is a failure
of the step (``bounce`` in its reason), not counted here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from outreach.app import Services
from outreach.guards import require_campaign
from outreach.ports import StepInfo

STATUSES = ("sent", "failed", "deferred", "skipped", "uncertain", "queued", "sending")
LOST = ("unsubscribed", "bounced", "complained")


@dataclass(frozen=True)
class StepReport:
    """One step (``firings`` 1: one firing, with its key) or a plan step in one wave
    with all its firings rolled up (a ``local`` step fires once per zone group)."""

    step: str  # a firing: the step's key; a roll-up: the plan step's id (an ad hoc send's key)
    wave: str | None  # None: an ad hoc send, outside any wave
    channel: str
    template: str
    status: str  # the step's; for a roll-up, its firings' statuses joined
    planned_at: datetime  # the (first) planned instant, UTC
    counts: dict[str, int]  # deliveries by status
    lost: dict[str, int]  # recipients reached who are unsubscribed / bounced / complained now
    first_sent: datetime | None
    last_sent: datetime | None
    firings: int = 1
    # each firing's sends against its own planned instant: the first send's distance
    # (the earliest of a roll-up's firings) and the last send's (the latest)
    first_lag: timedelta | None = None
    last_lag: timedelta | None = None

    @property
    def planned(self) -> int:
        """Recipients planned: the deliveries materialised (one per recipient, or per X post)."""
        return sum(self.counts.values())

    def n(self, status: str) -> int:
        return self.counts.get(status, 0)

    @property
    def pending(self) -> int:
        return self.n("queued") + self.n("sending")



@dataclass(frozen=True)
class ReasonCount:
    """Deliveries of a step (and wave) that failed, or were skipped, for one reason."""

    step: str
    wave: str | None
    count: int
    reason: str  # what outreach says (gave up after N attempts, contact is unsubscribed ...)
    code: int | None = None  # the SMTP or HTTP status code
    reply: str = ""  # the server's words, the recipient's address shown as <recipient>
    stage: str = ""  # the SMTP command the reply answers


@dataclass(frozen=True)
class Published:
    """An X post or a press release that went out."""

    step: str
    wave: str | None
    channel: str
    part: int
    at: datetime
    post_id: str | None
    url: str | None


@dataclass(frozen=True)
class CampaignReport:
    campaign: str
    name: str
    status: str
    approved_by: str | None
    approved_at: datetime | None
    generated_at: datetime
    newsroom: str  # the address the newsroom is served at
    steps: list[StepReport] = field(default_factory=list)  # per plan step and wave
    firings: list[StepReport] = field(default_factory=list)  # per step as stored (each firing)
    failures: list[ReasonCount] = field(default_factory=list)
    skips: list[ReasonCount] = field(default_factory=list)
    published: list[Published] = field(default_factory=list)
    timeline: list[tuple[datetime, int]] = field(default_factory=list)  # sends per span
    bucket_seconds: int = 60  # the span

    @property
    def totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.steps:
            for k, v in (*row.counts.items(), *row.lost.items()):
                out[k] = out.get(k, 0) + v
        out["planned"] = sum(r.planned for r in self.steps)
        return out

    @property
    def planned_instants(self) -> list[tuple[datetime, str]]:
        """Every firing's planned instant with its step's key, in time order."""
        return sorted((f.planned_at, f.step) for f in self.firings)


def _roll_up_key(step: StepInfo) -> tuple[str, str | None]:
    return step.settings.get("plan_step") or step.key, step.settings.get("wave")


_NICE = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
         86400, 2 * 86400, 7 * 86400, 14 * 86400, 30 * 86400)  # fmt: skip


def bucket_for(first: datetime, last: datetime, bars: int = 72) -> int:
    """The shortest span of time (of a few round ones) that shows ``first`` to ``last``
    in at most ``bars`` bars."""
    span = (last - first).total_seconds()
    return next((s for s in _NICE if span / s <= bars), _NICE[-1])


def campaign_report(services: Services, campaign: str) -> CampaignReport:
    """The report of a campaign: a scheduled one, or an id ad hoc sends were logged
    under (an unknown id is an error listing the known)."""
    log = services.outbox
    steps = log.steps(campaign)
    stored = log.campaign(campaign) if steps else require_campaign(services, campaign)
    stored = stored or {"name": campaign, "status": "ad hoc sends only (never scheduled)",
                        "approved_by": None, "approved_at": None}  # fmt: skip
    counts = log.counts_by_step(campaign)
    bounds = log.sent_bounds(campaign)
    lost = log.lost_since(campaign)
    firings = [_firing(s, counts.get(s.id, {}), lost.get(s.id, {}), bounds.get(s.id)) for s in steps]
    by_id = {s.id: _roll_up_key(s) for s in steps}
    groups: dict[tuple[str, str | None], list[StepReport]] = {}
    for s, f in zip(steps, firings, strict=True):
        groups.setdefault(by_id[s.id], []).append(f)
    rows = [_roll_up(key, members) for key, members in groups.items()]
    rows.sort(key=lambda r: (r.planned_at, r.step))
    moments = [t for f in firings for t in (f.planned_at, f.first_sent, f.last_sent) if t is not None]
    bucket = bucket_for(min(moments), max(moments)) if moments else 60
    return CampaignReport(
        campaign=campaign, name=stored["name"], status=stored["status"],
        approved_by=stored["approved_by"], approved_at=stored["approved_at"],
        generated_at=services.clock(), newsroom=services.settings.newsroom[1],
        steps=rows, firings=firings,
        failures=_reasons(log.reason_counts(campaign, "failed"), by_id),
        skips=_reasons(log.reason_counts(campaign, "skipped"), by_id),
        published=[_published(p, by_id, {s.id: s.channel for s in steps}) for p in log.published(campaign)],
        timeline=log.sent_per_bucket(campaign, bucket) if bounds else [],
        bucket_seconds=bucket,
    )  # fmt: skip


def _firing(s: StepInfo, counts: dict[str, int], lost: dict[str, int],
            bounds: tuple[datetime, datetime] | None) -> StepReport:  # fmt: skip
    first, last = bounds or (None, None)
    return StepReport(s.key, s.settings.get("wave"), s.channel, s.template, s.status, s.send_at, counts,
                      lost, first, last, 1, first and first - s.send_at, last and last - s.send_at)  # fmt: skip


def _roll_up(key: tuple[str, str | None], members: list[StepReport]) -> StepReport:
    counts: dict[str, int] = {}
    lost: dict[str, int] = {}
    for m in members:
        for k, v in m.counts.items():
            counts[k] = counts.get(k, 0) + v
        for k, v in m.lost.items():
            lost[k] = lost.get(k, 0) + v
    firsts = [m.first_sent for m in members if m.first_sent is not None]
    lasts = [m.last_sent for m in members if m.last_sent is not None]
    statuses = sorted({m.status for m in members})
    first_lags = [m.first_lag for m in members if m.first_lag is not None]
    last_lags = [m.last_lag for m in members if m.last_lag is not None]
    return StepReport(key[0], key[1], members[0].channel, members[0].template, ", ".join(statuses),
                      min(m.planned_at for m in members), counts, lost,
                      min(firsts) if firsts else None, max(lasts) if lasts else None, len(members),
                      min(first_lags) if first_lags else None, max(last_lags) if last_lags else None)  # fmt: skip


def _reasons(rows: list[dict], by_id: dict[int, tuple[str, str | None]]) -> list[ReasonCount]:
    """Reason counts per step merged per plan step and wave, the largest first."""
    merged: dict[tuple, int] = {}
    for r in rows:
        step, wave = by_id.get(r["step_id"], (str(r["step_id"]), None))
        code = int(r["code"]) if r["code"] not in (None, "") else None
        key = (step, wave, r["reason"], code, r["reply"], r["stage"])
        merged[key] = merged.get(key, 0) + r["n"]
    out = [ReasonCount(step, wave, n, reason, code, reply, stage)
           for (step, wave, reason, code, reply, stage), n in merged.items()]  # fmt: skip
    return sorted(out, key=lambda r: (-r.count, r.step, r.reason, r.reply))


def _published(row: dict, by_id: dict[int, tuple[str, str | None]], channels: dict[int, str]) -> Published:
    step, wave = by_id[row["step_id"]]
    channel = channels[row["step_id"]]
    detail = row["detail"] or {}
    return Published(step, wave, channel, row["part"] or 0, row["at"], detail.get("post_id"),
                     detail.get("url"))  # fmt: skip
