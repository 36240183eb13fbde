"""SQLite's own SQL for the outbox's hot paths: rows handed to the driver as they are
(SQLAlchemy's per-row parameter handling costs more than the writes)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
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


def record(conn: Connection, outcomes: Sequence[Outcome], now: datetime) -> None:
    """``record`` on SQLite: the same rows, given to the driver as they are (the
    times and JSON converted by the columns' own types, once per value), since
    SQLAlchemy's per-row parameter handling costs more than the writes."""
    time_, json_ = _processors(conn)
    stamp = time_(now)
    conn.exec_driver_sql(
        "UPDATE deliveries SET status = ?, due_at = ?, message_id = ?, last_error = ?, updated_at = ? "
        "WHERE id = ?",
        [(o.status, time_(o.next_attempt) if o.next_attempt else stamp, o.message_id, o.error,
          stamp, o.delivery_id) for o in outcomes],
    )  # fmt: skip
    conn.exec_driver_sql(
        "INSERT INTO delivery_events (step_id, delivery_id, at, event, detail) VALUES (?, ?, ?, ?, ?)",
        [(o.step_id, o.delivery_id, stamp, o.event, json_(o.detail)) for o in outcomes],
    )


def _processors(conn: Connection) -> tuple[Callable, Callable]:  # type: ignore[type-arg]
    dialect = conn.dialect
    time_ = deliveries.c.due_at.type.dialect_impl(dialect).bind_processor(dialect)
    json_ = delivery_events.c.detail.type.dialect_impl(dialect).bind_processor(dialect)
    return time_, json_


def lock_due(due: Select) -> Select:  # type: ignore[type-arg]
    return due  # a writer holds the whole database (BEGIN IMMEDIATE)
