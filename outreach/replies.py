"""What a server's reply makes of a delivery and its step (the dispatcher's rules):
sent; a bounce (the address does not exist); a retry with backoff and jitter, then
failed; uncertain (the message went whole, no reply came: the retry is labelled); or
a hold, when the relay refuses us rather than the recipient: the step pauses with
the relay's words and nobody is failed for it. Failures in a row spend the step's
error budget, which pauses it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from outreach.domain.campaign import CampaignInfo
from outreach.domain.mime import StepHeaders
from outreach.policy import Limiter, SendPolicy, backoff
from outreach.ports import Claimed, Outbox, Outcome, SendResult, StepInfo
from outreach.templating import TemplateLibrary


@dataclass
class StepState:
    """What the dispatcher keeps of a step while it sends: its headers and templates,
    its own rate limits, and the failures and permanent replies in a row so far."""

    info: StepInfo
    campaign: CampaignInfo
    headers: StepHeaders
    variants: dict
    limiter: Limiter | None = None  # the step's own limits, within the channel's
    failures_in_a_row: int = 0
    permanent_in_a_row: int = 0
    run_key: str | None = None  # the permanent reply of the last recipients in a row...
    run_ids: list[int] = field(default_factory=list)  # ...and their deliveries
    refusal: str | None = None  # the reply that paused the step: held while in flight
    files: dict = field(default_factory=dict)  # language -> the variant it gets
    library: TemplateLibrary | None = None  # the templates the step was scheduled with


class Replies:
    """The dispatcher's rules for replies (a mixin: ``Dispatcher`` holds the state)."""

    outbox: Outbox
    policy: SendPolicy
    clock: Callable[[], datetime]
    _held: set[int]  # failed in this batch by a reply found to be the relay's
    _again: set[int]  # held before: their own reply decides now

    def _result(self, item: Claimed, step: StepState, result: SendResult, msg_id: str) -> Outcome:
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

    def _spend(self, step: StepState, result: SendResult) -> None:
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

    def _refused(self, item: Claimed, step: StepState, result: SendResult, detail: dict, *, same: int = 0,
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


_STAGES = {"connect": "when we connect", "EHLO": "at EHLO", "STARTTLS": "at STARTTLS",
           "AUTH": "at AUTH: check the user and password of OUTREACH_SMTP_URL",
           "MAIL": "at MAIL FROM: the sender", "RCPT": "at RCPT TO: relaying or the sender"}  # fmt: skip


def _reply_key(result: SendResult, recipient: str) -> str:
    """A permanent reply as it would read for any recipient (their address left out)."""
    text = re.sub(re.escape(recipient), "<>", result.text, flags=re.IGNORECASE) if recipient else result.text
    return f"{result.stage} {result.code} {text}"
