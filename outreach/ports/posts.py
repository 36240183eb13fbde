"""Deliveries without a contact: X posts, press releases, reports; who publishes them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from outreach.ports.outbox import StepInfo, Waiting

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
    def claim(self, *, channels: Sequence[str], now: datetime | None = None,
              holder: str | None = None) -> PostItem | None: ...  # fmt: skip
    def delivery(self, delivery_id: int) -> dict[str, Any]: ...
    def retry(self, delivery_id: int, by: str) -> dict[str, Any]: ...
    def mark_sent(self, delivery_id: int, post_id: str, by: str) -> dict[str, Any]: ...
