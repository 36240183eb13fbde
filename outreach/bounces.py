"""Mail that comes back, handled: read a message (``inbound``), find the delivery it is
about, and store what it does (``db.inbound``: a hard bounce or a complaint suppresses
the contact, soft bounces are counted, auto-replies only logged), once per message.

    tally = ingest(services, read_paths(["/var/mail/bounces"]))   # Maildir, mbox, .eml, "-"
    tally = fetch(services)                                        # the IMAP bounce mailbox

A message is marked processed (moved to the processed folder) only once its
transaction is committed: a process stopped half-way reads the rest again, and a
message read twice (its content hash) does nothing the second time.

Sending: ``envelope_for(settings)`` gives each delivery's envelope sender (MAIL FROM):
the return path, or with VERP its signed per-delivery form, so that a bounce names
its delivery whatever the report looks like.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from outreach.config import Settings
from outreach.domain.errors import ConfigError
from outreach.inbound import ImapMailbox, InboundMessage, delivery_of, interpret, verp_address
from outreach.inbound.finding import Finding
from outreach.ports import BounceRules, Recorded, ReturnedMail, ReturnedRecipient

if TYPE_CHECKING:
    import ssl

    from outreach.app import Services

KINDS = ("hard", "soft", "complaint", "auto_reply", "unparseable", "not_a_bounce")
_FUTURE = timedelta(days=1)  # a Date further ahead than this is not believed


def rules(settings: Settings) -> BounceRules:
    return BounceRules(soft_limit=settings.soft_limit, soft_days=settings.soft_days,
                       match_days=settings.match_days)  # fmt: skip


# -- sending: the envelope sender -------------------------------------------------------


def envelope_for(settings: Settings) -> Callable[[int], str] | None:
    """The envelope sender of each delivery (by its id): the return path, signed per
    delivery with VERP; None when no return path is set (the From address is used).
    Raises ConfigError for a return path that VERP cannot extend."""
    path = settings.return_path
    if not path:
        return None
    if not settings.verp:
        return lambda _delivery_id: path
    from outreach.links import secret_key

    key = secret_key(settings)
    try:
        verp_address(path, 10**12, key)  # the longest id a workspace will reach
    except ValueError as exc:
        raise ConfigError(f"return_path {path!r} cannot take VERP: {exc}", code="verp_return_path",
                          hint="a return path with a short local part and no '+', e.g. bounces@example.org") from None  # fmt: skip
    return lambda delivery_id: verp_address(path, delivery_id, key)


# -- reading ------------------------------------------------------------------------------


@dataclass
class Tally:
    """What one ingest or fetch did."""

    read: int = 0  # messages read
    again: int = 0  # of them, read before: nothing done again
    kinds: Counter[str] = field(default_factory=Counter)  # new messages by kind
    effects: Counter[str] = field(default_factory=Counter)  # events logged: bounced, complained, ...
    changed: Counter[str] = field(default_factory=Counter)  # contacts whose status changed, by new status
    unmatched: int = 0  # new messages naming someone no delivery matches
    stopped: bool = False  # asked to stop before the end

    def add(self, recorded: Recorded, kind: str) -> None:
        self.read += 1
        if not recorded.new:
            self.again += 1
            return
        self.kinds[kind] += 1
        self.unmatched += any(a.delivery_id is None for a in recorded.applied)
        for applied in recorded.applied:
            if applied.delivery_id is not None:
                self.effects[applied.effect] += 1
            if applied.became:
                self.changed[applied.became] += 1


def returned(message: InboundMessage, settings: Settings, key: bytes | None) -> ReturnedMail:
    """``message`` read: what it is, the delivery its VERP return path names (when the
    workspace has a return path), its date. Never raises for what the message holds."""
    finding = interpret(message.raw)
    verp = None
    if settings.return_path and key is not None:
        verp = delivery_of(finding.envelope_recipients, settings.return_path, key)
    return ReturnedMail(
        content_hash=finding.content_hash, kind=finding.kind.value, reason=finding.reason,
        source=message.source, dated=_date(message.raw), format=finding.format,
        message_id=_cut(finding.message_id, 250), original_message_id=_cut(finding.original_message_id, 250),
        feedback_type=_cut(finding.feedback_type, 64), verp_delivery=verp, recipients=_recipients(finding),
        raw=message.raw,
    )  # fmt: skip


def ingest(services: Services, messages: Iterable[InboundMessage], *,
           stop: threading.Event | None = None,
           on_each: Callable[[InboundMessage, Recorded], None] | None = None) -> Tally:  # fmt: skip
    """Read, store and act on each message, then mark it processed (where its
    mailbox can keep that). ``stop`` set: ends after the message in hand."""
    repo, rule = services.inbound, rules(services.settings)
    key = _key(services.settings)
    tally = Tally()
    for message in messages:
        mail = returned(message, services.settings, key)
        recorded = repo.record(mail, rule)
        if message.mark_processed is not None:
            message.mark_processed()
        tally.add(recorded, mail.kind)
        if on_each is not None:
            on_each(message, recorded)
        if stop is not None and stop.is_set():
            tally.stopped = True
            break
    return tally


def mailbox(settings: Settings, *, ssl_context: ssl.SSLContext | None = None) -> ImapMailbox:
    """The IMAP bounce mailbox of the settings, not yet connected. Raises ConfigError
    when its URL or password is not set, InboundError for a URL that cannot be used."""
    if not settings.bounce_imap_url:
        raise ConfigError("no bounce mailbox is set", code="bounce_imap_unset")
    if not settings.bounce_imap_password:
        raise ConfigError(f"no password for the bounce mailbox {settings.bounce_imap_url}",
                          code="bounce_imap_password")  # fmt: skip
    return ImapMailbox(settings.bounce_imap_url, settings.bounce_imap_password,
                       processed=settings.bounce_processed_folder, ssl_context=ssl_context)  # fmt: skip


def fetch(services: Services, *, limit: int | None = None, every: bool = False,
          stop: threading.Event | None = None, ssl_context: ssl.SSLContext | None = None,
          on_each: Callable[[InboundMessage, Recorded], None] | None = None) -> Tally:  # fmt: skip
    """Read the IMAP bounce mailbox (OUTREACH_BOUNCE_IMAP_URL, its password in
    OUTREACH_BOUNCE_IMAP_PASSWORD): its unseen messages (``every``: all), each moved to
    the processed folder once stored. Raises as ``mailbox`` does, and InboundError when
    the server cannot be reached or refuses."""
    with mailbox(services.settings, ssl_context=ssl_context) as box:
        return ingest(services, box.messages(limit, unseen=not every), stop=stop, on_each=on_each)


# -- what people read ---------------------------------------------------------------------


def listing(services: Services, *, kind: str | None = None, unmatched: bool = False,
            limit: int = 50) -> tuple[dict[str, int], list[dict[str, Any]]]:  # fmt: skip
    """Counts by kind (and unmatched), and the latest messages that fit."""
    repo = services.inbound
    return repo.counts(), repo.messages(kind=kind, unmatched=unmatched, limit=limit)


# -- helpers ------------------------------------------------------------------------------


def _key(settings: Settings) -> bytes | None:
    if not settings.return_path:
        return None
    from outreach.links import secret_key

    return secret_key(settings)


def _recipients(finding: Finding) -> tuple[ReturnedRecipient, ...]:
    out = []
    for r in finding.recipients:
        original = r.original_recipient if r.original_recipient and r.original_recipient != r.address else None
        out.append(ReturnedRecipient(_cut(r.address, 320), r.kind.value, _cut(original, 320),
                                     _cut(r.status, 20), r.diagnostic))  # fmt: skip
    return tuple(out)


def _date(raw: bytes) -> datetime | None:
    """The message's Date, aware UTC; None when it has none that can be read, or one
    more than a day ahead."""
    try:
        value = BytesHeaderParser().parsebytes(raw[:65536]).get("Date")
        when = parsedate_to_datetime(str(value)) if value else None
    except (TypeError, ValueError, IndexError, LookupError):
        return None
    if when is None:
        return None
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return None if when > datetime.now(UTC) + _FUTURE else when


def _cut(value: str | None, size: int) -> str | None:
    return None if value is None else value[:size]
