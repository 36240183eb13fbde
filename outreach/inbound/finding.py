"""What a message that came back says: the values ``interpret`` returns. Pure data."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    """What a message that came back is, and what it asks of the contact store."""

    HARD = "hard"  # the address does not work: suppress the contact (bounced)
    SOFT = "soft"  # delayed or temporarily refused: count, never suppress on one
    COMPLAINT = "complaint"  # the recipient reported the message as spam: suppress
    AUTO_REPLY = "auto_reply"  # out of office, vacation, autoresponder: never suppress
    UNPARSEABLE = "unparseable"  # cannot be read (``Finding.reason`` says why): a person looks
    NOT_A_BOUNCE = "not_a_bounce"  # a person's mail, a success report, a read receipt

    @property
    def suppresses(self) -> bool:
        return self in (Kind.HARD, Kind.COMPLAINT)


@dataclass(frozen=True)
class Recipient:
    """One address a report is about. ``kind`` is this address's own: a DSN that names
    several may hold a hard failure for one and a delay for another."""

    address: str  # final_recipient, else original_recipient: the address to act on
    kind: Kind
    final_recipient: str | None = None  # as the reporting server saw it (DSN Final-Recipient)
    original_recipient: str | None = (
        None  # as we gave it (DSN Original-Recipient, ARF Original-Rcpt-To)
    )
    action: str | None = None  # failed, delayed (DSN Action), lower case
    status: str | None = None  # the enhanced status code, "5.1.1"
    diagnostic: str | None = None  # the server's words ("smtp; 550 5.1.1 No such user"), one line


@dataclass(frozen=True)
class Finding:
    """The reading of one message. ``interpret`` never raises: a message it cannot
    read is ``Kind.UNPARSEABLE`` with the ``reason``."""

    kind: Kind
    reason: str  # why it is this kind, in a few words ("DSN: 1 failed 5.x.x", "truncated ...")
    content_hash: (
        str  # sha256 hex of the message as its sender wrote it: the same message read twice
    )
    message_id: str | None = None  # this message's own Message-ID, "<...>"
    recipients: tuple[Recipient, ...] = ()
    original_message_id: str | None = None  # the Message-ID of the message that bounced, "<...>"
    # where this message was delivered and what else names our envelope sender, most
    # telling first: X-Original-To, Delivered-To, Envelope-To, X-Envelope-To; then ARF's
    # Original-Mail-From and the returned message's Return-Path. A VERP address is
    # among them when the message came back to one (see verp.delivery_of).
    envelope_recipients: tuple[str, ...] = ()
    format: str = ""  # which reader recognised it: dsn, arf, auto-reply, flufl.bounce, ...
    feedback_type: str | None = None  # ARF Feedback-Type: abuse, fraud, not-spam, ...
    envelope_id: str | None = None  # DSN Original-Envelope-Id (ENVID), when the sender gave one

    @property
    def envelope_recipient(self) -> str | None:
        return self.envelope_recipients[0] if self.envelope_recipients else None

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(r.address for r in self.recipients)
