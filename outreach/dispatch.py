"""The outbox's two halves: a step's audience becomes delivery rows
(``materialize``), and the sender loop turns due rows into sent, logged email.

The loop claims a batch (each row ``sending`` and logged before anything leaves),
checks each contact again (someone who unsubscribed since is skipped), renders,
sends over the channel's pooled connections within the rate limit, and records
every outcome with its event. A process killed at any instant leaves ``sending``
rows, which the next start sends again and marks uncertain: nothing is lost, and
every possible duplicate is in the log. So does a message sent whole whose reply
never came (``uncertain``): the retry that sends it again is labelled.

A refusal counts against what it refuses. Only a recipient-specific answer to RCPT
bounces a contact; a relay that refuses us (at connect, EHLO, AUTH, MAIL FROM, or
relaying), or answers many recipients in a row with the same permanent reply,
pauses the step with its words and fails nobody: those deliveries wait, their
attempt not spent, for ``outreach resume``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from outreach.domain.campaign import CampaignInfo
from outreach.domain.errors import OutreachError, TemplateError
from outreach.domain.mime import StepHeaders, build, message_id
from outreach.domain.render import EmailTemplate
from outreach.domain.sender import parse_sender
from outreach.policy import RateLimiter, SendPolicy, backoff
from outreach.ports import Claimed, EmailChannel, Outbox, Outcome, SendResult, StepInfo
from outreach.templating import TemplateLibrary, render_values, variant_language

UrlsFor = Callable[[str, str, int], dict[str, str]]  # (campaign, step key, contact id) -> urls


@dataclass
class Stats:
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.sent / elapsed if elapsed > 0 else 0.0


@dataclass
class _Step:
    info: StepInfo
    campaign: CampaignInfo
    headers: StepHeaders
    variants: dict
    limiter: RateLimiter | None = None  # the step's own limits, within the channel's
    failures_in_a_row: int = 0
    permanent_in_a_row: int = 0
    run_key: str | None = None  # the permanent reply of the last recipients in a row...
    run_ids: list[int] = field(default_factory=list)  # ...and their deliveries
    refusal: str | None = None  # the reply that paused the step: held while in flight
    files: dict = field(default_factory=dict)  # language -> the variant it gets
    library: TemplateLibrary | None = None  # the templates the step was scheduled with


class Dispatcher:
    def __init__(
        self,
        outbox: Outbox,
        library: TemplateLibrary,
        channel: EmailChannel,
        *,
        campaign_for: Callable[[str], CampaignInfo],
        urls_for: UrlsFor,
        sender: str | None,
        reply_to: str | None = None,
        policy: SendPolicy | None = None,
        clock: Callable[[], datetime] | None = None,
        on_progress: Callable[[Stats], None] | None = None,
        library_for: Callable[[StepInfo], TemplateLibrary] | None = None,
        envelope: Callable[[int], str] | None = None,
    ) -> None:
        self.outbox = outbox
        self.library = library
        # a step's own templates (its campaign's snapshot), else ``library``
        self.library_for = library_for or (lambda _info: library)
        self.channel = channel
        self.campaign_for = campaign_for
        self.urls_for = urls_for
        self.sender = sender
        self.reply_to = reply_to
        # the envelope sender (MAIL FROM) of a delivery, by its id: the bounce address,
        # per delivery with VERP (bounces.envelope_for); None: the From address
        self.envelope = envelope
        self.policy = policy or SendPolicy()
        self.clock = clock or _utcnow
        self.on_progress = on_progress
        self.stats = Stats()
        self._steps: dict[int, _Step] = {}
        self._held: set[int] = set()  # failed in this batch by a reply found to be the relay's
        self._again: set[int] = set()  # held before: their own reply decides now
        self.limiter = RateLimiter(self.policy.per_second, self.policy.per_hour)

    # -- the loop ----------------------------------------------------------------------
    async def run(self, *, stop: asyncio.Event | None = None, until_idle: bool = False,
                  poll: float = 1.0, recover: bool = True) -> Stats:  # fmt: skip
        """Send until ``stop`` is set (finishing the batch in hand), or with
        ``until_idle`` until nothing is due now. ``recover`` first resolves what a
        stopped sender left ``sending``; only the first of several senders does."""
        stop = stop or asyncio.Event()
        if recover:
            self.outbox.recover()
        since = self.clock() - timedelta(hours=1)
        self.limiter = RateLimiter(
            self.policy.per_second, self.policy.per_hour, self.outbox.sent_since("email", since)
        )
        while not stop.is_set():
            done = await self.run_batch()
            if done:
                continue
            if until_idle:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=poll)
        return self.stats

    @property
    def batch(self) -> int:
        """Large enough to keep every connection busy between two claims, small
        enough that a stopped sender leaves little unsent in hand."""
        return self.policy.batch or min(500, max(50, 25 * self.channel.size))

    async def run_batch(self) -> int:
        claimed = self.outbox.claim(channel="email", limit=self.batch, now=self.clock())
        if not claimed:
            return 0
        for step_id in {c.step_id for c in claimed}:  # claimed, so active again (resumed): afresh
            if step_id in self._steps and self._steps[step_id].info.status != "active":
                del self._steps[step_id]
        claimed = [self._with_history(c) if c.attempts > 1 else c for c in claimed]
        semaphore = asyncio.Semaphore(self.channel.size)
        broken: dict[int, str] = {}  # steps that cannot be prepared: they fail alone

        async def one(item: Claimed) -> Outcome:
            try:
                self._step(item.step_id)
            except OutreachError as exc:
                broken[item.step_id] = exc.message
                return self._outcome(item, "failed", {"reason": f"the step cannot be sent: {exc.message}"},
                                     error=exc.message)  # fmt: skip
            async with semaphore:
                try:
                    return await self._deliver(item)
                except OutreachError as exc:
                    return self._outcome(item, "failed", {"reason": exc.message}, error=exc.message)

        outcomes = await asyncio.gather(*(one(c) for c in claimed))
        if self._held:
            outcomes = [self._hold(o) if o.delivery_id in self._held and o.status == "failed" else o
                        for o in outcomes]  # fmt: skip
            self._held.clear()
        self._again.clear()
        self.outbox.record(outcomes)
        for step_id, reason in broken.items():
            self.outbox.set_step_status(step_id, "failed", f"cannot be sent: {reason}")
            self.outbox.skip_pending(step_id, f"not sent: the step failed ({reason})")
        self._count(outcomes)
        return len(claimed)

    # -- one delivery ------------------------------------------------------------------
    async def _deliver(self, item: Claimed) -> Outcome:
        step = self._step(item.step_id)
        contact = item.contact
        if contact.status != "active":
            return self._outcome(item, "skipped", {"reason": f"contact is {contact.status} (checked at send time)"})
        if step.info.status != "active":
            return self._outcome(item, "deferred", {"reason": f"step {step.info.status}", "counts_as_attempt": False},
                                 next_attempt=self.clock())  # fmt: skip
        file = step.files.get(contact.language)
        if file is None:
            file = step.files[contact.language] = step.library.pick(step.variants, contact.language)  # type: ignore[union-attr]
        try:
            template = step.library.compile(file)  # type: ignore[union-attr]
            assert isinstance(template, EmailTemplate)
            urls = self.urls_for(step.info.campaign, step.info.key, contact.id)
            values = render_values(step.campaign, contact=contact, urls=urls,
                                   lang=variant_language(file, step.campaign),
                                   step={"id": step.info.key, "channel": "email", "template": step.info.template})  # fmt: skip
            email = template.render(values)
        except TemplateError as exc:
            return self._outcome(item, "failed", {"reason": f"template: {exc}"}, error=str(exc))
        msg_id = message_id(step.info.campaign, step.info.key, contact.id, step.headers.domain)
        mailto = f"mailto:unsubscribe@{step.headers.domain}?subject=" + quote(
            f"unsubscribe {step.info.campaign} {contact.id}"
        )
        date = self.clock()

        def compose(eight_bit: bool, utf8: bool) -> bytes:  # for what the server offers
            return build(
                step.headers, to_name=contact.name, to=contact.email, email=email, msg_id=msg_id, date=date,
                unsubscribe_url=urls.get("unsubscribe_url"), unsubscribe_mailto=mailto,
                eight_bit=eight_bit, utf8=utf8,
            )  # fmt: skip

        if step.limiter is not None:
            await step.limiter.acquire()
        await self.limiter.acquire()
        mail_from = self.envelope(item.delivery_id) if self.envelope else step.headers.sender
        result = await self.channel.send(mail_from, contact.email, compose)
        return self._result(item, step, result, msg_id)

    def _result(self, item: Claimed, step: _Step, result: SendResult, msg_id: str) -> Outcome:
        detail = {"code": result.code, "reply": result.text, "duration_ms": result.duration_ms,
                  "message_id": msg_id, "attempt": item.attempts}  # fmt: skip
        if item.uncertain:
            detail["uncertain"] = True
            detail["reason"] = "sent again after an attempt whose outcome is unknown: it may arrive twice"
        if result.ok:
            step.failures_in_a_row = step.permanent_in_a_row = 0
            step.run_key, step.run_ids, step.refusal = None, [], None
            return self._outcome(item, "sent", detail, message_id=msg_id)
        if result.stage:  # the command the reply answers
            detail["stage"] = result.stage
        key = _reply_key(result, item.contact.email) if result.permanent else None
        if result.refused or (key is not None and key == step.refusal):
            return self._refused(item, step, result, detail, held=key is not None and key == step.refusal)
        if key is not None and not result.bounce and item.delivery_id not in self._again:
            if key != step.run_key:
                step.run_key, step.run_ids = key, []
            step.run_ids.append(item.delivery_id)
            if len(step.run_ids) >= self.policy.same_reply:
                step.refusal = key
                self._held.update(step.run_ids)
                return self._refused(item, step, result, detail, same=len(step.run_ids), held=True)
        self._spend(step, result)
        if result.permanent:
            if result.bounce:
                detail["bounce"] = "the address does not exist: the contact is marked bounced"
            return self._outcome(item, "failed", detail, error=result.text, bounce=result.bounce)
        event = "uncertain" if result.uncertain else "deferred"
        if result.uncertain:
            detail["reason"] = ("the message was sent whole but no reply came: the server may have "
                                "taken it, and the next attempt may deliver it twice")  # fmt: skip
        if item.attempts >= self.policy.max_attempts:
            detail["reason"] = f"gave up after {item.attempts} attempts" + (
                "; the last may have been delivered" if result.uncertain else "")
            return self._outcome(item, "failed", detail, error=result.text,  # logged uncertain if it was
                                 event="uncertain" if result.uncertain else "failed")  # fmt: skip
        next_attempt = self.clock() + backoff(item.attempts, self.policy)
        detail["next_attempt"] = next_attempt.isoformat()
        return self._outcome(item, "deferred", detail, error=result.text, next_attempt=next_attempt, event=event)

    def _spend(self, step: _Step, result: SendResult) -> None:
        """One more failure in a row; the error budget spent, the step pauses."""
        step.failures_in_a_row += 1
        step.permanent_in_a_row += result.permanent
        if step.failures_in_a_row < self.policy.error_budget or step.info.status != "active":
            return
        n, permanent = step.failures_in_a_row, step.permanent_in_a_row
        kind = "temporary failures" if not permanent else f"failures ({permanent} permanent)"
        reason = f"{n} {kind} in a row (last: {result.text}); the relay looks down or refuses this mail"
        self.outbox.set_step_status(step.info.id, "paused", reason, action="resume")
        step.info = self.outbox.step(step.info.id)

    def _refused(self, item: Claimed, step: _Step, result: SendResult, detail: dict, *, same: int = 0,
                 held: bool = False) -> Outcome:  # fmt: skip
        """The relay refuses us, not this recipient: the step pauses with its words; this
        delivery waits for ``outreach resume``, its attempt not spent."""
        words = f"{result.code or ''} {result.text}".strip()
        why = f"the same reply for {same} recipients in a row" if same else _STAGES.get(result.stage, result.stage)
        if step.info.status == "active":
            self.outbox.set_step_status(step.info.id, "paused", (
                f"the relay refuses us: {words} ({why}); nobody was failed for it"), action="resume")  # fmt: skip
            step.info = self.outbox.step(step.info.id)
        detail.update(reason=f"held: the relay refuses us ({why}); not an attempt", counts_as_attempt=False)
        if held:  # the next time, this delivery's own reply decides
            detail["held"] = "same reply"
        return self._outcome(item, "deferred", detail, error=result.text, next_attempt=self.clock())

    def _hold(self, outcome: Outcome) -> Outcome:
        """A failure of this batch that turned out to be the relay's: held instead."""
        detail = {**outcome.detail, "reason": "held: the relay refuses us (the same reply for many "
                  "recipients in a row); not an attempt", "counts_as_attempt": False, "held": "same reply"}  # fmt: skip
        return dataclasses.replace(outcome, status="deferred", event="deferred", detail=detail,
                                   bounce=False, next_attempt=self.clock())  # fmt: skip

    def _with_history(self, item: Claimed) -> Claimed:
        """A delivery tried before, with the attempts it has spent (a claim deferred
        because its step paused, or held for the relay's refusal, is none) and whether
        an earlier attempt may have delivered it."""
        events = self.outbox.events(delivery_id=item.delivery_id, limit=1000)
        claims = sum(1 for e in events if e["event"] == "sending") or item.attempts  # one per claim
        free = sum(1 for e in events if e["detail"].get("counts_as_attempt") is False)
        if any(e["detail"].get("held") for e in events):
            self._again.add(item.delivery_id)
        uncertain = item.uncertain or any(e["event"] == "uncertain" for e in events)
        return dataclasses.replace(item, attempts=max(1, claims - free), uncertain=uncertain)

    @staticmethod
    def _outcome(item: Claimed, status: str, detail: dict, *, message_id: str | None = None,
                 error: str | None = None, next_attempt: datetime | None = None,
                 bounce: bool = False, event: str | None = None) -> Outcome:  # fmt: skip
        return Outcome(
            delivery_id=item.delivery_id, step_id=item.step_id, contact_id=item.contact.id,
            status=status, event=event or status, detail=detail, message_id=message_id, error=error,
            next_attempt=next_attempt, bounce=bounce,
        )  # fmt: skip

    def _step(self, step_id: int) -> _Step:
        if step_id not in self._steps:
            info = self.outbox.step(step_id)
            campaign = self.campaign_for(info.campaign)
            name, addr = parse_sender(self.sender or campaign.sender)
            headers = StepHeaders.make(
                sender_name=name, sender=addr, reply_to=self.reply_to or campaign.reply_to,
                campaign_id=info.campaign, campaign_name=campaign.name,
            )  # fmt: skip
            library = self.library_for(info)
            _kind, variants = library.variants(info.template, "email")
            limiter = None
            if "per_second" in info.settings or "per_hour" in info.settings:
                limiter = RateLimiter(
                    float(info.settings.get("per_second", self.policy.per_second)),
                    int(info.settings.get("per_hour", self.policy.per_hour)),
                )
            self._steps[step_id] = _Step(info, campaign, headers, variants, limiter, library=library)
        return self._steps[step_id]

    def _count(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            name = o.status if o.status in ("sent", "failed", "deferred") else "skipped"
            setattr(self.stats, name, getattr(self.stats, name) + 1)
        if self.on_progress:
            self.on_progress(self.stats)


_STAGES = {"connect": "when we connect", "EHLO": "at EHLO", "STARTTLS": "at STARTTLS",
           "AUTH": "at AUTH: check the user and password of OUTREACH_SMTP_URL",
           "MAIL": "at MAIL FROM: the sender", "RCPT": "at RCPT TO: relaying or the sender"}  # fmt: skip


def _reply_key(result: SendResult, recipient: str) -> str:
    """A permanent reply as it would read for any recipient (their address left out)."""
    text = re.sub(re.escape(recipient), "<>", result.text, flags=re.IGNORECASE) if recipient else result.text
    return f"{result.stage} {result.code} {text}"


def _utcnow() -> datetime:
    return datetime.now(UTC)
