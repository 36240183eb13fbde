"""A delivery's message (the dispatcher's preparation): its step as it was scheduled
(headers, templates, the step's own rate limits), the contact checked again (someone
who unsubscribed since is skipped), the email rendered for them and built for what
the server offers, with its Message-ID, List-Unsubscribe and envelope sender."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from outreach.domain.campaign import CampaignInfo
from outreach.domain.errors import OutreachError, TemplateError
from outreach.domain.mime import StepHeaders, build, message_id
from outreach.domain.render import EmailTemplate
from outreach.domain.sender import parse_sender
from outreach.policy import LimiterFor, RateLimiter, SendPolicy
from outreach.ports import Claimed, Outbox, Outcome, StepInfo
from outreach.replies import StepState
from outreach.templating import TemplateLibrary, render_values, variant_language

UrlsFor = Callable[[str, str, int], dict[str, str]]  # (campaign, step key, contact id) -> urls


@dataclass
class Ready:
    """A message rendered for one claimed delivery, waiting for its window."""

    item: Claimed
    step: StepState
    compose: Callable[[bool, bool], bytes]
    msg_id: str
    mail_from: str


class Messages:
    """The dispatcher's preparation of messages (a mixin: ``Dispatcher`` holds the state)."""

    outbox: Outbox
    policy: SendPolicy
    clock: Callable[[], datetime]
    campaign_for: Callable[[str], CampaignInfo]
    urls_for: UrlsFor
    library_for: Callable[[StepInfo], TemplateLibrary]
    sender: str | None
    reply_to: str | None
    envelope: Callable[[int], str] | None
    limits: LimiterFor | None
    _steps: dict[int, StepState]
    _outcome: Callable[..., Outcome]

    def _prepare(self, item: Claimed, broken: dict[int, str]) -> Outcome | Ready:
        """The message for one delivery, ready to go; or its outcome (skipped, failed)."""
        try:
            step = self._step(item.step_id)
        except OutreachError as exc:
            broken[item.step_id] = exc.message
            return self._outcome(item, "failed", {"reason": f"the step cannot be sent: {exc.message}"},
                                 error=exc.message)  # fmt: skip
        try:
            return self._render(item, step)
        except OutreachError as exc:
            return self._outcome(item, "failed", {"reason": exc.message}, error=exc.message)

    def _render(self, item: Claimed, step: StepState) -> Outcome | Ready:
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

        mail_from = self.envelope(item.delivery_id) if self.envelope else step.headers.sender
        return Ready(item, step, compose, msg_id, mail_from)

    def _step(self, step_id: int) -> StepState:
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
                per_second = float(info.settings.get("per_second", self.policy.per_second))
                per_hour = int(info.settings.get("per_hour", self.policy.per_hour))
                limiter = (RateLimiter(per_second, per_hour) if self.limits is None
                           else self.limits(f"step:{step_id}", per_second, per_hour))  # fmt: skip
            self._steps[step_id] = StepState(info, campaign, headers, variants, limiter, library=library)
        return self._steps[step_id]
