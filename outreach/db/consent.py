"""Consent: every change of a contact's status is kept with how it came about (a
recipient's one-click or page unsubscribe, a command, a reactivation), and a
recipient's own unsubscribe is one transaction with its consent record and its event
in the delivery log (on their latest delivery of the campaign whose link they used).

A contact erased (``contacts delete --erase``) takes its history with it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    String,
    case,
    insert,
    literal,
    select,
    update,
)

from outreach.db.models import (
    UTCDateTime,
    consent_events,
    contacts,
    deliveries,
    delivery_events,
    steps,
    utcnow,
)
from outreach.db.patience import Patience, patient
from outreach.ports import Unsubscribed

# A recipient's unsubscribe changes these; an unsubscribed or complained contact stays so.
UNSUBSCRIBABLE = ("active", "bounced")
# The unsubscribe is logged on the latest of these (the message whose link was used),
# else on the latest delivery of the campaign at all.
REACHED = ("sent", "uncertain")


def record_changes(
    conn: Connection, clause: ColumnElement[bool], status: str, *, via: str, at: datetime,
    actor: str | None = None, reason: str | None = None, campaign: str | None = None,
) -> None:  # fmt: skip
    """One consent record for each contact of ``clause`` whose status is about to become
    ``status`` (call it before the update, in its transaction): set-based, one
    statement however many contacts change."""
    values = select(
        contacts.c.id, literal(at, UTCDateTime()), contacts.c.status, literal(status, String()),
        literal(via, String()), literal(campaign, String()), literal(actor, String()),
        literal(reason, String()),
    ).where(clause, contacts.c.status != status)  # fmt: skip
    conn.execute(insert(consent_events).from_select(
        ["contact_id", "at", "status_from", "status_to", "via", "campaign", "actor", "reason"], values))  # fmt: skip


@patient
@dataclass
class SqlConsent:
    engine: Engine
    clock: Callable[[], datetime] = utcnow
    patience: Patience = field(default_factory=Patience)

    def address(self, contact_id: int) -> str | None:
        """The address of the contact with that id, or None when there is none."""
        with self.engine.connect() as conn:
            return conn.execute(select(contacts.c.email).where(contacts.c.id == contact_id)).scalar()

    def history(self, contact_id: int) -> list[dict[str, Any]]:
        """Every change of the contact's status, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(consent_events).where(consent_events.c.contact_id == contact_id)
                                .order_by(consent_events.c.id))  # fmt: skip
            return [dict(r._mapping) for r in rows]

    def delivered(self, contact_id: int, campaign: str, step_key: str) -> bool:
        """Whether the step has a delivery for the contact (queued, sent or otherwise)."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(deliveries.c.id).join(steps, steps.c.id == deliveries.c.step_id)
                .where(deliveries.c.contact_id == contact_id, steps.c.campaign == campaign,
                       steps.c.key == step_key)
            ).first() is not None  # fmt: skip

    def unsubscribe(self, contact_id: int, campaign: str, via: str) -> Unsubscribed | None:
        """The contact (active, or bounced) becomes unsubscribed: a consent record and
        an ``unsubscribed`` event on their latest delivery of ``campaign`` that reached
        them (else the latest). Again, or
        for a contact who is unsubscribed or complained already, nothing changes. None
        when no contact has that id."""
        now = self.clock()
        with self.engine.connect().execution_options(write=True) as conn, conn.begin():
            row = conn.execute(select(contacts.c.email, contacts.c.status)
                               .where(contacts.c.id == contact_id)).first()  # fmt: skip
            if row is None:
                return None
            if row.status not in UNSUBSCRIBABLE:
                return Unsubscribed(contact_id, row.email, row.status, changed=False)
            mine = contacts.c.id == contact_id
            record_changes(conn, mine, "unsubscribed", via=via, at=now, campaign=campaign)
            changed = conn.execute(
                update(contacts).where(mine, contacts.c.status.in_(UNSUBSCRIBABLE))
                .values(status="unsubscribed", updated_at=now)
            ).rowcount  # fmt: skip
            latest = conn.execute(
                select(deliveries.c.id, deliveries.c.step_id)
                .join(steps, steps.c.id == deliveries.c.step_id)
                .where(deliveries.c.contact_id == contact_id, steps.c.campaign == campaign)
                .order_by(case((deliveries.c.status.in_(REACHED), 0), else_=1), deliveries.c.id.desc())
                .limit(1)
            ).first()  # fmt: skip
            if latest is not None:
                conn.execute(insert(delivery_events).values(
                    step_id=latest.step_id, delivery_id=latest.id, at=now, event="unsubscribed",
                    detail={"campaign": campaign, "via": via, "was": row.status}))  # fmt: skip
        return Unsubscribed(contact_id, row.email, row.status, bool(changed),
                            latest.id if latest else None, latest.step_id if latest else None)  # fmt: skip
