"""SQLite's own SQL for the outbox's hot paths: rows handed to the driver as they are
(SQLAlchemy's per-row parameter handling costs more than the writes). A writer holds
the whole database (BEGIN IMMEDIATE), so claims never collide and nothing deadlocks:
no row locks to take."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from datetime import datetime

from sqlalchemy import Connection, Select

from outreach.db.models import deliveries, delivery_events
from outreach.ports import Claimed, Outcome


def claimed(conn: Connection, ids: Sequence[int], columns: Sequence) -> list[Claimed]:  # type: ignore[type-arg]
    """The claimed rows with their contacts and tags, read straight from the driver."""
    marks = ", ".join("?" * len(ids))
    names = ", ".join(f"c.{c.name}" for c in columns)
    rows = conn.exec_driver_sql(
        f"SELECT d.id, d.step_id, d.contact_id, d.attempts, d.uncertain, {names} FROM deliveries d "
        f"JOIN contacts c ON c.id = d.contact_id WHERE d.id IN ({marks}) ORDER BY d.step_id, d.id",
        tuple(ids),
    ).all()  # fmt: skip
    people = {r.contact_id for r in rows}
    tags: dict[int, list[str]] = {}
    for contact_id, tag in conn.exec_driver_sql(
        f"SELECT contact_id, tag FROM contact_tags WHERE contact_id IN ({', '.join('?' * len(people))}) "
        "ORDER BY tag", tuple(people),
    ):  # fmt: skip
        tags.setdefault(contact_id, []).append(tag)
    loads = json.loads
    return [Claimed.from_row(r, tuple(tags.get(r.contact_id, ())),
                             attrs=loads(r.attrs) if r.attrs and r.attrs != "{}" else {})
            for r in rows]  # fmt: skip


def record(conn: Connection, outcomes: Sequence[Outcome], now: datetime,
           late: Collection[int] = (), late_note: str = "") -> None:  # fmt: skip
    """``record`` on SQLite: the same rows, given to the driver as they are (the
    times and JSON converted by the columns' own types, once per value), since
    SQLAlchemy's per-row parameter handling costs more than the writes. Outcomes of
    ``late`` rows (another sender has them now) change no row; their events say so."""
    time_, json_ = _processors(conn)
    stamp = time_(now)
    rows = [(o.status, time_(o.next_attempt) if o.next_attempt else stamp, o.message_id, o.error,
             stamp, int(o.event == "uncertain"), o.delivery_id) for o in outcomes if o.delivery_id not in late]  # fmt: skip
    if rows:
        conn.exec_driver_sql(
            "UPDATE deliveries SET status = ?, due_at = ?, message_id = ?, last_error = ?, updated_at = ?, "
            "lease_until = NULL, uncertain = MAX(uncertain, ?) WHERE id = ?", rows,
        )  # fmt: skip
    conn.exec_driver_sql(
        "INSERT INTO delivery_events (step_id, delivery_id, at, event, detail) VALUES (?, ?, ?, ?, ?)",
        [(o.step_id, o.delivery_id, stamp, o.event,
          json_({**o.detail, "late": late_note} if o.delivery_id in late else o.detail)) for o in outcomes],
    )  # fmt: skip


def hand(conn: Connection, ids: Sequence[int], holder: str, until: datetime) -> set[int]:
    """``hand`` on SQLite, straight to the driver: it runs once per window of messages."""
    time_, _json = _processors(conn)
    rows = conn.exec_driver_sql(
        f"UPDATE deliveries SET handed = 1, lease_until = ? WHERE id IN ({', '.join('?' * len(ids))}) "
        "AND holder = ? AND status = 'sending' RETURNING id", (time_(until), *ids, holder),
    )  # fmt: skip
    return {r[0] for r in rows}


def _processors(conn: Connection) -> tuple[Callable, Callable]:  # type: ignore[type-arg]
    dialect = conn.dialect
    time_ = deliveries.c.due_at.type.dialect_impl(dialect).bind_processor(dialect)
    json_ = delivery_events.c.detail.type.dialect_impl(dialect).bind_processor(dialect)
    return time_, json_


def lock_due(due: Select) -> Select:  # type: ignore[type-arg]
    return due  # a writer holds the whole database (BEGIN IMMEDIATE)


def lock_rows(query: Select, *, skip: bool = False) -> Select:  # type: ignore[type-arg]
    return query  # likewise
