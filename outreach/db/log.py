"""The delivery log, read: counts, what waits, events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select

from outreach.db.models import contacts, deliveries, delivery_events, steps
from outreach.db.repository import Repository


class SqlLog(Repository):
    """``ports.DeliveryLog``."""

    def pending(self, step_id: int) -> int:
        """Deliveries of the step not yet final (queued, deferred or being sent)."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count()).where(
                    deliveries.c.step_id == step_id,
                    deliveries.c.status.in_(("queued", "deferred", "sending")),
                )
            ).scalar_one()

    def left_waiting(self, step_id: int | None = None) -> tuple[int, datetime | None, int]:
        """Deliveries not final that no one will send right now: (due later in active
        steps, the earliest of those, held in paused steps)."""
        unsent = deliveries.c.status.in_(("queued", "deferred"))
        only = [deliveries.c.step_id == step_id] if step_id is not None else []
        with self.engine.connect() as conn:
            later, first = conn.execute(
                select(func.count(), func.min(deliveries.c.due_at))
                .select_from(deliveries).join(steps, steps.c.id == deliveries.c.step_id)
                .where(unsent, steps.c.status == "active", deliveries.c.due_at > self.clock(), *only)
            ).one()  # fmt: skip
            paused = conn.execute(
                select(func.count()).select_from(deliveries)
                .join(steps, steps.c.id == deliveries.c.step_id)
                .where(unsent, steps.c.status == "paused", *only)
            ).scalar_one()  # fmt: skip
        return later, first, paused

    def due_now(self, campaign: str) -> int:
        """Deliveries of the campaign's active steps that are due and not yet done."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count())
                .select_from(deliveries)
                .join(steps, steps.c.id == deliveries.c.step_id)
                .where(
                    steps.c.campaign == campaign, steps.c.status == "active",
                    deliveries.c.status.in_(("queued", "deferred", "sending")),
                    deliveries.c.due_at <= self.clock(),
                )
            ).scalar_one()  # fmt: skip

    def next_due(self, channel: str) -> datetime | None:
        """When the next delivery of an active step falls due."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.min(deliveries.c.due_at))
                .join(steps, steps.c.id == deliveries.c.step_id)
                .where(
                    deliveries.c.status.in_(("queued", "deferred")),
                    steps.c.status == "active",
                    steps.c.channel == channel,
                )
            ).scalar()

    def counts(self, step_id: int | None = None, campaign: str | None = None) -> dict[str, int]:
        query = (
            select(deliveries.c.status, func.count())
            .join(steps, steps.c.id == deliveries.c.step_id)
            .group_by(deliveries.c.status)
        )
        if step_id is not None:
            query = query.where(deliveries.c.step_id == step_id)
        if campaign is not None:
            query = query.where(steps.c.campaign == campaign)
        with self.engine.connect() as conn:
            return dict(conn.execute(query).all())  # type: ignore[arg-type]

    def counts_by_step(self, campaign: str | None = None) -> dict[int, dict[str, int]]:
        """Deliveries by step and status, in one query."""
        query = select(deliveries.c.step_id, deliveries.c.status, func.count()).group_by(
            deliveries.c.step_id, deliveries.c.status
        )
        if campaign is not None:
            query = query.join(steps, steps.c.id == deliveries.c.step_id).where(steps.c.campaign == campaign)
        out: dict[int, dict[str, int]] = {}
        with self.engine.connect() as conn:
            for step_id, status, n in conn.execute(query):
                out.setdefault(step_id, {})[status] = n
        return out

    def events(
        self, *, campaign: str | None = None, step_key: str | None = None, event: str | None = None,
        email: str | None = None, limit: int = 50, since: datetime | None = None,
        delivery_id: int | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        query = (
            select(
                delivery_events.c.id, delivery_events.c.at, delivery_events.c.event,
                delivery_events.c.detail, steps.c.campaign, steps.c.key.label("step"),
                steps.c.channel, contacts.c.email, deliveries.c.attempts, deliveries.c.part,
                delivery_events.c.delivery_id,
            )
            .join(steps, steps.c.id == delivery_events.c.step_id)
            .outerjoin(deliveries, deliveries.c.id == delivery_events.c.delivery_id)
            .outerjoin(contacts, contacts.c.id == deliveries.c.contact_id)
            .order_by(delivery_events.c.id.desc())
            .limit(limit)
        )  # fmt: skip
        conditions = []
        if campaign:
            conditions.append(steps.c.campaign == campaign)
        if step_key:
            conditions.append(steps.c.key == step_key)
        if event:
            conditions.append(delivery_events.c.event == event)
        if email:
            conditions.append(func.lower(contacts.c.email) == email.casefold())
        if since:
            conditions.append(delivery_events.c.at >= since)
        if delivery_id is not None:
            conditions.append(delivery_events.c.delivery_id == delivery_id)
        if conditions:
            query = query.where(and_(*conditions))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)][::-1]

    def sent_since(self, channel: str, since: datetime) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count())
                .select_from(delivery_events)
                .join(steps, steps.c.id == delivery_events.c.step_id)
                .where(
                    delivery_events.c.event == "sent",
                    delivery_events.c.at >= since,
                    steps.c.channel == channel,
                )
            ).scalar_one()
