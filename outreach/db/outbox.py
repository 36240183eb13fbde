"""The outbox: steps, one delivery row per (step, contact), and the append-only
delivery log. Every change of a delivery's status is one transaction together with
its log event, so the database always says what happened."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, func, insert, literal, select, update

from outreach.db.models import (
    campaigns,
    contact_tags,
    contacts,
    deliveries,
    delivery_events,
    steps,
    utcnow,
)
from outreach.db.patience import Patience, patient
from outreach.db.segments import where
from outreach.domain.audience import parse
from outreach.ports import Claimed, Outcome, StepInfo

_CONTACT_COLUMNS = [
    contacts.c.email, contacts.c.name, contacts.c.organization, contacts.c.kind, contacts.c.sector,
    contacts.c.country, contacts.c.language, contacts.c.timezone, contacts.c.x_handle,
    contacts.c.status, contacts.c.attrs,  # not created_at, updated_at: no template sees them
]  # fmt: skip


def _step(row: Any) -> StepInfo:
    return StepInfo(
        id=row.id, campaign=row.campaign, key=row.key, channel=row.channel,
        template=row.template, audience=row.audience, send_at=row.send_at,
        status=row.status, settings=dict(row.settings or {}),
    )  # fmt: skip


@patient
@dataclass
class SqlOutbox:
    """``ports.Outbox`` on any SQLAlchemy engine."""

    engine: Engine
    clock: Callable[[], datetime] = utcnow  # ports.Clock: a rehearsal runs on a faster one
    patience: Patience = field(default_factory=Patience)  # waits out a stalled database

    def _write(self):  # type: ignore[no-untyped-def]
        return self.engine.connect().execution_options(write=True)

    # -- steps ---------------------------------------------------------------------
    def ensure_step(
        self, *, campaign: str, key: str, channel: str, template: str, audience: str,
        send_at: datetime, settings: dict[str, Any] | None = None, status: str = "active",
    ) -> StepInfo:  # fmt: skip
        """The step (campaign, key), made if new; an existing one is returned as it is."""
        with self._write() as conn, conn.begin():
            row = conn.execute(
                select(steps).where(steps.c.campaign == campaign, steps.c.key == key)
            ).first()
            if row is None:
                conn.execute(
                    insert(steps).values(
                        campaign=campaign, key=key, channel=channel, template=template,
                        audience=audience, send_at=send_at, status=status,
                        settings=settings or {}, created_at=self.clock(),
                    )
                )  # fmt: skip
                row = conn.execute(
                    select(steps).where(steps.c.campaign == campaign, steps.c.key == key)
                ).one()
        return _step(row)

    def update_step(self, step_id: int, **values: Any) -> None:
        """Change a step that has not fired yet (template, audience, send_at, settings)."""
        with self._write() as conn, conn.begin():
            conn.execute(update(steps).where(steps.c.id == step_id).values(**values))

    def step_by_key(self, campaign: str, key: str) -> StepInfo | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(steps).where(steps.c.campaign == campaign, steps.c.key == key)
            ).first()
        return _step(row) if row else None

    def log_step(self, step_id: int, event: str, detail: dict[str, Any]) -> None:
        with self._write() as conn, conn.begin():
            self._event(conn, step_id, None, event, detail)

    def pending(self, step_id: int) -> int:
        """Deliveries of the step not yet final (queued, deferred or being sent)."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count()).where(
                    deliveries.c.step_id == step_id,
                    deliveries.c.status.in_(("queued", "deferred", "sending")),
                )
            ).scalar_one()

    # -- campaigns ---------------------------------------------------------------------
    def save_campaign(self, campaign_id: str, name: str, plan_file: str, plan_hash: str) -> None:
        now = self.clock()
        with self._write() as conn, conn.begin():
            found = conn.execute(
                select(campaigns.c.id).where(campaigns.c.id == campaign_id)
            ).first()
            values = {
                "name": name,
                "plan_file": plan_file,
                "plan_hash": plan_hash,
                "updated_at": now,
            }
            if found:
                conn.execute(
                    update(campaigns).where(campaigns.c.id == campaign_id).values(**values)
                )
            else:
                conn.execute(
                    insert(campaigns).values(
                        id=campaign_id, status="active", overrides={}, **values
                    )
                )

    def campaign_ids(self) -> list[str]:
        """Every scheduled campaign's id, and every id an ad hoc send logged under."""
        with self.engine.connect() as conn:
            stored = conn.execute(select(campaigns.c.id)).scalars().all()
            logged = conn.execute(select(steps.c.campaign).distinct()).scalars().all()
        return sorted({*stored, *logged})

    def campaign(self, campaign_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(campaigns).where(campaigns.c.id == campaign_id)).first()
        return dict(row._mapping) if row else None

    def set_overrides(self, campaign_id: str, overrides: dict[str, str]) -> None:
        with self._write() as conn, conn.begin():
            conn.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign_id)
                .values(overrides=overrides, updated_at=self.clock())
            )

    def set_campaign_status(self, campaign_id: str, status: str) -> None:
        with self._write() as conn, conn.begin():
            conn.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign_id)
                .values(status=status, updated_at=self.clock())
            )

    def skip_pending(self, step_id: int, reason: str) -> int:
        """Deliveries not yet sent of a cancelled step become skipped, logged."""
        now = self.clock()
        with self._write() as conn, conn.begin():
            ids = (
                conn.execute(
                    select(deliveries.c.id).where(
                        deliveries.c.step_id == step_id,
                        deliveries.c.status.in_(("queued", "deferred")),
                    )
                )
                .scalars()
                .all()
            )
            if ids:
                conn.execute(
                    update(deliveries)
                    .where(deliveries.c.id.in_(ids))
                    .values(status="skipped", updated_at=now)
                )
                conn.execute(
                    insert(delivery_events),
                    [{"step_id": step_id, "delivery_id": i, "at": now, "event": "skipped",
                      "detail": {"reason": reason}} for i in ids],
                )  # fmt: skip
        return len(ids)

    def approve(self, campaign_id: str, by: str, plan_hash: str) -> None:
        with self._write() as conn, conn.begin():
            conn.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign_id)
                .values(
                    approved_by=by,
                    approved_at=self.clock(),
                    approved_hash=plan_hash,
                    updated_at=self.clock(),
                )
            )

    def step(self, step_id: int) -> StepInfo:
        with self.engine.connect() as conn:
            return _step(conn.execute(select(steps).where(steps.c.id == step_id)).one())

    def steps(self, campaign: str | None = None) -> list[StepInfo]:
        query = select(steps).order_by(steps.c.send_at, steps.c.id)
        if campaign:
            query = query.where(steps.c.campaign == campaign)
        with self.engine.connect() as conn:
            return [_step(r) for r in conn.execute(query)]

    def set_step_status(self, step_id: int, status: str, reason: str) -> None:
        with self._write() as conn, conn.begin():
            conn.execute(update(steps).where(steps.c.id == step_id).values(status=status))
            self._event(conn, step_id, None, status, {"reason": reason})

    # -- materialising -----------------------------------------------------------------
    def materialize(
        self, step: StepInfo, *, batch: int = 20_000, exclude_steps: Sequence[int] = ()
    ) -> int:
        """One queued delivery per active contact in the step's audience; running it
        again adds nothing, and nor does a contact that ``exclude_steps`` already have. Works through contacts in id ranges of ``batch``, each in
        its own transaction (each is complete and safe to repeat)."""
        clause = where(parse(step.audience))
        added = 0
        with self.engine.connect() as conn:
            top = conn.execute(select(func.max(contacts.c.id))).scalar() or 0
        start = 0
        while start < top:
            end = start + batch
            with self._write() as conn, conn.begin():
                now = self.clock()
                before = conn.execute(select(func.max(deliveries.c.id))).scalar() or 0
                chosen = (
                    select(
                        literal(step.id), contacts.c.id, literal("queued"),
                        literal(step.send_at, deliveries.c.due_at.type), literal(now, deliveries.c.updated_at.type),
                    )
                    .where(
                        contacts.c.id > start, contacts.c.id <= end, contacts.c.status == "active", clause,
                        ~select(deliveries.c.id).where(
                            deliveries.c.step_id.in_([step.id, *exclude_steps]),
                            deliveries.c.contact_id == contacts.c.id,
                        ).exists(),
                    )
                    .order_by(contacts.c.id)
                )  # fmt: skip
                conn.execute(
                    insert(deliveries).from_select(
                        ["step_id", "contact_id", "status", "due_at", "updated_at"], chosen
                    )
                )
                new_rows = and_(deliveries.c.step_id == step.id, deliveries.c.id > before)
                count = conn.execute(select(func.count()).where(new_rows)).scalar_one()
                if count:
                    conn.execute(
                        insert(delivery_events).from_select(
                            ["step_id", "delivery_id", "at", "event", "detail"],
                            select(
                                literal(step.id), deliveries.c.id,
                                literal(now, delivery_events.c.at.type), literal("materialized"),
                                literal({}, delivery_events.c.detail.type),
                            ).where(new_rows),
                        )
                    )  # fmt: skip
                added += count
            start = end
        return added

    # -- sending ---------------------------------------------------------------------
    def recover(self) -> int:
        """Deliveries left ``sending`` by a sender that stopped: their outcome is
        unknown. Email goes again (marked uncertain: the recipient may get it twice), a
        press release is published again (the same files); an X post waits for a
        person (``deliveries retry`` / ``mark-sent``): never posted twice blindly."""
        with self._write() as conn, conn.begin():
            rows = conn.execute(
                select(deliveries.c.id, deliveries.c.step_id, steps.c.channel)
                .join(steps, steps.c.id == deliveries.c.step_id)
                .where(deliveries.c.status == "sending")
            ).all()
            now = self.clock()
            for row in rows:
                resend = row.channel in ("email", "press")  # publishing again rewrites the same page
                conn.execute(
                    update(deliveries).where(deliveries.c.id == row.id).values(
                        status="queued" if resend else "uncertain", uncertain=1, due_at=now, updated_at=now,
                    )
                )  # fmt: skip
                then = {
                    "email": "sending it again: the recipient may get it twice",
                    "press": "publishing it again (the same page and feed entry)",
                }.get(row.channel, "not posted again: a person must decide (outreach deliveries "
                      f"retry {row.id}, or mark-sent {row.id} --post-id N if it is on X)")  # fmt: skip
                self._event(conn, row.step_id, row.id, "uncertain",
                            {"reason": "the sender stopped while this was being sent; " + then})
        return len(rows)

    def claim(self, *, channel: str, limit: int, now: datetime | None = None) -> list[Claimed]:
        """Take up to ``limit`` due deliveries of active steps: each becomes ``sending``
        (logged) in one transaction before anything is sent. Per row, Python does as
        little as it can: the log rows are written by one INSERT ... SELECT."""
        now = now or self.clock()
        due = (
            select(deliveries.c.id)
            .join(steps, steps.c.id == deliveries.c.step_id)
            .where(
                deliveries.c.status.in_(("queued", "deferred")),
                deliveries.c.due_at <= now,
                steps.c.status == "active",
                steps.c.channel == channel,
            )
            .order_by(deliveries.c.due_at, deliveries.c.id)
            .limit(limit)
        )
        with self._write() as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                due = due.with_for_update(skip_locked=True, of=deliveries)
            ids = conn.execute(due).scalars().all()
            if not ids:
                return []
            chosen = deliveries.c.id.in_(ids)
            conn.execute(
                update(deliveries)
                .where(chosen)
                .values(status="sending", attempts=deliveries.c.attempts + 1, updated_at=now)
            )
            conn.execute(
                insert(delivery_events).from_select(
                    ["step_id", "delivery_id", "at", "event", "detail"],
                    select(
                        deliveries.c.step_id, deliveries.c.id, literal(now, delivery_events.c.at.type),
                        literal("sending"), literal({}, delivery_events.c.detail.type),
                    ).where(chosen),
                )
            )  # fmt: skip
            if conn.dialect.name == "sqlite":
                return self._claimed_sqlite(conn, ids)
            rows = conn.execute(
                select(
                    deliveries.c.id, deliveries.c.step_id, deliveries.c.contact_id,
                    deliveries.c.attempts, deliveries.c.uncertain, *_CONTACT_COLUMNS,
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

    def record(self, outcomes: Sequence[Outcome]) -> None:
        """Write what happened to claimed deliveries, each with its log event."""
        if not outcomes:
            return
        now = self.clock()
        with self._write() as conn, conn.begin():
            if conn.dialect.name == "sqlite":
                self._record_sqlite(conn, outcomes, now)
                return
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
            self._bounced(conn, outcomes, now)

    @staticmethod
    def _bounced(conn: Connection, outcomes: Sequence[Outcome], now: datetime) -> None:
        """Addresses that do not exist: their contacts become bounced."""
        bounced = [o.contact_id for o in outcomes if o.bounce]
        if bounced:
            conn.execute(
                update(contacts)
                .where(contacts.c.id.in_(bounced), contacts.c.status == "active")
                .values(status="bounced", updated_at=now)
            )

    @staticmethod
    def _claimed_sqlite(conn: Connection, ids: Sequence[int]) -> list[Claimed]:
        """The claimed rows with their contacts and tags, read straight from the driver."""
        marks = ", ".join("?" * len(ids))
        columns = ", ".join(f"c.{c.name}" for c in _CONTACT_COLUMNS)
        rows = conn.exec_driver_sql(
            f"SELECT d.id, d.step_id, d.contact_id, d.attempts, d.uncertain, {columns} FROM deliveries d "
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

    def _record_sqlite(self, conn: Connection, outcomes: Sequence[Outcome], now: datetime) -> None:
        """``record`` on SQLite: the same rows, given to the driver as they are (the
        times and JSON converted by the columns' own types, once per value), since
        SQLAlchemy's per-row parameter handling costs more than the writes."""
        time_, json_ = self._sqlite_processors(conn)
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
        self._bounced(conn, outcomes, now)

    @staticmethod
    def _sqlite_processors(conn: Connection):  # type: ignore[no-untyped-def]
        dialect = conn.dialect
        time_ = deliveries.c.due_at.type.dialect_impl(dialect).bind_processor(dialect)
        json_ = delivery_events.c.detail.type.dialect_impl(dialect).bind_processor(dialect)
        return time_, json_

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

    # -- reading ----------------------------------------------------------------------
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

    def _event(
        self, conn: Connection, step_id: int, delivery_id: int | None, event: str, detail: dict
    ) -> None:
        conn.execute(
            insert(delivery_events).values(
                step_id=step_id, delivery_id=delivery_id, at=self.clock(), event=event, detail=detail
            )
        )
