"""The delivery log's events, filtered: a page at a time, newest first (the web's
"older" link), or all of them streamed oldest first (``outreach log --format csv``).

Both walk ``delivery_events.id`` by keyset (``id < before`` / ``id > after``, never
OFFSET), a chunk per read, so memory stays flat however long the log is. The filters
that concern steps (campaign, step, wave, channel) are resolved to step ids once, from
the steps table (one query); the log is then read by those steps' ids
(``outreach.db.log_pages``: each step's events picked by index, newest or oldest
first, never all of them read and sorted for one page)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from outreach.app import Services
from outreach.domain.errors import InputFileError
from outreach.ports import StepInfo
from outreach.review.status import recipient


@dataclass(frozen=True)
class LogFilter:
    """Which events: every field given must hold (None: any)."""

    campaign: str | None = None
    step: str | None = None  # a step's key, or a plan step's id (every firing of it)
    wave: str | None = None  # a plan's wave id ("launch" is the first)
    channel: str | None = None  # email, x, press
    event: str | None = None  # sent, failed, deferred, skipped, uncertain, materialized...
    contact: str | None = None  # exact address, case-insensitive
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # inclusive
    search: str | None = None  # substring of the recipient address (web search box), case-insensitive

    def step_matches(self, step: StepInfo) -> bool:
        """Whether the step-level filters (campaign, step, wave, channel) let it through."""
        settings = step.settings
        return ((self.campaign is None or step.campaign == self.campaign)
                and (self.step is None or self.step in (step.key, settings.get("plan_step")))
                and (self.wave is None or settings.get("wave") == self.wave)
                and (self.channel is None or step.channel == self.channel))  # fmt: skip

    @property
    def by_step(self) -> bool:
        return any(v is not None for v in (self.campaign, self.step, self.wave, self.channel))


class _Steps:
    """The steps an event can belong to, read once; a step made since is read when
    one of its events shows up."""

    def __init__(self, services: Services, flt: LogFilter) -> None:
        self.services = services
        self.by_id = {s.id: s for s in services.outbox.steps(flt.campaign)}
        self.ids = [i for i, s in self.by_id.items() if flt.step_matches(s)] if flt.by_step else None

    def event(self, row: dict[str, Any]) -> dict[str, Any]:
        step = self.by_id.get(row["step_id"])
        if step is None:
            step = self.by_id[row["step_id"]] = self.services.outbox.step(row["step_id"])
        row.update(campaign=step.campaign, step=step.key, wave=step.settings.get("wave"),
                   channel=step.channel, detail=row["detail"] or {})  # a row of our own: filled in
        return row


def _query(flt: LogFilter) -> dict[str, Any]:
    return {"event": flt.event, "email": flt.contact, "search": flt.search, "since": flt.since,
            "until": flt.until}  # fmt: skip


def log_page(
    services: Services, flt: LogFilter, *, before: int | None = None, limit: int = 50
) -> tuple[list[dict[str, Any]], int | None]:
    """Events matching ``flt`` with ids below ``before`` (None: from the newest), newest
    first, at most ``limit``; and the cursor for the next older page (pass it as
    ``before``), or None when there is none."""
    steps = _Steps(services, flt)
    if steps.ids is not None and not steps.ids:
        return [], None
    rows = services.outbox.log_events(step_ids=steps.ids, before=before, limit=limit + 1,
                                      newest_first=True, **_query(flt))  # fmt: skip
    more = len(rows) > limit
    page = [steps.event(r) for r in rows[:limit]]
    return page, (page[-1]["id"] if more and page else None)


def iter_log(
    services: Services, flt: LogFilter, *, chunk: int = 5000, latest: int = 0
) -> Iterator[dict[str, Any]]:
    """Every event matching ``flt``, oldest first, read ``chunk`` at a time (each a
    query of its own: nothing is held open between chunks). ``latest``: only the
    latest that many (0: all), still oldest first."""
    steps = _Steps(services, flt)
    if steps.ids is not None and not steps.ids:
        return
    after: int | None = None
    if latest:
        floor = services.outbox.log_floor(latest, step_ids=steps.ids, **_query(flt))
        if floor is None:
            return
        after = floor - 1
    while True:
        rows = services.outbox.log_events(step_ids=steps.ids, after=after, limit=chunk,
                                          newest_first=False, **_query(flt))  # fmt: skip
        for row in rows:
            yield steps.event(row)
        if len(rows) < chunk:
            return
        after = rows[-1]["id"]


# -- one flat row per event, for csv and json -------------------------------------------

LOG_COLUMNS: tuple[str, ...] = (
    "id", "at", "campaign", "step", "wave", "channel", "event", "delivery_id", "recipient",
    "email", "part", "attempt", "code", "stage", "reply", "reason", "message_id", "post_id",
    "url", "detail",
)  # fmt: skip

_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)  # made once: per row it costs
_FROM_DETAIL = ("attempt", "code", "stage", "reply", "reason", "message_id", "post_id", "url")


def _scalar(value: Any) -> str | int | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return value
    return str(value)


def log_record(event: dict[str, Any]) -> dict[str, str | int | None]:
    """The event as one flat row (the keys of ``LOG_COLUMNS``): the facts most read
    have columns of their own; ``detail`` holds every fact, as compact JSON."""
    facts = event["detail"]
    record: dict[str, str | int | None] = {
        "id": event["id"], "at": event["at"].astimezone(UTC).isoformat(timespec="microseconds"), "campaign": event["campaign"],
        "step": event["step"], "wave": event["wave"], "channel": event["channel"],
        "event": event["event"], "delivery_id": event["delivery_id"], "recipient": recipient(event),
        "email": event["email"], "part": event["part"],
    }  # fmt: skip
    for key in _FROM_DETAIL:
        record[key] = _scalar(facts.get(key))
    record["detail"] = _COMPACT.encode(facts)
    return record


# -- --since / --until ------------------------------------------------------------------


def parse_when(text: str, *, end: bool = False) -> datetime:
    """An ISO 8601 date or date and time, in UTC unless it carries an offset. A date
    alone is the start of that day (UTC), or with ``end`` its last instant, so that
    ``since D`` and ``until D`` both include the whole day D."""
    value = text.strip()
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            start = datetime.combine(day, time(), tzinfo=UTC)
            return start + timedelta(days=1, microseconds=-1) if end else start
        when = datetime.fromisoformat(value.replace(" UTC", "+00:00"))
    except ValueError:
        raise InputFileError(
            f"{text!r} is not a date or a date and time", code="bad_instant", value=text,
            hint="2014-09-05, 2014-09-05T10:00 (UTC) or 2014-09-05T10:00+03:00",
        ) from None  # fmt: skip
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
