"""The delivery log, read: counts, what waits, events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Integer, and_, cast, extract, func, literal_column, select, union

from outreach.db.log_pages import SqlLogPages
from outreach.db.models import contacts, deliveries, delivery_events, steps

LOST = ("unsubscribed", "bounced", "complained")  # what a recipient reached may become since


class SqlLog(SqlLogPages):
    """``ports.DeliveryLog``: counts, what waits, events, a campaign's report; its pages
    and streams for people in ``SqlLogPages``."""

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

    # -- a campaign's report -------------------------------------------------------------

    def sent_bounds(self, campaign: str) -> dict[int, tuple[datetime, datetime]]:
        """Each step's first and last send (its ``sent`` events), in one query."""
        query = (
            select(delivery_events.c.step_id, func.min(delivery_events.c.at), func.max(delivery_events.c.at))
            .join(steps, steps.c.id == delivery_events.c.step_id)
            .where(steps.c.campaign == campaign, delivery_events.c.event == "sent")
            .group_by(delivery_events.c.step_id)
        )  # fmt: skip
        with self.engine.connect() as conn:
            return {step_id: (first, last) for step_id, first, last in conn.execute(query)}

    def reason_counts(self, campaign: str, event: str) -> list[dict[str, Any]]:
        """Deliveries of the campaign with a ``failed`` or ``skipped`` event, grouped by
        step and what the event says (code, reply with the recipient's address left
        out, stage, reason), in one query. Each: step_id, code, reply, stage, reason, n."""
        detail = delivery_events.c.detail
        facts = (
            select(
                delivery_events.c.step_id.label("step_id"), delivery_events.c.delivery_id.label("delivery_id"),
                detail["code"].as_string().label("code"),
                func.replace(func.coalesce(detail["reply"].as_string(), ""),
                             func.coalesce(contacts.c.email, ""), "<recipient>").label("reply"),
                func.coalesce(detail["stage"].as_string(), "").label("stage"),
                func.coalesce(detail["reason"].as_string(), "").label("reason"),
            )
            .select_from(delivery_events.join(steps, steps.c.id == delivery_events.c.step_id)
                         .join(deliveries, deliveries.c.id == delivery_events.c.delivery_id)
                         .outerjoin(contacts, contacts.c.id == deliveries.c.contact_id))
            .where(steps.c.campaign == campaign, delivery_events.c.event == event)
        ).subquery()  # fmt: skip
        keys = (facts.c.step_id, facts.c.code, facts.c.reply, facts.c.stage, facts.c.reason)
        query = select(*keys, func.count(facts.c.delivery_id.distinct()).label("n")).group_by(*keys)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def lost_since(self, campaign: str) -> dict[int, dict[str, int]]:
        """Per step, the recipients it reached (delivery sent, or uncertain) lost since,
        by what they became: their contact is unsubscribed, bounced or complained now
        (each was active when it was sent: checked at send time), or their delivery has
        an ``unsubscribed``, ``bounced`` or ``complained`` event (a recipient's own
        unsubscribe, a bounce or complaint that came back). One query: the union of both
        (a delivery counted once per what it became)."""
        reached = deliveries.c.status.in_(("sent", "uncertain"))
        by_status = (
            select(deliveries.c.id, deliveries.c.step_id, contacts.c.status.label("what"))
            .join(steps, steps.c.id == deliveries.c.step_id)
            .join(contacts, contacts.c.id == deliveries.c.contact_id)
            .where(steps.c.campaign == campaign, reached, contacts.c.status.in_(LOST))
        )  # fmt: skip
        by_event = (
            select(deliveries.c.id, deliveries.c.step_id, delivery_events.c.event.label("what"))
            .join(steps, steps.c.id == delivery_events.c.step_id)
            .join(deliveries, deliveries.c.id == delivery_events.c.delivery_id)
            .where(steps.c.campaign == campaign, delivery_events.c.event.in_(LOST), reached)
        )  # fmt: skip
        lost = union(by_status, by_event).subquery()
        query = select(lost.c.step_id, lost.c.what, func.count()).group_by(lost.c.step_id, lost.c.what)
        out: dict[int, dict[str, int]] = {}
        with self.engine.connect() as conn:
            for step_id, what, n in conn.execute(query):
                out.setdefault(step_id, {})[what] = n
        return out

    def published(self, campaign: str) -> list[dict[str, Any]]:
        """The campaign's X posts and press releases that went out: ``sent`` events of
        deliveries without a contact (step_id, delivery_id, part, at, detail)."""
        query = (
            select(delivery_events.c.step_id, delivery_events.c.delivery_id, deliveries.c.part,
                   delivery_events.c.at, delivery_events.c.detail)
            .join(steps, steps.c.id == delivery_events.c.step_id)
            .join(deliveries, deliveries.c.id == delivery_events.c.delivery_id)
            .where(steps.c.campaign == campaign, delivery_events.c.event == "sent",
                   deliveries.c.contact_id.is_(None))
            .order_by(delivery_events.c.id)
        )  # fmt: skip
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def sent_per_bucket(self, campaign: str, seconds: int) -> list[tuple[datetime, int]]:
        """The campaign's sends counted per ``seconds``-long span of time (spans start
        at multiples of it since the epoch), in one grouped query."""
        size = literal_column(str(int(seconds)), Integer)  # a number, not a parameter: grouped by as is
        bucket = (cast(extract("epoch", delivery_events.c.at), Integer) // size).label("bucket")
        query = (
            select(bucket, func.count())
            .join(steps, steps.c.id == delivery_events.c.step_id)
            .where(steps.c.campaign == campaign, delivery_events.c.event == "sent")
            .group_by(bucket).order_by(bucket)
        )  # fmt: skip
        with self.engine.connect() as conn:
            return [(datetime.fromtimestamp(int(b) * seconds, UTC), n) for b, n in conn.execute(query)]
