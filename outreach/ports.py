"""Interfaces owned by their consumers (dispatch, scheduling, imports, cli, web).

Adapters in ``db`` and ``channels`` implement them; ``app.build`` picks which.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from outreach.domain.audience import Expr
from outreach.domain.contact import Contact, ContactRecord

Clock = Callable[[], datetime]  # the time now, aware UTC; a rehearsal's runs faster
T = TypeVar("T")


@dataclass
class BatchOutcome:
    """What writing one batch of imported records did."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    existing: int = 0  # already stored and left alone (insert-only mode)
    suppressed: list[int] = field(default_factory=list)  # positions refused: erased addresses

    def add(self, other: BatchOutcome, offset: int) -> None:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.existing += other.existing
        self.suppressed += [offset + i for i in other.suppressed]


class ContactWriter(Protocol):
    """Writes import batches in one transaction. ``preparer()`` gives a picklable
    function that turns a batch of records into the writer's own form in worker
    processes, so the writing process does as little per row as it can."""

    def write(self, records: Sequence[ContactRecord], *, mode: str = "upsert") -> BatchOutcome: ...
    def preparer(self) -> Callable[[Sequence[ContactRecord]], Any]: ...
    def write_prepared(self, block: Any, *, mode: str = "upsert") -> BatchOutcome: ...


class ContactStore(Protocol):
    def writer(self, *, dry_run: bool = False) -> AbstractContextManager[ContactWriter]: ...
    def count(self, expr: Expr) -> int: ...
    def zone_counts(self, expr: Expr) -> dict[str | None, int]: ...
    def find(self, expr: Expr, *, limit: int | None = None, offset: int = 0) -> list[Contact]: ...
    def iterate(self, expr: Expr, *, batch: int = 2000) -> Iterator[Contact]: ...
    def get(self, email: str) -> Contact | None: ...
    def is_suppressed(self, email: str) -> bool: ...
    def add_tag(self, expr: Expr, tag: str) -> int: ...
    def remove_tag(self, expr: Expr, tag: str) -> int: ...
    def set_status(self, expr: Expr, status: str, *, only_if: str | None = "active") -> int: ...
    def reactivate(self, email: str, *, reason: str, by: str) -> str | None: ...
    def delete(
        self, expr: Expr, *, erase: bool = False, reason: str = "erased on request"
    ) -> int: ...


# -- the outbox ----------------------------------------------------------------------


@dataclass(frozen=True)
class StepInfo:
    id: int
    campaign: str
    key: str
    channel: str
    template: str
    audience: str
    send_at: datetime
    status: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class Claimed:
    """A delivery taken for sending, with its contact as it is now."""

    delivery_id: int
    step_id: int
    attempts: int
    uncertain: bool
    contact: Contact

    @classmethod
    def from_row(cls, r: Any, tags: tuple[str, ...] = (), attrs: dict[str, str] | None = None) -> Claimed:
        contact = Contact(
            id=r.contact_id, email=r.email, name=r.name, organization=r.organization,
            kind=r.kind, sector=r.sector, country=r.country, language=r.language,
            timezone=r.timezone, x_handle=r.x_handle, status=r.status, tags=tags,
            attrs=attrs if attrs is not None else dict(r.attrs or {}), created_at=None, updated_at=None,
        )  # fmt: skip
        return cls(r.id, r.step_id, r.attempts, bool(r.uncertain), contact)


@dataclass(frozen=True)
class Outcome:
    """What became of one claimed delivery: its new status and the log event."""

    delivery_id: int
    step_id: int
    contact_id: int | None  # none for an X post or a press release
    status: str  # sent | deferred | failed | skipped | uncertain
    event: str  # sent | deferred | failed | skipped | uncertain
    detail: dict[str, Any]
    message_id: str | None = None
    error: str | None = None
    next_attempt: datetime | None = None
    bounce: bool = False  # the address does not exist: the contact becomes bounced


class Waiting(Protocol):
    """Runs a call, waiting out a database that is busy, full or away (db.patience)."""

    def run(self, what: str, call: Callable[[], T]) -> T: ...


class Campaigns(Protocol):
    """Campaigns (the stored plan, its approval, reschedules) and their steps."""

    def save_campaign(self, campaign_id: str, name: str, plan_file: str, plan_hash: str,
                      snapshot: dict[str, Any] | None = None) -> None: ...  # fmt: skip
    def campaign(self, campaign_id: str) -> dict[str, Any] | None: ...
    def campaign_ids(self) -> list[str]: ...
    def set_overrides(self, campaign_id: str, overrides: dict[str, str]) -> None: ...
    def set_campaign_status(self, campaign_id: str, status: str) -> None: ...
    def approve(self, campaign_id: str, by: str, plan_hash: str) -> None: ...
    def ensure_step(self, *, campaign: str, key: str, channel: str, template: str, audience: str,
                    send_at: datetime, settings: dict[str, Any] | None = None,
                    status: str = "active") -> StepInfo: ...  # fmt: skip
    def update_step(self, step_id: int, **values: Any) -> None: ...
    def step(self, step_id: int) -> StepInfo: ...
    def step_by_key(self, campaign: str, key: str) -> StepInfo | None: ...
    def steps(self, campaign: str | None = None) -> list[StepInfo]: ...
    def set_step_status(self, step_id: int, status: str, reason: str, **facts: Any) -> None: ...
    def log_step(self, step_id: int, event: str, detail: dict[str, Any]) -> None: ...


class DeliveryLog(Protocol):
    """The delivery log, read."""

    def counts(self, step_id: int | None = None, campaign: str | None = None) -> dict[str, int]: ...
    def counts_by_step(self, campaign: str | None = None) -> dict[int, dict[str, int]]: ...
    def pending(self, step_id: int) -> int: ...
    def left_waiting(self, step_id: int | None = None) -> tuple[int, datetime | None, int]: ...
    def due_now(self, campaign: str) -> int: ...
    def next_due(self, channel: str) -> datetime | None: ...
    def sent_since(self, channel: str, since: datetime) -> int: ...
    def events(self, *, campaign: str | None = None, step_key: str | None = None,
               event: str | None = None, email: str | None = None, limit: int = 50,
               since: datetime | None = None, delivery_id: int | None = None) -> list[dict[str, Any]]: ...  # fmt: skip
    # read for people: pages and streams of the log (keyset, by event id), a campaign's report
    def log_events(self, *, step_ids: Sequence[int] | None = None, event: str | None = None,
                   email: str | None = None, search: str | None = None, since: datetime | None = None,
                   until: datetime | None = None, before: int | None = None, after: int | None = None,
                   limit: int = 50, newest_first: bool = True) -> list[dict[str, Any]]: ...  # fmt: skip
    def log_floor(self, n: int, *, step_ids: Sequence[int] | None = None, event: str | None = None,
                  email: str | None = None, search: str | None = None, since: datetime | None = None,
                  until: datetime | None = None) -> int | None: ...  # fmt: skip
    def sent_bounds(self, campaign: str) -> dict[int, tuple[datetime, datetime]]: ...
    def reason_counts(self, campaign: str, event: str) -> list[dict[str, Any]]: ...
    def lost_since(self, campaign: str) -> dict[int, dict[str, int]]: ...
    def published(self, campaign: str) -> list[dict[str, Any]]: ...
    def sent_per_bucket(self, campaign: str, seconds: int) -> list[tuple[datetime, int]]: ...


class Outbox(Campaigns, DeliveryLog, Protocol):
    """Deliveries on their way: materialised from a step's audience, claimed, recorded."""

    patience: Waiting  # how long a stalled database is waited out

    def materialize(self, step: StepInfo, *, batch: int = 20_000,
                    exclude_steps: Sequence[int] = ()) -> int: ...  # fmt: skip
    def skip_pending(self, step_id: int, reason: str) -> int: ...
    def recover(self) -> int: ...
    def claim(self, *, channel: str, limit: int, now: datetime | None = None) -> list[Claimed]: ...
    def record(self, outcomes: Sequence[Outcome]) -> None: ...


@dataclass(frozen=True)
class SendResult:
    """A channel's answer for one message."""

    ok: bool
    permanent: bool = False  # a failure that no retry can mend
    code: int | None = None
    text: str = ""
    bounce: bool = False  # no such mailbox: a recipient-specific refusal at RCPT
    duration_ms: float = 0.0
    # the command the deciding reply answers: connect, EHLO, STARTTLS, AUTH, MAIL,
    # RCPT, DATA, "end of data" (after the message), or "" (no reply)
    stage: str = ""
    refused: bool = False  # the relay refuses us, not this recipient: nobody fails for it
    uncertain: bool = False  # sent whole, but no reply came: the server may have taken it


class EmailChannel(Protocol):
    """Sends one message per call. ``message`` is its bytes, or a function that
    builds them for what the server offers: ``message(eight_bit, utf8)``, called
    once the channel knows (8BITMIME: 8-bit text parts may go unencoded; SMTPUTF8:
    addresses may go in UTF-8, else IDNA domains, and an address with a non-ASCII
    local part cannot go); it may raise ``domain.mime.AddressError``."""

    @property
    def size(self) -> int: ...  # connections: how many messages may be in flight at once
    @property
    def local(self) -> bool: ...  # a target on this machine (the local Maildir): no relay limits apply
    async def send(
        self, sender: str, recipient: str, message: bytes | Callable[[bool, bool], bytes]
    ) -> SendResult: ...
    async def close(self) -> None: ...


# -- X posts and press releases: deliveries without a contact -------------------------


@dataclass(frozen=True)
class PostItem:
    """A claimed X post (``part`` in its thread) or press release (part 0), with what
    it says and, for a reply in a thread, the id of the post it answers."""

    delivery_id: int
    step_id: int
    channel: str
    part: int
    parts: int
    content: dict[str, Any]
    attempts: int
    uncertain: bool
    reply_to: str | None = None


@dataclass(frozen=True)
class PostResult:
    """What X (or a stand-in) answered to one post."""

    ok: bool
    post_id: str | None = None
    # "" when ok; else retry (5xx, connection), rate_limited (429: wait for retry_at),
    # duplicate (X has this text already: probably posted), auth (401/403: the
    # credentials), rejected (400/404: this post cannot go as it is), unknown (an
    # unexpected error: it may or may not have been posted)
    kind: str = ""
    code: int | None = None
    text: str = ""
    retry_at: datetime | None = None
    duration_ms: float = 0.0
    url: str | None = None


class PostTarget(Protocol):
    """What publishes the items of one channel that is not per contact: an X account,
    the newsroom (``channels.x``, ``channels.press``). ``app.SENDERS`` says which
    serves each such channel of ``domain.channels``; the ``Poster`` calls it."""

    name: str  # shown to people: "the X API" or "the file .outreach/x/posts.jsonl ..."
    service: str  # what a logged reason calls where items go: "X", "the newsroom"

    def facts(self, item: PostItem) -> dict[str, Any]: ...  # logged with its outcome
    def deliver(self, item: PostItem, at: datetime) -> PostResult: ...


class Posts(Protocol):
    """The outbox's items of channels that are not per contact (``db.posts``): fixed
    when their step fires, claimed one at a time, decided about by a person."""

    patience: Waiting  # how long a stalled database is waited out

    def materialize(self, step: StepInfo, items: Sequence[dict[str, Any]]) -> int: ...
    def claim(self, *, channels: Sequence[str], now: datetime | None = None) -> PostItem | None: ...
    def delivery(self, delivery_id: int) -> dict[str, Any]: ...
    def retry(self, delivery_id: int, by: str) -> dict[str, Any]: ...
    def mark_sent(self, delivery_id: int, post_id: str, by: str) -> dict[str, Any]: ...


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
