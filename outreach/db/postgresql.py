"""PostgreSQL's own SQL for the outbox's hot paths: claims skip rows other senders
hold (FOR UPDATE SKIP LOCKED), outcomes are written in one executemany per status."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, Select, bindparam, insert, select, update

from outreach.db.models import contact_tags, contacts, deliveries, delivery_events
from outreach.ports import Claimed, Outcome


def lock_due(due: Select) -> Select:  # type: ignore[type-arg]
    return due.with_for_update(skip_locked=True, of=deliveries)


def claimed(conn: Connection, ids: Sequence[int], columns: Sequence) -> list[Claimed]:  # type: ignore[type-arg]
    """The claimed rows with their contacts and tags."""
    chosen = deliveries.c.id.in_(ids)
    rows = conn.execute(
        select(
            deliveries.c.id, deliveries.c.step_id, deliveries.c.contact_id,
            deliveries.c.attempts, deliveries.c.uncertain, *columns,
        )
        .join(contacts, contacts.c.id == deliveries.c.contact_id)
        .where(chosen)
        .order_by(deliveries.c.step_id, deliveries.c.id)
    ).all()  # fmt: skip
    tags: dict[int, list[str]] = {}
    query = (
        select(contact_tags.c.contact_id, contact_tags.c.tag)
        .where(contact_tags.c.contact_id.in_({r.contact_id for r in rows}))
        .order_by(contact_tags.c.tag)
    )
    for contact_id, tag in conn.execute(query):
        tags.setdefault(contact_id, []).append(tag)
    return [Claimed.from_row(r, tuple(tags.get(r.contact_id, ()))) for r in rows]


def record(conn: Connection, outcomes: Sequence[Outcome], now: datetime) -> None:
    """Each outcome's row and its log event."""
    by_status: dict[str, list[dict]] = {}
    for o in outcomes:
        by_status.setdefault(o.status, []).append({
            "_id": o.delivery_id, "status": o.status,
            "due_at": o.next_attempt or now, "message_id": o.message_id,
            "last_error": o.error, "updated_at": now,
        })  # fmt: skip
    for rows in by_status.values():
        conn.execute(
            update(deliveries)
            .where(deliveries.c.id == bindparam("_id"))
            .values(
                status=bindparam("status"), due_at=bindparam("due_at"),
                message_id=bindparam("message_id"), last_error=bindparam("last_error"),
                updated_at=bindparam("updated_at"),
            ),
            rows,
        )  # fmt: skip
    conn.execute(
        insert(delivery_events),
        [{"step_id": o.step_id, "delivery_id": o.delivery_id, "at": now,
          "event": o.event, "detail": o.detail} for o in outcomes],
    )  # fmt: skip
