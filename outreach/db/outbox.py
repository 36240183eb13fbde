"""The outbox: one delivery row per (step, contact), claimed, sent and recorded
with the append-only delivery log. Every change of a delivery's status is one transaction together with
its log event, so the database always says what happened."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine, and_, func, insert, literal, select, update

from outreach.db import postgresql, sqlite
from outreach.db.campaigns import SqlCampaigns
from outreach.db.consent import record_changes
from outreach.db.leases import SqlLeases
from outreach.db.log import SqlLog
from outreach.db.models import (
    contacts,
    deliveries,
    delivery_events,
    steps,
    utcnow,
)
from outreach.db.patience import Patience, patient
from outreach.db.repository import lock_step
from outreach.db.segments import where
from outreach.domain.audience import parse
from outreach.ports import Claimed, Outcome, StepInfo

# what the event of an outcome recorded after its row was taken over says
LATE = "recorded after its lease ran out and another sender took it over: this changed nothing"

_CONTACT_COLUMNS = [
    contacts.c.email, contacts.c.name, contacts.c.organization, contacts.c.kind, contacts.c.sector,
    contacts.c.country, contacts.c.language, contacts.c.timezone, contacts.c.x_handle,
    contacts.c.status, contacts.c.attrs,  # not created_at, updated_at: no template sees them
]  # fmt: skip


@patient
@dataclass
class SqlOutbox(SqlCampaigns, SqlLog, SqlLeases):
    """``ports.Outbox`` on any SQLAlchemy engine: campaigns and steps (SqlCampaigns), the
    log (SqlLog), leases on claimed rows (SqlLeases), and here the deliveries' way
    through: materialise, claim, record."""

    engine: Engine
    clock: Callable[[], datetime] = utcnow  # ports.Clock: a rehearsal runs on a faster one
    patience: Patience = field(default_factory=Patience)  # waits out a stalled database

    def __post_init__(self) -> None:
        # each dialect's own SQL for the hot paths, chosen once
        self._sql = sqlite if self.engine.dialect.name == "sqlite" else postgresql

    def skip_pending(self, step_id: int, reason: str) -> int:
        """Deliveries not yet sent of a cancelled step become skipped, logged."""
        now = self.clock()
        with self._write() as conn, conn.begin():
            lock_step(conn, step_id)  # after any batch of its deliveries being made
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
                if lock_step(conn, step.id) == "cancelled":  # (another firing of it waits here)
                    break
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

    def claim(self, *, channel: str, limit: int, now: datetime | None = None,
              holder: str | None = None) -> list[Claimed]:  # fmt: skip
        """Take up to ``limit`` due deliveries of active steps, none that another
        process holds: each becomes ``sending`` (logged), held by ``holder`` under a
        lease (``db.leases``), in one transaction before anything is sent. Without a
        holder there is no lease: any take-over may take the rows. Per row, Python does
        as little as it can: the log rows are written by one INSERT ... SELECT."""
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
            due = self._sql.lock_due(due)
            ids = conn.execute(due).scalars().all()
            if not ids:
                return []
            chosen = deliveries.c.id.in_(ids)
            conn.execute(
                update(deliveries)
                .where(chosen)
                .values(status="sending", attempts=deliveries.c.attempts + 1, updated_at=now, holder=holder,
                        lease_until=self._lease_end() if holder else None, handed=0)
            )  # fmt: skip
            conn.execute(
                insert(delivery_events).from_select(
                    ["step_id", "delivery_id", "at", "event", "detail"],
                    select(
                        deliveries.c.step_id, deliveries.c.id, literal(now, delivery_events.c.at.type),
                        literal("sending"), literal({}, delivery_events.c.detail.type),
                    ).where(chosen),
                )
            )  # fmt: skip
            return self._sql.claimed(conn, ids, _CONTACT_COLUMNS)

    def record(self, outcomes: Sequence[Outcome], *, holder: str | None = None) -> None:
        """Write what happened to claimed deliveries, each with its log event, in one
        transaction: the rows first, in id order (locked in that order on PostgreSQL),
        then the events, then the contacts that bounced (in id order), so that two
        senders recording at once never deadlock. With ``holder``, only rows it still
        holds change; an outcome of a row another sender took over (its lease ran out)
        is logged as late and changes nothing."""
        if not outcomes:
            return
        now = self.clock()
        ordered = sorted(outcomes, key=lambda o: o.delivery_id)
        ids = [o.delivery_id for o in ordered]
        with self._write() as conn, conn.begin():
            late: set[int] = set()
            if holder is not None or self._sql is postgresql:
                held = [deliveries.c.holder == holder, deliveries.c.status == "sending"] if holder else []
                mine = set(conn.execute(self._sql.lock_rows(
                    select(deliveries.c.id).where(deliveries.c.id.in_(ids), *held).order_by(deliveries.c.id)
                )).scalars())  # fmt: skip
                late = set(ids) - mine if holder is not None else set()
            self._sql.record(conn, ordered, now, late, LATE)
            self._bounced(conn, ordered, now)

    @staticmethod
    def _bounced(conn: Connection, outcomes: Sequence[Outcome], now: datetime) -> None:
        """Addresses that do not exist: their contacts become bounced."""
        bounced = sorted({o.contact_id for o in outcomes if o.bounce and o.contact_id is not None})
        if bounced:
            sql = postgresql if conn.dialect.name == "postgresql" else sqlite
            conn.execute(sql.lock_rows(select(contacts.c.id).where(contacts.c.id.in_(bounced))
                                       .order_by(contacts.c.id)))  # fmt: skip
            clause = contacts.c.id.in_(bounced) & (contacts.c.status == "active")
            record_changes(conn, clause, "bounced", via="bounce", at=now,
                           reason="the relay refused the address")  # fmt: skip
            conn.execute(
                update(contacts)
                .where(contacts.c.id.in_(bounced), contacts.c.status == "active")
                .values(status="bounced", updated_at=now)
            )
