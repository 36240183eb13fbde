"""The outbox: campaigns and steps, deliveries materialised, claimed and recorded, the log read, and the email channel."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from outreach.domain.contact import Contact

T = TypeVar("T")


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
    # ``only_from``: only if the step is in one of these now (one statement); whether it moved
    def set_step_status(self, step_id: int, status: str, reason: str, *,
                        only_from: Sequence[str] | None = None, **facts: Any) -> bool: ...
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


class Leases(Protocol):
    """Who holds a claimed (``sending``) delivery, and until when. A holder is a
    process's id (``identity.process_id``); its lease lasts ``identity.lease_seconds()``
    unless renewed. Only an expired lease (or a row claimed without a holder, as
    before leases) is taken over; a live sender's rows never are."""

    def recover(self, *, by: str | None = None) -> int: ...  # take over expired leases (not ``by``'s own)
    def renew(self, holder: str) -> int: ...  # every ``sending`` row of the holder: a fresh lease
    def hand(self, delivery_ids: Sequence[int], holder: str) -> set[int]: ...  # handed=1; those still held
    def held_until(self, channels: Sequence[str], *, by: str) -> datetime | None: ...  # others' latest lease


class Outbox(Campaigns, DeliveryLog, Leases, Protocol):
    """Deliveries on their way: materialised from a step's audience, claimed, recorded."""

    patience: Waiting  # how long a stalled database is waited out

    def materialize(self, step: StepInfo, *, batch: int = 20_000,
                    exclude_steps: Sequence[int] = ()) -> int: ...  # fmt: skip
    def skip_pending(self, step_id: int, reason: str) -> int: ...
    def claim(self, *, channel: str, limit: int, now: datetime | None = None,
              holder: str | None = None) -> list[Claimed]: ...  # fmt: skip
    def record(self, outcomes: Sequence[Outcome], *, holder: str | None = None) -> None: ...


BURST_SHARE = 0.1  # a bucket holds a tenth of its limit: a burst never doubles a second's count


@dataclass(frozen=True)
class Limit:
    """At most ``count`` in any ``per`` seconds, for every process of the deployment
    (``name``: "email:second", "email:hour", "x:15min", "step:12:second" ...); a limit
    under a minute is a token bucket, which may add its ``burst`` to that."""

    name: str
    count: float
    per: float

    @property
    def burst(self) -> float:
        """The most a token bucket of this limit holds (``BURST_SHARE`` of ``count``, at
        least one): an even pace, and at most ``count`` + ``burst`` in any ``per``
        seconds, even after a quiet spell."""
        return max(1.0, self.count * BURST_SHARE)


class Rates(Protocol):
    """Rate limits shared by every sender process, kept in the database."""

    # up to ``want`` units within every limit at once: (granted, seconds until more may be)
    def take(self, limits: Sequence[Limit], want: int) -> tuple[int, float]: ...


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
