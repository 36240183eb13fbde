"""The outbox's X posts and press releases: deliveries without a contact, one per
post of a thread (``part`` 0, 1, ...) or one per release, with what they say fixed
when their step fires. A reply goes only once the post before it is sent, so a
thread stops at a post that failed or is uncertain until a person decides."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, func, insert, select, update

from outreach.db.models import deliveries, delivery_events, steps, utcnow
from outreach.db.patience import Patience, patient
from outreach.db.repository import Repository, lock_step
from outreach.domain.errors import NotFoundError, OutreachError
from outreach.identity import lease_seconds
from outreach.ports import PostItem, StepInfo


@patient
@dataclass
class SqlPosts(Repository):
    engine: Engine
    clock: Callable[[], datetime] = utcnow
    patience: Patience = field(default_factory=Patience)  # waits out a stalled database


    def materialize(self, step: StepInfo, items: Sequence[dict[str, Any]]) -> int:
        """One queued delivery per item, in order; running it again adds nothing."""
        now = self.clock()
        with self._write() as conn, conn.begin():
            if lock_step(conn, step.id) == "cancelled":  # (another firing of it waits here)
                return 0
            have = set(conn.execute(select(deliveries.c.part).where(deliveries.c.step_id == step.id)).scalars())
            added = 0
            for part, content in enumerate(items):
                if part in have:
                    continue
                delivery_id = conn.execute(
                    insert(deliveries).values(
                        step_id=step.id, part=part, content=dict(content), status="queued",
                        due_at=step.send_at, updated_at=now,
                    ).returning(deliveries.c.id)
                ).scalar_one()  # fmt: skip
                conn.execute(insert(delivery_events).values(
                    step_id=step.id, delivery_id=delivery_id, at=now, event="materialized",
                    detail={"part": part, "of": len(items)},
                ))  # fmt: skip
                added += 1
        return added

    def claim(self, *, channels: Sequence[str], now: datetime | None = None,
              holder: str | None = None) -> PostItem | None:  # fmt: skip
        """The next due post or release whose thread may go on and that no other
        process holds (SKIP LOCKED on PostgreSQL; SQLite has one writer at a time),
        marked ``sending`` (logged), held by ``holder`` under a lease (``db.leases``),
        before it is posted. Without a holder there is no lease: any take-over may take it."""
        now = now or self.clock()
        prev = deliveries.alias("prev")
        parts = (select(func.count()).where(deliveries.c.step_id == steps.c.id,
                                            deliveries.c.part.is_not(None))
                 .correlate(steps).scalar_subquery())  # fmt: skip
        query = (
            select(deliveries.c.id, deliveries.c.step_id, deliveries.c.part, deliveries.c.content,
                   deliveries.c.attempts, deliveries.c.uncertain, steps.c.channel,
                   prev.c.message_id.label("reply_to"), parts.label("parts"))
            .join(steps, steps.c.id == deliveries.c.step_id)
            .outerjoin(prev, and_(prev.c.step_id == deliveries.c.step_id, prev.c.part == deliveries.c.part - 1))
            .where(
                deliveries.c.status.in_(("queued", "deferred")), deliveries.c.due_at <= now,
                deliveries.c.part.is_not(None), steps.c.status == "active", steps.c.channel.in_(channels),
                (deliveries.c.part == 0) | (prev.c.status == "sent"),
            )
            .order_by(deliveries.c.due_at, deliveries.c.step_id, deliveries.c.part)
            .limit(1)
        )  # fmt: skip
        if self.engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True, of=deliveries)
        lease = self.clock() + timedelta(seconds=lease_seconds()) if holder else None
        with self._write() as conn, conn.begin():
            row = conn.execute(query).first()
            if row is None:
                return None
            attempts = row.attempts + 1
            conn.execute(update(deliveries).where(deliveries.c.id == row.id)
                         .values(status="sending", attempts=attempts, updated_at=now, holder=holder,
                                 lease_until=lease, handed=0))  # fmt: skip
            conn.execute(insert(delivery_events).values(
                step_id=row.step_id, delivery_id=row.id, at=now, event="sending",
                detail={"attempt": attempts, "part": row.part},
            ))  # fmt: skip
        return PostItem(row.id, row.step_id, row.channel, row.part, row.parts, dict(row.content or {}),
                        attempts, bool(row.uncertain), row.reply_to if row.part else None)  # fmt: skip

    def next_due(self, channels: Sequence[str]) -> datetime | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.min(deliveries.c.due_at))
                .join(steps, steps.c.id == deliveries.c.step_id)
                .where(deliveries.c.status.in_(("queued", "deferred")), deliveries.c.part.is_not(None),
                       steps.c.status == "active", steps.c.channel.in_(channels))
            ).scalar()  # fmt: skip

    # -- a person decides ---------------------------------------------------------------
    def delivery(self, delivery_id: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(deliveries, steps.c.channel, steps.c.campaign, steps.c.key.label("step_key"))
                .join(steps, steps.c.id == deliveries.c.step_id)
                .where(deliveries.c.id == delivery_id)
            ).first()
        if row is None:
            raise NotFoundError(f"no delivery {delivery_id}", code="unknown_delivery", delivery=delivery_id)
        return dict(row._mapping)

    def retry(self, delivery_id: int, by: str) -> dict[str, Any]:
        """An uncertain or failed delivery goes again (posted again, for X)."""
        row = self.delivery(delivery_id)
        if row["status"] not in ("uncertain", "failed"):
            raise OutreachError(f"delivery {delivery_id} is {row['status']}; only an uncertain "
                                "or failed one can be retried")  # fmt: skip
        self._decide(row, "queued", "retry", {"reason": f"retried by {by}", "was": row["status"]},
                     attempts=0)  # fmt: skip
        return row

    def mark_sent(self, delivery_id: int, post_id: str, by: str) -> dict[str, Any]:
        """A person found the post on X: it counts as sent with that id, and the
        thread goes on from it."""
        row = self.delivery(delivery_id)
        if row["status"] in ("sent", "queued", "sending"):
            raise OutreachError(f"delivery {delivery_id} is {row['status']}; only an uncertain, "
                                "failed or deferred one can be marked sent")  # fmt: skip
        if not post_id.isdigit() and row["channel"] == "x":
            raise OutreachError(f"--post-id {post_id!r} is not an X post id",
                                hint="the digits at the end of the post's address: x.com/ACCOUNT/status/DIGITS")  # fmt: skip
        self._decide(row, "sent", "sent", {"reason": f"marked sent by {by}", "post_id": post_id,
                                           "was": row["status"]}, message_id=post_id)  # fmt: skip
        return row

    def _decide(self, row: dict[str, Any], status: str, event: str, detail: dict[str, Any],
                message_id: str | None = None, **more: Any) -> None:  # fmt: skip
        now = self.clock()
        values: dict[str, Any] = {"status": status, "updated_at": now, "due_at": now, **more}
        if message_id:
            values["message_id"] = message_id
        with self._write() as conn, conn.begin():
            conn.execute(update(deliveries).where(deliveries.c.id == row["id"]).values(**values))
            conn.execute(insert(delivery_events).values(
                step_id=row["step_id"], delivery_id=row["id"], at=now, event=event, detail=detail))  # fmt: skip
            if status == "queued":  # a finished step is sending again
                reopened = conn.execute(
                    update(steps).where(steps.c.id == row["step_id"], steps.c.status == "done")
                    .values(status="active")
                ).rowcount
                if reopened:
                    conn.execute(insert(delivery_events).values(
                        step_id=row["step_id"], delivery_id=None, at=now, event="active",
                        detail={"reason": f"delivery {row['id']} queued again"}))  # fmt: skip
