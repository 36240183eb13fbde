"""Leases on claimed deliveries, for many sender processes on many machines around
one database (``ports.Leases``).

A claim writes who holds each row (``holder``: the process's ``identity.process_id``)
and until when (``lease_until``: now + ``identity.lease_seconds()``); the holder renews
its ``sending`` rows while it lives (``renew``, one UPDATE). Just before a message
(or post) goes to the server, its row is marked ``handed`` (``hand``, one UPDATE per
window of messages): from then on, a crash leaves its outcome unknown.

Only an expired lease is taken over (``recover``), or a row claimed with no holder
(rows from before leases, and claims made without one): a live sender's rows never
are. What the take-over makes of a row:

- handed, or with no holder (whether it was handed is unknown): what the channel's
  crash policy says (``domain.channels``): email, a release or a report go again,
  marked uncertain and logged ``uncertain`` (the recipient may get it twice); an X
  post becomes ``uncertain`` for a person to decide;
- not handed: back to ``queued``, unmarked, logged ``released`` (nothing was sent;
  the claim spent no attempt: ``counts_as_attempt`` false).

On PostgreSQL every statement here locks the rows it changes in id order, or skips
rows another transaction holds (SKIP LOCKED), so that two processes never deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update

from outreach.db.models import deliveries, delivery_events, steps
from outreach.db.repository import Repository
from outreach.domain import channels
from outreach.domain.status import DeliveryStatus
from outreach.identity import lease_seconds

SENDING = DeliveryStatus.SENDING
RELEASED = "released"  # the event of a row taken back before it was handed over


class SqlLeases(Repository):
    """``ports.Leases``; mixed into ``SqlOutbox`` (which picks ``_sql``, the dialect's SQL)."""

    _sql: Any

    def _lease_end(self) -> datetime:
        """When a lease taken or renewed now ends."""
        return self.clock() + timedelta(seconds=lease_seconds())

    def recover(self, *, by: str | None = None) -> int:
        """Take over the deliveries left ``sending`` under an expired lease (or with no
        holder), except ``by``'s own: returns how many. Called with no holder at a
        sender's start, and by every running sender from time to time, so that the
        rows of a sender that died go to the survivors without a restart."""
        now = self.clock()
        expired = (deliveries.c.holder.is_(None) | deliveries.c.lease_until.is_(None)
                   | (deliveries.c.lease_until < now))  # fmt: skip
        others = [deliveries.c.holder.is_(None) | (deliveries.c.holder != by)] if by else []
        query = (
            select(deliveries.c.id, deliveries.c.step_id, deliveries.c.holder, deliveries.c.handed,
                   steps.c.channel)
            .join(steps, steps.c.id == deliveries.c.step_id)
            .where(deliveries.c.status == SENDING, expired, *others)
            .order_by(deliveries.c.id)
        )  # fmt: skip
        with self._write() as conn, conn.begin():
            rows = conn.execute(self._sql.lock_due(query)).all()  # SKIP LOCKED: never waits
            if not rows:
                return 0
            changes: dict[tuple[str, int], list[int]] = {}  # (status, uncertain) -> ids
            events = []
            for row in rows:
                policy = channels.channel(row.channel)  # what a crash means on this channel
                detail: dict[str, Any] = {"holder": row.holder} if row.holder else {}
                if row.holder is not None and not row.handed:  # never reached the server
                    changes.setdefault((DeliveryStatus.QUEUED, 0), []).append(row.id)
                    detail.update(reason="its sender stopped before handing it over: queued again, "
                                  "nothing was sent", counts_as_attempt=False)  # fmt: skip
                    events.append((row, RELEASED, detail))
                    continue
                resend = policy.resend_after_crash
                status = DeliveryStatus.QUEUED if resend else DeliveryStatus.UNCERTAIN
                changes.setdefault((status, 1), []).append(row.id)
                detail["reason"] = "the sender stopped while this was being sent; " + policy.after_crash
                if not resend:
                    detail["decide"] = "retry or mark-sent"  # the edge names the commands or links
                events.append((row, DeliveryStatus.UNCERTAIN, detail))
            for (status, uncertain), ids in changes.items():  # rows locked above, in id order
                values: dict[str, Any] = {"status": status, "due_at": now, "updated_at": now, "lease_until": None}
                if uncertain:
                    values["uncertain"] = 1
                conn.execute(update(deliveries).where(deliveries.c.id.in_(ids)).values(**values))
            conn.execute(insert(delivery_events), [
                {"step_id": row.step_id, "delivery_id": row.id, "at": now, "event": str(event), "detail": detail}
                for row, event, detail in events])  # fmt: skip
        return len(rows)

    def renew(self, holder: str) -> int:
        """A fresh lease on every ``sending`` row of ``holder`` (one UPDATE; rows
        another transaction has locked, being recorded, are skipped)."""
        held = self._sql.lock_rows(
            select(deliveries.c.id).where(deliveries.c.holder == holder, deliveries.c.status == SENDING)
            .order_by(deliveries.c.id), skip=True,
        )  # fmt: skip
        with self._write() as conn, conn.begin():
            return conn.execute(
                update(deliveries).where(deliveries.c.id.in_(held)).values(lease_until=self._lease_end())
            ).rowcount

    def hand(self, delivery_ids: Sequence[int], holder: str) -> set[int]:
        """Mark these rows handed (their messages go to the server next) and renew
        their lease, in one UPDATE; returns those ``holder`` still holds (a row taken
        over meanwhile is another sender's now: it must not go)."""
        if not delivery_ids:
            return set()
        with self._write() as conn, conn.begin():
            return self._sql.hand(conn, sorted(delivery_ids), holder, self._lease_end())

    def held_until(self, channels: Sequence[str], *, by: str) -> datetime | None:
        """The soonest end of a live lease that another holder has on ``sending`` rows
        of these channels; None when no one else is sending them."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.min(deliveries.c.lease_until))
                .join(steps, steps.c.id == deliveries.c.step_id)
                .where(deliveries.c.status == SENDING, deliveries.c.holder.is_not(None),
                       deliveries.c.holder != by, deliveries.c.lease_until >= self.clock(),
                       steps.c.channel.in_(list(channels)))
            ).scalar()  # fmt: skip
