"""Deliveries that are items of their own: X posts, press releases, any channel the
registry (``domain.channels``) declares not per contact. When its step fires, what it
says is rendered once, by the renderer of its template kind, and fixed in the outbox
(``prepare``); the ``Poster`` then hands one item at a time to its channel's
``PostTarget``, each written ``sending`` (and logged) before the call, each outcome
recorded:

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from outreach.domain import channels
from outreach.domain.campaign import CampaignInfo, slugify
from outreach.domain.errors import OutreachError, TemplateError
from outreach.domain.render import X_MAX_WEIGHTED, PressTemplate, XPost, XTemplate
from outreach.policy import SendPolicy, backoff
from outreach.ports import Outbox, Outcome, PostItem, PostResult, Posts, PostTarget, StepInfo
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
                 policy: SendPolicy | None = None, clock: Callable[[], datetime] | None = None) -> None:  # fmt: skip
        self.posts = posts
        self.outbox = outbox
        self.targets = dict(targets)
        self.policy = policy or SendPolicy()
        self.clock = clock or (lambda: datetime.now(UTC))
        self.blocked_until: dict[str, datetime] = {}  # channel -> its rate-limit reset
        self.stats = PostStats()
        self.stopping = threading.Event()

    def channels(self) -> list[str]:
        now = self.clock()
        return [c for c in self.targets if self.blocked_until.get(c, now) <= now]

    def run_due(self) -> int:
        """Post everything due now, one item at a time; returns how many were handled."""
        handled = 0
        while not self.stopping.is_set():
            ready = self.channels()
            item = self.posts.claim(channels=ready, now=self.clock()) if ready else None
            if item is None:
                break
            outcome = self._post(item)
            self.outbox.record([outcome])
            handled += 1
        return handled

    async def run(self, *, stop: asyncio.Event, until_idle: bool = False, poll: float = 1.0) -> PostStats:
        while not stop.is_set():
            handled = await asyncio.to_thread(self.run_due)
            if until_idle and handled == 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=poll)
        return self.stats

    # -- one item --------------------------------------------------------------------------
    def _post(self, item: PostItem) -> Outcome:
        target = self.targets[item.channel]
        detail: dict[str, Any] = {"part": item.part, "of": item.parts, "attempt": item.attempts}
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
