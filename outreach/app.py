"""The one place where adapters are chosen: settings in, services out."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from outreach.bounces import envelope_for
from outreach.channels.maildir import MaildirServer
from outreach.channels.press import Newsroom
from outreach.channels.report import ReportMail, ReportMailer
from outreach.channels.smtp import SmtpPool, parse_smtp_url
from outreach.config import Settings
from outreach.db.contacts import SqlContactStore
from outreach.db.engine import open_database
from outreach.db.models import utcnow
from outreach.db.outbox import SqlOutbox
from outreach.db.patience import Patience
from outreach.db.posts import SqlPosts
from outreach.db.rates import SqlRates
from outreach.dispatch import Dispatcher, Stats
from outreach.domain import channels
from outreach.domain.campaign import CampaignInfo, parse_launch
from outreach.domain.errors import ConfigError, OutreachError
from outreach.links import Links
from outreach.plans import scan_plans
from outreach.policy import SendPolicy, shared_limiters
from outreach.ports import (
    Clock,
    Consent,
    ContactStore,
    EmailChannel,
    Inbound,
    Outbox,
    Posts,
    PostTarget,
    Processes,
    StepInfo,
    Users,
)
from outreach.posting import X_LIMITS, Poster
from outreach.templating import TemplateLibrary

if TYPE_CHECKING:  # review reads the services: imported where it is used
    from outreach.review import CampaignReport


@dataclass
class Services:
    settings: Settings
    engine: Engine
    contacts: ContactStore
    outbox: Outbox
    clock: Clock = utcnow
    _campaigns: dict[str, CampaignInfo] = field(default_factory=dict)
    _libraries: dict[str, TemplateLibrary] = field(default_factory=dict)  # snapshot templates
    _plans_errors: dict[str, OutreachError] | None = None  # None: schedules/ not read yet

    def close(self) -> None:
        self.engine.dispose()

    @cached_property
    def posts(self) -> Posts:
        return SqlPosts(self.engine, self.clock)

    def x_channel(self, *, local: bool = False) -> PostTarget:
        """The X API with the credentials in the environment; without any (or with
        ``local``), a file in .outreach/x/ that shows exactly what would be posted."""
        from outreach.channels.x import XApi, XCredentials, XFile

        credentials = None if local else XCredentials.from_env(self.settings.x_env)
        if credentials is None:
            return XFile(self.settings.state_dir / "x" / "posts.jsonl")
        return XApi(credentials, self.media)

    def newsroom(self) -> Newsroom:
        folder, url = self.settings.newsroom
        return Newsroom(folder, url)

    def report_mailer(self, *, local: bool = False) -> PostTarget:
        """The report channel's sender: a campaign's report, made when it is sent, mailed
        to staff through the relay of OUTREACH_SMTP_URL, or else (and with ``local``)
        to the local Maildir target, as email goes."""
        maildir = self.settings.state_dir / "outbox" if local else None
        if self.settings.smtp_url and maildir is None:
            where = parse_smtp_url(self.settings.smtp_url).safe_url
        else:
            where = f"the local Maildir {self.settings.state_dir / 'outbox'}"
        return ReportMailer(self.report_mail, lambda: self.email_channel(maildir), name=f"staff, through {where}")

    def report_mail(self, campaign_id: str, at: datetime) -> ReportMail:
        """The report of ``campaign_id`` as it is now, as an email to staff: subject, a
        short text version (per step counts) and the HTML report."""
        from outreach.review import campaign_report, render_report

        report = campaign_report(self, campaign_id)
        campaign = self.campaign(campaign_id)
        day = at.astimezone(campaign.launch.tzinfo)
        return ReportMail(subject=f"Report: {report.name} — {day:%Y-%m-%d}", text=report_text(report),
                          html=render_report(report, "html"), sender=self.settings.sender or campaign.sender,
                          reply_to=self.settings.reply_to or campaign.reply_to, campaign_name=report.name)  # fmt: skip

    def post_targets(self, *, local: bool = False) -> dict[str, PostTarget]:
        """What publishes the items of each registered channel that is not per contact
        (``SENDERS``); ``local``: nothing leaves this machine."""
        targets = {}
        for name in channels.posted():
            if name not in SENDERS:
                raise ConfigError(f"channel {name!r} is registered without a sender (app.SENDERS)")
            targets[name] = SENDERS[name](self, local)
        return targets

    def poster(self, *, local: bool = False) -> Poster:
        from outreach.channels.x import XApi

        targets = self.post_targets(local=local)
        # X's limits are the account's, shared by every process posting to it; a stand-in has none
        limits = {"x": X_LIMITS} if isinstance(targets.get("x"), XApi) else {}
        rates = SqlRates(self.engine, self.clock, self.posts.patience) if limits else None  # type: ignore[arg-type]
        return Poster(self.posts, self.outbox, targets=targets, clock=self.clock, rates=rates, limits=limits)

    @cached_property
    def templates(self) -> TemplateLibrary:
        return TemplateLibrary(self.settings.workspace / "templates", media=self.media)

    def library_for(self, step: StepInfo) -> TemplateLibrary:
        """The templates a step renders: those it was queued with (an ad hoc send), or
        its campaign's as scheduled; the workspace's files only for a campaign stored
        before snapshots were."""
        sources = step.settings.get("templates")
        key = f"step:{step.id}" if sources is not None else f"campaign:{step.campaign}"
        if key not in self._libraries:
            if sources is None:
                sources = ((self.outbox.campaign(step.campaign) or {}).get("snapshot") or {}).get("templates")
            self._libraries[key] = (self.templates if sources is None else TemplateLibrary(
                self.settings.workspace / "templates", media=self.media, sources=sources))  # fmt: skip
        return self._libraries[key]

    @property
    def media(self) -> Path:
        """The images X posts attach (``image: FILE`` in a template)."""
        return self.settings.workspace / "media"

    @cached_property
    def links(self) -> Links:
        return Links(self.settings)

    def campaign(self, campaign_id: str) -> CampaignInfo:
        """The campaign of that id as it was scheduled (its snapshot, moved by any
        reschedule); else from schedules/, or a bare one for ad-hoc sends. A plan that
        cannot be read is skipped, unless it is the one asked for (its campaign id can
        be read): then its error is raised."""
        stored = self.outbox.campaign(campaign_id)
        if stored is not None and stored.get("snapshot"):
            from outreach.snapshots import campaign_of

            return campaign_of(stored["snapshot"], stored.get("overrides"))
        if self._plans_errors is None:
            self._plans_errors = {}
            for entry in scan_plans(self.settings.workspace):
                if entry.campaign is None:
                    if entry.campaign_id and entry.error is not None:
                        self._plans_errors.setdefault(entry.campaign_id, entry.error)
                    continue
                info = entry.campaign
                stored = self.outbox.campaign(info.id)
                moved = (stored or {}).get("overrides", {}).get("launch")
                if moved:  # rescheduled: templates show the new launch
                    info = replace(info, launch=parse_launch(moved, source="launch"))
                self._campaigns[info.id] = info
        if campaign_id in self._campaigns:
            return self._campaigns[campaign_id]
        if campaign_id in self._plans_errors:
            raise self._plans_errors[campaign_id]
        return CampaignInfo(campaign_id, campaign_id, datetime.now(UTC))

    @contextmanager
    def email_channel(self, maildir: Path | None = None) -> Iterator[tuple[EmailChannel, str]]:
        """The SMTP relay of OUTREACH_SMTP_URL or else (and always with ``maildir``)
        the local Maildir target: a real SMTP server on 127.0.0.1 that keeps messages
        in ``.outreach/outbox/``. Yields the pool and a description safe to show."""
        if self.settings.smtp_url and maildir is None:
            target = parse_smtp_url(self.settings.smtp_url)
            yield SmtpPool(target), target.safe_url
            return
        folder = maildir or self.settings.state_dir / "outbox"
        with MaildirServer(folder) as server:
            pool = SmtpPool(parse_smtp_url(server.url), local=True)
            note = "" if maildir else " (no OUTREACH_SMTP_URL set)"
            yield pool, f"the local Maildir {folder}{note}"

    def dispatcher(self, channel: EmailChannel, *,
                   on_progress: Callable[[Stats], None] | None = None) -> Dispatcher:  # fmt: skip
        s = self.settings
        # A relay's limits do not apply to the local Maildir target; a relay's are the
        # deployment's, shared by every sender process through the database.
        per_second = 100_000.0 if channel.local else s.rate_per_second
        per_hour = 10**9 if channel.local else s.rate_per_hour
        limits = None if channel.local else shared_limiters(
            SqlRates(self.engine, self.clock, self.outbox.patience))  # type: ignore[arg-type]
        return Dispatcher(
            self.outbox, self.templates, channel,
            campaign_for=self.campaign,
            urls_for=lambda campaign, step, contact_id: self.links.for_contact(campaign, step, contact_id),
            sender=s.sender, reply_to=s.reply_to,
            policy=SendPolicy(per_second=per_second, per_hour=per_hour),
            on_progress=on_progress, clock=self.clock, library_for=self.library_for,
            envelope=envelope_for(s),  # the bounce address (per delivery with VERP), or From
            limits=limits,
        )  # fmt: skip

    # -- staff, consent and returned mail ------------------------------------------------
    @cached_property
    def users(self) -> Users:
        from outreach.db.users import SqlUsers

        return SqlUsers(self.engine, self.clock)

    @cached_property
    def consent(self) -> Consent:
        from outreach.db.consent import SqlConsent

        return SqlConsent(self.engine, self.clock, Patience(limit=10.0))

    @cached_property
    def processes(self) -> Processes:
        """The schedulers and senders around this database, and the leadership lock."""
        from outreach.db.processes import SqlProcesses

        return SqlProcesses(self.engine)

    @cached_property
    def inbound(self) -> Inbound:
        from outreach.db.inbound import SqlInbound

        return SqlInbound(self.engine, self.clock)

    def healthy(self) -> None:
        """Raises unless the database answers at once with its schema current."""
        from outreach.db.users import SqlUsers

        SqlUsers(self.engine, patience=Patience(limit=0.0)).ping()

    def fresh(self) -> Services:
        """These services without what they cached of campaigns and their templates:
        what a long-running server asks when a campaign may have been scheduled again."""
        return replace(self, _campaigns={}, _libraries={}, _plans_errors=None)


# The sender of each channel whose deliveries are items of their own (posts, releases;
# ``domain.channels.posted``), by the name the registry gives it: one line a channel.
# ``local``: a stand-in on this machine (a rehearsal: nothing is published).
SENDERS: dict[str, Callable[[Services, bool], PostTarget]] = {
    "x": lambda services, local: services.x_channel(local=local),
    "press": lambda services, _local: services.newsroom(),
    "report": lambda services, local: services.report_mailer(local=local),
}


def report_text(report: CampaignReport) -> str:
    """A report's text/plain alternative: its heading and each step's counts."""
    from outreach.review.render import heading

    lines = [*heading(report), ""]
    for row in report.steps:
        counts = ", ".join(f"{k} {row.n(k):,}" for k in ("sent", "failed", "deferred", "skipped", "uncertain"))
        wave = f" ({row.wave})" if row.wave else ""
        lines.append(f"{row.step}{wave}, {row.channel}: planned {row.planned:,}, {counts}, pending {row.pending:,}")
    t = report.totals
    lines += ["", "Total: " + ", ".join(f"{k} {t.get(k, 0):,}" for k in ("planned", "sent", "failed", "skipped")),
              "", "The HTML part of this message is the whole report, with its charts."]  # fmt: skip
    return "\n".join(lines) + "\n"


def build(settings: Settings, clock: Clock = utcnow) -> Services:
    """Open (and if needed create or upgrade) the database and wire the services."""
    engine = open_database(settings.database_url)
    from outreach.links import secret_key

    contacts = SqlContactStore(engine, key=lambda: secret_key(settings))  # erasures: HMAC, keyed
    return Services(settings=settings, engine=engine, contacts=contacts,
                    outbox=SqlOutbox(engine, clock), clock=clock)  # fmt: skip


__all__ = ["SENDERS", "Services", "Stats", "build"]
