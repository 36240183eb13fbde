"""Mail that comes back: bounces, complaints, auto-replies, stored once each."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from outreach.ports.outbox import Waiting

# -- mail that comes back: bounces, complaints, auto-replies ---------------------------


@dataclass(frozen=True)
class ReturnedRecipient:
    """One address a returned message is about, as its report names it."""

    address: str | None  # none: a complaint whose report names nobody (redacted)
    kind: str  # hard | soft | complaint | auto_reply: this address's own
    original: str | None = None  # as we gave it (DSN Original-Recipient), when it differs
    status: str | None = None  # the enhanced status code, "5.1.1"
    diagnostic: str | None = None  # the server's words


@dataclass(frozen=True)
class ReturnedMail:
    """One message that came back to the bounce address, read (``inbound.interpret``),
    in the store's terms."""

    content_hash: str  # the same message read twice has the same one
    kind: str  # hard | soft | complaint | auto_reply | unparseable | not_a_bounce
    reason: str
    source: str  # where it was read: a file, "stdin", an IMAP folder and uid (no password)
    dated: datetime | None  # its Date header, aware UTC (None: none that can be read)
    format: str = ""
    message_id: str | None = None
    original_message_id: str | None = None  # the Message-ID of the message it returns
    feedback_type: str | None = None
    verp_delivery: int | None = None  # the delivery its VERP return path names (verified)
    recipients: tuple[ReturnedRecipient, ...] = ()
    raw: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class BounceRules:
    """What returned mail does: ``soft_limit`` soft bounces of distinct deliveries within
    ``soft_days`` count as hard; a bounce that names only an address is about the latest
    delivery sent to it within ``match_days`` before it; unparseable and unmatched
    messages are kept (their first ``keep_raw`` bytes) for a person."""

    soft_limit: int = 3
    soft_days: int = 15
    match_days: int = 30
    keep_raw: int = 1 << 20


@dataclass(frozen=True)
class Applied:
    """What one recipient of a returned message came to: ``effect`` is the event logged
    on its delivery (bounced, soft_bounce, complained, auto_reply), or unmatched."""

    address: str | None
    kind: str
    effect: str
    delivery_id: int | None = None
    matched_by: str | None = None  # verp | message_id | recipient
    contact: str | None = None  # the address of the delivery's contact
    became: str | None = None  # the contact's new status, when this changed it


@dataclass(frozen=True)
class Recorded:
    """A returned message stored: ``new`` False when it was read before (the same
    content hash), and nothing was done again."""

    inbound_id: int
    new: bool
    applied: tuple[Applied, ...] = ()


class Inbound(Protocol):
    """Returned mail, stored once per message with its effects in one transaction."""

    patience: Waiting

    def record(self, mail: ReturnedMail, rules: BounceRules) -> Recorded: ...
    def counts(self) -> dict[str, int]: ...  # messages by kind, and "unmatched"
    def messages(self, *, kind: str | None = None, unmatched: bool = False,
                 limit: int = 50) -> list[dict[str, Any]]: ...  # fmt: skip
    def message(self, inbound_id: int) -> dict[str, Any] | None: ...
    def about_contact(self, contact_id: int, *, limit: int = 20) -> list[dict[str, Any]]: ...
