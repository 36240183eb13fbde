"""The report channel: a campaign's report mailed to staff addresses (a plan step with
``channel: report`` and ``to:``), so that people who never sign in read the result.

A step fires one item: the campaign and the staff addresses, fixed then. The report
itself is made when the item is sent, so it says what happened up to that moment:
``compose`` (wired in ``app``, where the review package is reachable) gives the
subject, a short text version and the HTML report, and the message goes over SMTP
(the relay, or the local Maildir target) to each address in turn on one connection,
each with its own ``To:`` and the same Message-ID (a message sent again, after a
crash or a retry, can be recognised as the same report).

One item for all the addresses, not one each: the outbox sends a step's items in
order, each once the one before it is sent (as an X thread needs), so a mistyped
address would hold the report back from everyone after it. The item is sent when at
least one address took it; the reply names every address that did not, and why. It
is retried when none took it for a reason that may pass (and sending a report again
is harmless: the registry's ``resend_after_crash``), and fails when every address
was refused for good.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from outreach.domain.errors import OutreachError
from outreach.domain.mime import StepHeaders, build, message_id
from outreach.domain.render import RenderedEmail
from outreach.domain.sender import parse_sender
from outreach.ports import EmailChannel, PostItem, PostResult, SendResult


@dataclass(frozen=True)
class ReportMail:
    """What ``compose`` gives for a campaign at an instant: the message's words and
    who it is from (as the campaign's email is: the settings' sender, else the plan's)."""

    subject: str
    text: str  # the text/plain alternative: a short version (counts per step)
    html: str  # the report's self-contained HTML page, already escaped
    sender: str | None  # From as written, e.g. '"COP team" <cop@example.org>'
    reply_to: str | None = None
    campaign_name: str = ""


Compose = Callable[[str, datetime], ReportMail]  # (campaign id, now) -> the mail
Connect = Callable[[], AbstractContextManager[tuple[EmailChannel, str]]]  # an SMTP channel, opened


class ReportMailer:
    """``ports.PostTarget`` of the report channel. ``connect`` opens the email channel
    for one delivery (reports are few: a connection each)."""

    service = "the mail relay"

    def __init__(self, compose: Compose, connect: Connect, *, name: str) -> None:
        self.compose = compose
        self.connect = connect
        self.name = name

    def facts(self, item: PostItem) -> dict[str, Any]:
        return {"to": list(item.content.get("to", []))}

    def deliver(self, item: PostItem, at: datetime) -> PostResult:
        started = time.monotonic()
        content = item.content
        recipients = [str(a) for a in content.get("to", [])]
        try:
            mail = self.compose(str(content["campaign"]), at)
            name, sender = parse_sender(mail.sender)
        except OutreachError as exc:  # no report for that campaign, or no sender: no retry mends it
            return PostResult(False, kind="rejected", text=exc.message)
        headers = StepHeaders.make(sender_name=name, sender=sender, reply_to=mail.reply_to,
                                   campaign_id=str(content["campaign"]),
                                   campaign_name=mail.campaign_name or str(content["campaign"]))  # fmt: skip
        msg_id = message_id(str(content["campaign"]), str(content.get("step", "report")), item.delivery_id,
                            headers.domain)  # fmt: skip
        email = RenderedEmail(mail.subject, "", mail.text, mail.html, "en")

        def compose_for(to: str) -> Callable[[bool, bool], bytes]:
            def compose(eight_bit: bool, utf8: bool) -> bytes:
                return build(headers, to_name=None, to=to, email=email, msg_id=msg_id, date=at,
                             eight_bit=eight_bit, utf8=utf8)  # fmt: skip

            return compose

        with self.connect() as (channel, _where):  # the poster calls this in a thread without a loop
            results = asyncio.run(_send_each(channel, sender, recipients, compose_for))
        return _judge(list(zip(recipients, results, strict=True)), msg_id,
                      round((time.monotonic() - started) * 1000, 1))  # fmt: skip


async def _send_each(channel: EmailChannel, sender: str, recipients: list[str],
                     compose_for: Callable[[str], Callable[[bool, bool], bytes]]) -> list[SendResult]:  # fmt: skip
    try:
        return [await channel.send(sender, to, compose_for(to)) for to in recipients]
    finally:
        await channel.close()


def _why(to: str, r: SendResult) -> str:
    if r.uncertain:
        return f"not to {to}: no reply (it may have arrived)"
    said = " ".join(p for p in (str(r.code) if r.code else "", f"at {r.stage}" if r.stage else "", r.text) if p)
    return f"not to {to}: {said}"


def _judge(results: list[tuple[str, SendResult]], msg_id: str, duration_ms: float) -> PostResult:
    """One outcome for the message: sent when an address took it (the others named
    in the reply), else retried when a refusal may pass, else failed."""
    took = [to for to, r in results if r.ok]
    missed = [(to, r) for to, r in results if not r.ok]
    why = "; ".join(_why(to, r) for to, r in missed)
    if took:
        text = f"sent to {', '.join(took)}" + (f"; {why}" if why else "")
        return PostResult(True, post_id=msg_id, code=250, text=text, duration_ms=duration_ms)
    if any(r.refused and r.stage == "AUTH" for _to, r in missed):
        kind = "auth"  # the relay refused the credentials: the step stops
    elif any(r.uncertain or not r.permanent for _to, r in missed):
        kind = "retry"
    else:
        kind = "rejected"
    code = next((r.code for _to, r in missed if r.code), None)
    return PostResult(False, kind=kind, code=code, text=why or "no address to send to",
                      duration_ms=duration_ms)  # fmt: skip
