"""Deliveries that are items of their own: X posts, press releases, any channel the
registry (``domain.channels``) declares not per contact. When its step fires, what it
says is rendered once, by the renderer of its template kind, and fixed in the outbox
(``prepare``); the ``Poster`` then hands one item at a time to its channel's
``PostTarget``, each claimed under its holder's lease and written ``sending`` (and
logged), within the channel's rate limits for the whole deployment (X: per 15 minutes
and per day), marked ``handed`` right before the call, each outcome recorded:

- sent: X's post id (a thread's next post replies to it) or the page's address;
- 429: the item, and every X post after it, waits until X's reset time;
- 5xx or no answer: retried with backoff (a retry of a post X did get comes back
  "duplicate content", which is logged uncertain, never posted twice);
- duplicate content: uncertain, for a person to decide (the log says so);
- 401/403: the step fails with a message about the credentials; 400: that item fails;
- an unexpected error: retried, or uncertain on a channel that is never sent again
  blindly (``Channel.resend_after_crash``: X).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from outreach.domain import channels
from outreach.domain.campaign import CampaignInfo, slugify
from outreach.domain.errors import OutreachError, TemplateError
from outreach.domain.render import X_MAX_WEIGHTED, PressTemplate, XPost, XTemplate
from outreach.identity import lease_seconds, process_id
from outreach.policy import SendPolicy, backoff
from outreach.ports import Outbox, Outcome, PostItem, PostResult, Posts, PostTarget, StepInfo
from outreach.ports.outbox import Limit, Rates
from outreach.templating import (
    TemplateFile,
    TemplateLibrary,
    missing_image_message,
    render_values,
    variant_language,
)


def _x_posts(library: TemplateLibrary, campaign: CampaignInfo, template_name: str,
             step: dict[str, Any] | None) -> tuple[TemplateFile, list[XPost]]:  # fmt: skip
    _kind, variants = library.variants(template_name, "x")
    file = library.pick(variants, campaign.language)
    template = library.compile(file)
    assert isinstance(template, XTemplate)
    return file, template.render(
        render_values(campaign, step=step, lang=variant_language(file, campaign))
    )


def render_posts(library: TemplateLibrary, campaign: CampaignInfo, template_name: str,
                 step: dict[str, Any] | None = None) -> list[XPost]:  # fmt: skip
    """An X template's posts for the campaign (in its variant's language; no contact)."""
    return _x_posts(library, campaign, template_name, step)[1]


def prepare(library: TemplateLibrary, campaign: CampaignInfo, step: StepInfo) -> list[dict[str, Any]]:
    """The items of a step whose channel is not per contact, rendered for the campaign
    (no contact) by its template kind's renderer; an error before anything is posted
    if a post is too long or an image is missing."""
    kind = channels.channel(step.channel).template_kind
    if kind not in RENDERERS:
        raise OutreachError(f"channel {step.channel!r} renders {kind} templates, which make no items")
    about = {"id": step.key, "channel": step.channel, "template": step.template}
    return RENDERERS[kind](library, campaign, step, about)


def _x_items(library: TemplateLibrary, campaign: CampaignInfo, step: StepInfo,
             about: dict[str, Any]) -> list[dict[str, Any]]:  # fmt: skip
    """An X post or thread: one item per post, each within X's length."""
    file, posts = _x_posts(library, campaign, step.template, about)
    for i, post in enumerate(posts, 1):
        if post.weighted_length > X_MAX_WEIGHTED:
            raise TemplateError(f"post {i} of {len(posts)} is {post.weighted_length} long as X "
                                f"counts it; at most {X_MAX_WEIGHTED}", file=file.rel)  # fmt: skip
    missing = library.missing_images(posts, file.rel)
    if missing:
        raise TemplateError(missing_image_message(missing[0], library.media), file=file.rel,
                            hint="put the image in media/, or change the template's image: line")  # fmt: skip
    return [{"text": p.text, "weighted_length": p.weighted_length,
             "images": [[i.path, i.alt] for i in p.images]} for p in posts]  # fmt: skip


def _press_items(library: TemplateLibrary, campaign: CampaignInfo, step: StepInfo,
                 about: dict[str, Any]) -> list[dict[str, Any]]:  # fmt: skip
    """A press release: one item, the page with its slug, headline and summary."""
    _kind, variants = library.variants(step.template, "press")
    file = library.pick(variants, campaign.language)
    template = library.compile(file)
    assert isinstance(template, PressTemplate)
    release = template.render(
        render_values(campaign, step=about, lang=variant_language(file, campaign))
    )
    wave = step.settings.get("wave")
    name = step.settings.get("plan_step") or step.template
    slug = slugify(f"{campaign.id}-{name}" + (f"-{wave}" if wave and wave != "launch" else ""))
    first = re.search(r"<p>(.*?)</p>", release.body_html, re.DOTALL)
    summary = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", first.group(1) if first else "")).strip()
    return [{"slug": slug, "headline": release.headline, "dateline": release.dateline,
             "summary": summary[:400], "campaign": campaign.id, "html": release.html}]  # fmt: skip


def _report_items(_library: TemplateLibrary, campaign: CampaignInfo, step: StepInfo,
                  _about: dict[str, Any]) -> list[dict[str, Any]]:  # fmt: skip
    """A campaign report for staff: one item, who gets it; the report itself is made
    when it is sent (``channels.report``), so it tells what happened until then."""
    recipients = list(step.settings.get("to") or [])
    if not recipients:
        raise OutreachError("the report step names no staff address to mail it to (to:)")
    return [{"campaign": campaign.id, "to": recipients, "step": step.key, "wave": step.settings.get("wave")}]


# X's posting limits for one account (posts, replies in a thread included), for every
# process that posts to it (``checks`` holds the same numbers for the plan check).
X_LIMITS = (Limit("x:15min", 100, 15 * 60.0), Limit("x:day", 2_400, 24 * 3600.0))

# A template kind's items: (library, campaign, step, what the template sees of the step).
Renderer = Callable[[TemplateLibrary, CampaignInfo, StepInfo, dict[str, Any]], list[dict[str, Any]]]
RENDERERS: dict[str, Renderer] = {"x": _x_items, "press": _press_items, "report": _report_items}


@dataclass
class PostStats:
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    uncertain: int = 0


class Poster:
    """Posts the due items of the channels in ``targets`` (channel name -> what
    publishes its items), one at a time, each outcome recorded in the outbox."""

    def __init__(self, posts: Posts, outbox: Outbox, *, targets: Mapping[str, PostTarget],
                 policy: SendPolicy | None = None, clock: Callable[[], datetime] | None = None,
                 holder: str | None = None, rates: Rates | None = None,
                 limits: Mapping[str, Sequence[Limit]] | None = None) -> None:  # fmt: skip
        self.posts = posts
        self.outbox = outbox
        self.targets = dict(targets)
        self.policy = policy or SendPolicy()
        self.clock = clock or (lambda: datetime.now(UTC))
        self.holder = holder or process_id()  # who holds what this poster claims
        # limits per channel, shared by every process through ``rates`` (X's own)
        self.rates = rates
        self.limits = dict(limits or {})
        self.blocked_until: dict[str, datetime] = {}  # channel -> its rate-limit reset
        self.stats = PostStats()
        self.stopping = threading.Event()
        self._renewed = self._taken_over = time.monotonic()

    def channels(self) -> list[str]:
        now = self.clock()
        return [c for c in self.targets if self.blocked_until.get(c, now) <= now]

    def run_due(self) -> int:
        """Post everything due now, one item at a time; returns how many were handled."""
        handled = 0
        while not self.stopping.is_set():
            self._upkeep()
            ready = self.channels()
            item = self.posts.claim(channels=ready, now=self.clock(), holder=self.holder) if ready else None
            if item is None:
                break
            outcome = self._limited(item) or self._post(item)
            if outcome is not None:  # None: taken over meanwhile, another sender's now
                self.outbox.record([outcome], holder=self.holder)
            handled += 1
        return handled

    async def run(self, *, stop: asyncio.Event, until_idle: bool = False, poll: float = 1.0) -> PostStats:
        """Post until ``stop`` is set, or with ``until_idle`` until nothing is due and
        no other process holds a post (a dead one's are taken over when their lease
        expires)."""
        while not stop.is_set():
            handled = await asyncio.to_thread(self.run_due)
            wait = poll
            if handled == 0:
                idle_look = time.monotonic() - self._taken_over >= lease_seconds() / 3
                if until_idle or idle_look:  # what dead senders left, their leases expired
                    self._taken_over = time.monotonic()
                    if await asyncio.to_thread(self.outbox.recover, by=self.holder):
                        continue
                if until_idle:
                    until = await asyncio.to_thread(self.outbox.held_until, list(self.targets), by=self.holder)
                    if until is None:
                        break
                    wait = min(poll, max(0.05, (until - self.clock()).total_seconds() + 0.05))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
        return self.stats

    def _upkeep(self) -> None:
        """This poster's leases renewed, and expired ones taken over, from time to time."""
        now = time.monotonic()
        if now - self._renewed >= lease_seconds() / 3:
            self.outbox.renew(self.holder)
            self._renewed = now
        if now - self._taken_over >= lease_seconds():
            self.outbox.recover(by=self.holder)
            self._taken_over = now

    def _limited(self, item: PostItem) -> Outcome | None:
        """A deferral when the channel's shared limits leave nothing now (every post of
        the channel waits until then, as for the service's own 429); else None."""
        limits = self.limits.get(item.channel)
        if not limits or self.rates is None:
            return None
        granted, wait = self.rates.take(limits, 1)
        if granted:
            return None
        until = self.clock() + timedelta(seconds=max(wait, 1.0))
        self.blocked_until[item.channel] = until
        self.stats.deferred += 1
        service = self.targets[item.channel].service
        reason = (f"{service} rate limit ({', '.join(f'{limit.count:g} per {_span(limit.per)}' for limit in limits)}"
                  f", for every sender) reached: every {service} post waits until {until:%Y-%m-%d %H:%M:%S} UTC")  # fmt: skip
        return Outcome(delivery_id=item.delivery_id, step_id=item.step_id, contact_id=None, status="deferred",
                       event="deferred", detail={"part": item.part, "of": item.parts, "attempt": item.attempts,
                                                 "reason": reason}, next_attempt=until)  # fmt: skip

    # -- one item --------------------------------------------------------------------------
    def _post(self, item: PostItem) -> Outcome | None:
        target = self.targets[item.channel]
        detail: dict[str, Any] = {"part": item.part, "of": item.parts, "attempt": item.attempts}
        if not self.outbox.hand([item.delivery_id], self.holder):  # handed, durably, before the call
            return None
        try:
            detail.update(target.facts(item))
            result = target.deliver(item, self.clock())
        except OSError as exc:  # e.g. the newsroom folder cannot be written
            result = PostResult(False, kind="retry", text=f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # the outcome is unknown: a person decides, where a crash means that
            again = channels.channel(item.channel).resend_after_crash
            result = PostResult(False, kind="retry" if again else "unknown",
                                text=f"unexpected {type(exc).__name__}: {exc}")  # fmt: skip
        detail.update(code=result.code, reply=result.text, duration_ms=result.duration_ms)
        return self._outcome(item, result, detail)

    def _outcome(self, item: PostItem, result: PostResult, detail: dict[str, Any]) -> Outcome:
        def outcome(status: str, **kw: Any) -> Outcome:
            return Outcome(delivery_id=item.delivery_id, step_id=item.step_id, contact_id=None,
                           status=status, event=status, detail=detail, **kw)  # fmt: skip

        if result.ok:
            self.stats.sent += 1
            detail.update(post_id=result.post_id, url=result.url)
            return outcome("sent", message_id=result.post_id)
        if result.kind == "rate_limited":
            until = result.retry_at or self.clock() + timedelta(minutes=15)
            self.blocked_until[item.channel] = until
            self.stats.deferred += 1
            service = self.targets[item.channel].service
            detail["reason"] = (f"{service} rate limit reached: every {service} post waits until "
                                f"{until:%Y-%m-%d %H:%M:%S} UTC")  # fmt: skip
            return outcome("deferred", error=result.text, next_attempt=until)
        if result.kind in ("duplicate", "unknown"):
            self.stats.uncertain += 1
            service = self.targets[item.channel].service
            why = "probably posted already" if result.kind == "duplicate" else f"it may or may not be on {service}"
            detail["reason"] = f"{why} ({result.text}); find it on the account"
            detail["decide"] = "retry or mark-sent"  # a person decides; the edge names the commands
            return outcome("uncertain", error=result.text)
        if result.kind == "auth":
            self.stats.failed += 1
            detail["reason"] = f"the step stops: {self.targets[item.channel].service} refused the credentials"
            self.outbox.set_step_status(item.step_id, "failed", result.text)
            return outcome("failed", error=result.text)
        if result.kind == "retry" and item.attempts < self.policy.max_attempts:
            self.stats.deferred += 1
            next_attempt = self.clock() + backoff(item.attempts, self.policy)
            detail["next_attempt"] = next_attempt.isoformat()
            return outcome("deferred", error=result.text, next_attempt=next_attempt)
        self.stats.failed += 1
        if result.kind == "retry":
            detail["reason"] = f"gave up after {item.attempts} attempts"
        return outcome("failed", error=result.text)


def _span(seconds: float) -> str:
    return {900.0: "15 minutes", 3600.0: "hour", 86400.0: "day"}.get(seconds, f"{seconds:g} s")
