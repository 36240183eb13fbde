"""The delivery log read for people: a page of events newest first (the web's log, a
contact's page, ``outreach log``) or every event oldest first, a chunk at a time (the
CSV and JSON streams), by keyset on ``delivery_events.id`` (never OFFSET), whatever
the filters, and without reading every matching event to sort them for one page.

Each read picks the matching events' ids first, from an index that yields them in id
order, then reads those rows whole with their delivery and contact (``id IN (...)``):

- steps (a campaign, step, wave or channel, resolved to step ids by the caller): one
  ``SELECT id ... WHERE step_id = :s ... ORDER BY id LIMIT :n`` per step, on
  ``(step_id, id)`` or with an event ``(step_id, event, id)``, joined by UNION ALL
  (``BRANCHES`` steps at most per statement, their ids merged here); a walk or a chunk
  of a stream reads them one step at a time instead (``_pick_in_turn``);
- an event alone: ``(event, id)``;
- a time window: the newest (oldest) events from the cursor on when they hold the page,
  else the window's first and last ids, from ``(at, id)``, bound every other read;
- a recipient (an exact address, or a part of one that few contacts match): their
  deliveries (``deliveries.contact_id``), then those deliveries' events
  (``delivery_events.delivery_id``);
- a part of an address that many contacts match: the log walked in id order (each of
  the steps', or the whole log), each event's recipient looked up as it comes, until
  the page is full: with that many matches it soon is.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    Select,
    String,
    TextClause,
    bindparam,
    func,
    select,
    text,
)

from outreach.db.models import UTCDateTime, contacts, deliveries, delivery_events, steps
from outreach.db.repository import Repository
from outreach.domain.contact import email_key

BRANCHES = 100  # steps per UNION ALL statement (SQLite allows 500 terms in a compound SELECT)
MANY_CONTACTS = 1000  # a search matching more contacts than this walks the log instead
IN_LIST = 1000  # values per IN (...) list: step ids, contact ids, event ids
NEAR = 1000  # events next to the cursor looked at first for a time window (at least)
WALK = 2000  # events looked at in a walk's first step (a search that many contacts match)

_e = delivery_events.c
_LOG_COLUMNS = (
    _e.id, _e.at, _e.event, _e.detail, _e.step_id, _e.delivery_id, contacts.c.email, deliveries.c.part,
    deliveries.c.attempts,
)  # fmt: skip
_JOINED = delivery_events.outerjoin(deliveries, deliveries.c.id == _e.delivery_id).outerjoin(
    contacts, contacts.c.id == deliveries.c.contact_id
)


@dataclass(frozen=True)
class _Filter:
    """What the events must match. ``contact_ids``: their deliveries' only (None: any
    recipient's); ``pattern``: a part of the recipient's address, checked per event;
    ``low``/``high``: ids known to bound the time window's events."""

    step_ids: tuple[int, ...] | None
    event: str | None
    since: datetime | None
    until: datetime | None
    contact_ids: tuple[int, ...] | None = None
    pattern: str | None = None
    low: int | None = None
    high: int | None = None


@dataclass(frozen=True)
class _Page:
    """Which of them: ids below ``before`` and above ``after``, the first ``limit``."""

    before: int | None
    after: int | None
    limit: int
    newest_first: bool

    def order(self, column: Any) -> Any:
        return column.desc() if self.newest_first else column.asc()

    def cursor(self) -> list[Any]:
        return ([_e.id < self.before] if self.before is not None else []) + (
            [_e.id > self.after] if self.after is not None else [])  # fmt: skip

    def first(self, ids: list[int]) -> list[int]:
        """The page of ``ids`` (each statement's, together)."""
        return heapq.nlargest(self.limit, ids) if self.newest_first else heapq.nsmallest(self.limit, ids)


def _chunks(values: Sequence[int], size: int) -> Iterator[tuple[int, ...]]:
    for start in range(0, len(values), size):
        yield tuple(values[start : start + size])


class SqlLogPages(Repository):
    """``log_events`` and ``log_floor`` of ``ports.DeliveryLog``."""

    def log_events(
        self, *, step_ids: Sequence[int] | None = None, event: str | None = None,
        email: str | None = None, search: str | None = None, since: datetime | None = None,
        until: datetime | None = None, before: int | None = None, after: int | None = None,
        limit: int = 50, newest_first: bool = True,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """At most ``limit`` events matching the filters, by id (newest or oldest
        first), with ids below ``before`` and above ``after``: one page of a keyset walk
        (no OFFSET). ``step_ids`` None: every step's; ``email`` an exact address and
        ``search`` a part of one, both case-insensitive; ``since``/``until`` inclusive."""
        with self.engine.connect() as conn:
            flt = _filter(conn, step_ids, event, email, search, since, until)
            if flt is None:
                return []
            page = _Page(before, after, limit, newest_first)
            return _rows(conn, _pick(conn, flt, page), page)

    def log_floor(
        self, n: int, *, step_ids: Sequence[int] | None = None, event: str | None = None,
        email: str | None = None, search: str | None = None, since: datetime | None = None,
        until: datetime | None = None,
    ) -> int | None:  # fmt: skip
        """The id of the oldest of the latest ``n`` matching events (None: no match), so
        that they can be streamed oldest first from there."""
        with self.engine.connect() as conn:
            flt = _filter(conn, step_ids, event, email, search, since, until)
            ids = _pick(conn, flt, _Page(None, None, n, True)) if flt is not None else []
            return ids[-1] if ids else None


def _filter(conn: Connection, step_ids: Sequence[int] | None, event: str | None, email: str | None,
            search: str | None, since: datetime | None, until: datetime | None) -> _Filter | None:  # fmt: skip
    """The filters as the picks read them; None when nothing can match (no step, no
    contact with that address). On PostgreSQL, each statement of the read is planned
    for its own values (a prepared statement's generic plan would walk the whole log
    for a rare event or an old window)."""
    if conn.dialect.name == "postgresql":  # nor is a read of a few milliseconds compiled first
        conn.exec_driver_sql("SELECT set_config('plan_cache_mode', 'force_custom_plan', true), "
                             "set_config('jit', 'off', true)")
    steps_ = tuple(step_ids) if step_ids is not None else None
    if steps_ is not None and not steps_:
        return None
    flt = _Filter(steps_, event or None, since, until)
    if not email and not search:
        return flt
    who = select(contacts.c.id)
    if email:
        who = who.where(contacts.c.email_key == email_key(email))
    if search:
        who = who.where(contacts.c.email_key.contains(email_key(search), autoescape=True))
    found = tuple(conn.execute(who.limit(MANY_CONTACTS + 1)).scalars())
    if not found:
        return None
    if len(found) > MANY_CONTACTS and search:
        return dataclasses.replace(flt, pattern=email_key(search))
    return dataclasses.replace(flt, contact_ids=found)


def _recipient_key(delivery_id: Any) -> Any:
    """The email_key of the recipient of ``delivery_id``, looked up for each row."""
    return (
        select(contacts.c.email_key)
        .select_from(deliveries.join(contacts, contacts.c.id == deliveries.c.contact_id))
        .where(deliveries.c.id == delivery_id)
        .scalar_subquery()
    )


def _window(flt: _Filter) -> list[Any]:
    return ([_e.at >= flt.since] if flt.since is not None else []) + (
        [_e.at <= flt.until] if flt.until is not None else [])  # fmt: skip


def _bounds(flt: _Filter) -> list[Any]:
    return ([_e.id >= flt.low] if flt.low is not None else []) + (
        [_e.id <= flt.high] if flt.high is not None else [])  # fmt: skip


def _conditions(flt: _Filter, page: _Page) -> list[Any]:
    """What each event must satisfy on delivery_events' own columns (all but the pattern)."""
    out = [_e.event == flt.event] if flt.event else []
    return [*out, *_window(flt), *page.cursor(), *_bounds(flt)]


def _pick(conn: Connection, flt: _Filter, page: _Page) -> list[int]:
    """The ids of the page's matching events, in order."""
    if flt.since is not None or flt.until is not None:
        if flt.step_ids is None and flt.contact_ids is None and flt.pattern is None:
            near = _near(conn, flt, page)
            if near is not None:
                return near
        bounded = _span(conn, flt, page)
        if bounded is None:
            return []
        flt = bounded
    several = flt.step_ids is not None and len(flt.step_ids) > 1 and flt.contact_ids is None
    if several and (flt.pattern is not None or not page.newest_first):  # a walk, or a chunk of a stream
        return _pick_in_turn(conn, flt, page)
    if flt.pattern is not None:
        return _walk(conn, flt, page, _conditions(flt, page) + ([_e.step_id == flt.step_ids[0]] if flt.step_ids else []))
    statements = _picks(flt, page)
    if len(statements) == 1:
        return list(conn.execute(statements[0]).scalars())
    return page.first([i for s in statements for i in conn.execute(s).scalars()])


def _near(conn: Connection, flt: _Filter, page: _Page) -> list[int] | None:
    """The page, when the events next to the cursor (the newest, or the oldest, of the
    log, of an event) hold it whole: a window that reaches them needs no more."""
    near = select(_e.id, _e.at).where(*page.cursor(), *([_e.event == flt.event] if flt.event else []))
    near = near.order_by(page.order(_e.id)).limit(max(NEAR, 4 * page.limit)).subquery()
    inside = ([near.c.at >= flt.since] if flt.since is not None else []) + (
        [near.c.at <= flt.until] if flt.until is not None else [])  # fmt: skip
    query = select(near.c.id).where(*inside).order_by(page.order(near.c.id)).limit(page.limit)
    ids = list(conn.execute(query).scalars())
    return ids if len(ids) == page.limit else None


def _span(conn: Connection, flt: _Filter, page: _Page) -> _Filter | None:
    """``flt`` with the first and last ids of the window's events (within the cursor)
    as bounds, read from ``(at, id)``; None when the window holds no event. (``id + 0``:
    PostgreSQL would read min(id) and max(id) walking the primary key from either end
    until an event falls in the window, through most of the log for an old window.) A
    chunk of a stream after the first has its cursor in the window already: reading
    the window again for each chunk would cost more than the walk it saves."""
    if not page.newest_first and page.after is not None:
        return flt
    query = select(func.min(_e.id + 0), func.max(_e.id + 0)).where(*_window(flt), *page.cursor())
    low, high = conn.execute(query).one()
    return dataclasses.replace(flt, low=low, high=high) if low is not None else None


def _picks(flt: _Filter, page: _Page) -> list[Select | TextClause]:
    """Statements each giving at most ``limit`` matching ids in order; the page is the
    first ``limit`` of all of them together."""
    where = _conditions(flt, page)
    order = page.order(_e.id)
    if flt.contact_ids is not None:  # their deliveries (of those steps), then their events
        theirs = select(deliveries.c.id).where(deliveries.c.contact_id.in_(flt.contact_ids))
        # a delivery's events are logged with its step: the steps are asked of the
        # deliveries, which leaves the events one index to be found by (delivery_id)
        groups = [theirs.where(deliveries.c.step_id.in_(g)) for g in _chunks(flt.step_ids, IN_LIST)] \
            if flt.step_ids is not None else [theirs]  # fmt: skip
        # ordered by id + 0: all their events are read and sorted (they are few), never
        # the log walked by id for them (PostgreSQL would, guessing them everywhere)
        by = page.order(_e.id + 0)
        return [select(_e.id).where(_e.delivery_id.in_(g), *where).order_by(by).limit(page.limit) for g in groups]
    if flt.step_ids is None:
        return [select(_e.id).where(*where).order_by(order).limit(page.limit)]
    if len(flt.step_ids) == 1:
        return [select(_e.id).where(_e.step_id == flt.step_ids[0], *where).order_by(order).limit(page.limit)]
    return [_union(group, flt, page) for group in _chunks(flt.step_ids, BRANCHES)]


def _union(group: tuple[int, ...], flt: _Filter, page: _Page) -> TextClause:
    """One ``SELECT id ... WHERE step_id = S ... ORDER BY id LIMIT :n`` per step of
    ``group``, joined by UNION ALL, the first ``limit`` of them all. Written as text,
    the step ids (integers) in it: made of SQLAlchemy's objects it would cost a third
    of a millisecond a step to build each time, more than the databases take to run it;
    every other value is a parameter, shared by the branches."""
    binds = [bindparam("n", page.limit, type_=Integer)]
    where = ""
    for sql, name, value, kind in (("event = :event", "event", flt.event, String),
                                   ("at >= :since", "since", flt.since, UTCDateTime),
                                   ("at <= :until", "until", flt.until, UTCDateTime),
                                   ("id < :before", "before", page.before, Integer),
                                   ("id > :after", "after", page.after, Integer),
                                   ("id >= :low", "low", flt.low, Integer),
                                   ("id <= :high", "high", flt.high, Integer)):  # fmt: skip
        if value is not None:
            where += f" AND {sql}"
            binds.append(bindparam(name, value, type_=kind))
    way = "DESC" if page.newest_first else "ASC"
    branches = " UNION ALL ".join(
        f"SELECT id FROM (SELECT id FROM delivery_events WHERE step_id = {int(step_id)}{where} "
        f"ORDER BY id {way} LIMIT :n) AS s{i}" for i, step_id in enumerate(group))  # fmt: skip
    return text(f"SELECT id FROM ({branches}) AS steps ORDER BY id {way} LIMIT :n").bindparams(*binds)


def _pick_in_turn(conn: Connection, flt: _Filter, page: _Page) -> list[int]:
    """``_pick`` one step at a time, the step whose newest (oldest) event is the newest
    (oldest) first, each read only for ids that would still make the page, and no step
    read once the page is full and the next step's events all come after it: the steps
    of a long log are mostly one after another, so that a page takes a step or two
    (where a UNION would read ``limit`` ids of every step, for a walk or for each chunk
    of a stream)."""
    asked = [_e.event == flt.event] if flt.event else []
    edge = select(func.max(_e.id) if page.newest_first else func.min(_e.id))
    edge = edge.where(_e.step_id == steps.c.id, *asked, *page.cursor(), *_bounds(flt)).scalar_subquery()
    ends: list[tuple[int, int]] = []
    for group in _chunks(flt.step_ids or (), IN_LIST):
        query = select(edge, steps.c.id).where(steps.c.id.in_(group))
        ends += [(end, step_id) for end, step_id in conn.execute(query) if end is not None]
    ends.sort(reverse=page.newest_first)
    where = _conditions(flt, page)
    found: list[int] = []  # in order, the last the furthest that still makes the page
    for end, step_id in ends:
        full = len(found) >= page.limit
        if full and (end < found[-1] if page.newest_first else end > found[-1]):
            break
        within = ([_e.id > found[-1]] if page.newest_first else [_e.id < found[-1]]) if full else []
        if flt.pattern is not None:
            more = _walk(conn, flt, page, [_e.step_id == step_id, *where, *within])
        else:
            query = select(_e.id).where(_e.step_id == step_id, *where, *within)
            more = list(conn.execute(query.order_by(page.order(_e.id)).limit(page.limit)).scalars())
        found = sorted(found + more, reverse=page.newest_first)[: page.limit]
    return found


def _walk(conn: Connection, flt: _Filter, page: _Page, where: list[Any]) -> list[int]:
    """The page of the events satisfying ``where`` whose recipient's address holds the
    pattern: the events walked in id order from the cursor, ``WALK`` at first, then
    four times as many at a time, each one's recipient looked up as it comes (a read of
    a step's or the log's events in order, LIMIT-ed, that neither database turns into
    a read of every match, however it guesses how many there are); only the matches
    come back, and where the walk ended when it goes on."""
    assert flt.pattern is not None
    found: list[int] = []
    last: int | None = None
    size = max(WALK, 4 * page.limit)
    while True:
        onward = [] if last is None else [_e.id < last] if page.newest_first else [_e.id > last]
        walked = select(_e.id, _e.delivery_id).where(*where, *onward).order_by(page.order(_e.id)).limit(size)
        walked = walked.subquery()
        hit = _recipient_key(walked.c.delivery_id).contains(flt.pattern, autoescape=True)
        query = select(walked.c.id).where(hit).order_by(page.order(walked.c.id)).limit(page.limit - len(found))
        found += conn.execute(query).scalars()
        if len(found) >= page.limit:
            return found
        edge = func.min(walked.c.id) if page.newest_first else func.max(walked.c.id)
        last, walked_n = conn.execute(select(edge, func.count()).select_from(walked)).one()
        if walked_n < size:
            return found
        size = min(size * 4, 100 * WALK)


def _rows(conn: Connection, ids: list[int], page: _Page) -> list[dict[str, Any]]:
    """The events of ``ids`` (in that order) with their delivery's and contact's facts."""
    out: list[dict[str, Any]] = []
    for group in _chunks(ids, IN_LIST):
        query = select(*_LOG_COLUMNS).select_from(_JOINED).where(_e.id.in_(group)).order_by(page.order(_e.id))
        result = conn.execute(query)
        keys = tuple(result.keys())
        out += [dict(zip(keys, row, strict=True)) for row in result]
    return out
