"""PostgreSQL's own SQL for the outbox's hot paths. Claims and take-overs skip rows
other senders hold (FOR UPDATE SKIP LOCKED); every other write locks the rows it
changes in id order first (deliveries, then contacts), so that two senders never
wait for each other in a circle (no deadlock)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import Connection, Select, bindparam, func, insert, select, update

from outreach.db.models import contact_tags, contacts, deliveries, delivery_events
from outreach.ports import Claimed, Outcome


def lock_due(due: Select) -> Select:  # type: ignore[type-arg]
    return due.with_for_update(skip_locked=True, of=deliveries)


def lock_rows(query: Select, *, skip: bool = False) -> Select:  # type: ignore[type-arg]
    """``query`` (ordered by id) locking its rows in that order; FOR NO KEY UPDATE, which
    does not stop inserts that refer to them (the log's events)."""
    return query.with_for_update(key_share=True, skip_locked=skip)


def hand(conn: Connection, ids: Sequence[int], holder: str, until: datetime) -> set[int]:
    """``hand``: the rows still held, locked in id order, then marked."""
    held = lock_rows(select(deliveries.c.id).where(
        deliveries.c.id.in_(ids), deliveries.c.holder == holder, deliveries.c.status == "sending",
    ).order_by(deliveries.c.id))  # fmt: skip
    return set(conn.execute(
        update(deliveries).where(deliveries.c.id.in_(held))
        .values(handed=1, lease_until=until).returning(deliveries.c.id)
    ).scalars())  # fmt: skip


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


def record(conn: Connection, outcomes: Sequence[Outcome], now: datetime,
           late: Collection[int] = (), late_note: str = "") -> None:  # fmt: skip
    """Each outcome's row (in id order, as the caller sorted and locked them), then
    its log event. Outcomes of ``late`` rows change no row; their events say so."""
    rows = [{"_id": o.delivery_id, "status": o.status, "due_at": o.next_attempt or now,
             "message_id": o.message_id, "last_error": o.error, "updated_at": now,
             "_uncertain": int(o.event == "uncertain")}
            for o in outcomes if o.delivery_id not in late]  # fmt: skip
    if rows:
        conn.execute(
            update(deliveries)
            .where(deliveries.c.id == bindparam("_id"))
            .values(
                status=bindparam("status"), due_at=bindparam("due_at"),
                message_id=bindparam("message_id"), last_error=bindparam("last_error"),
                updated_at=bindparam("updated_at"), lease_until=None,
                uncertain=func.greatest(deliveries.c.uncertain, bindparam("_uncertain")),
            ),
            rows,
        )  # fmt: skip
    conn.execute(
        insert(delivery_events),
        [{"step_id": o.step_id, "delivery_id": o.delivery_id, "at": now, "event": o.event,
          "detail": {**o.detail, "late": late_note} if o.delivery_id in late else o.detail}
         for o in outcomes],
    )  # fmt: skip
