"""Returned mail in the store: each message once (its content hash, unique), matched to
the delivery it is about, and what it does, all in the message's one transaction.

Matching, most certain first: the delivery that the message's VERP return path names;
the delivery whose Message-ID the returned headers quote; else, per address the report
names (final recipient, then original), the latest delivery sent to that contact
before the message's date (a quarter of an hour of clock skew allowed), within
``match_days``. Nothing else is guessed: an address no delivery matches is kept,
``unmatched``, for a person.

Effects, as events on the matched delivery (its status stays ``sent``):
- hard: ``bounced``; an active contact becomes ``bounced``.
- soft: ``soft_bounce``; the contact's ``soft_limit``-th soft-bounced delivery within
  ``soft_days`` (since their last reactivation) is ``bounced`` instead, as a hard one.
- complaint: ``complained``; the contact becomes ``complained`` (from active, bounced
  or unsubscribed: a complaint is the strongest refusal).
- auto-reply: ``auto_reply``; nobody changes.
Every change of status is kept in the consent history (via ``bounce`` / ``complaint``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from outreach.db.consent import record_changes
from outreach.db.models import (
    consent_events,
    contacts,
    deliveries,
    delivery_events,
    inbound_messages,
    inbound_recipients,
    steps,
    utcnow,
)
from outreach.db.patience import Patience, patient
from outreach.db.repository import Repository
from outreach.domain.contact import email_key
from outreach.ports import Applied, BounceRules, Recorded, ReturnedMail, ReturnedRecipient

ACTING = ("hard", "soft", "complaint", "auto_reply")  # kinds that are about a delivery
_SKEW = timedelta(minutes=15)  # a reporting server's clock may run behind ours
_LIST_COLUMNS = [c for c in inbound_messages.c if c.name != "raw"]
_DELIVERY = (deliveries.c.id, deliveries.c.step_id, deliveries.c.contact_id, contacts.c.email,
             contacts.c.status, steps.c.campaign)  # fmt: skip


@patient
@dataclass
class SqlInbound(Repository):
    """``ports.Inbound`` on any SQLAlchemy engine."""

    engine: Engine
    clock: Callable[[], datetime] = utcnow
    patience: Patience = field(default_factory=Patience)

    # -- writing -------------------------------------------------------------------

    def record(self, mail: ReturnedMail, rules: BounceRules) -> Recorded:
        """Store ``mail`` and do what it says, in one transaction; a message stored
        before (by this process or another at the same time) does nothing again."""
        now = self.clock()
        try:
            with self._write() as conn, conn.begin():
                # the hash first: a second reader of the same message stops here
                found = conn.execute(select(inbound_messages.c.id)
                                     .where(inbound_messages.c.content_hash == mail.content_hash)).scalar()  # fmt: skip
                if found is not None:
                    return Recorded(found, new=False)
                inbound_id = conn.execute(insert(inbound_messages).values(
                    content_hash=mail.content_hash, received_at=now, dated=mail.dated, source=mail.source,
                    kind=mail.kind, reason=mail.reason, format=mail.format, message_id=mail.message_id,
                    original_message_id=mail.original_message_id, feedback_type=mail.feedback_type,
                )).inserted_primary_key[0]  # fmt: skip
                applied = self._apply(conn, inbound_id, mail, rules, mail.dated or now) if mail.kind in ACTING else []
                unmatched = sum(a.delivery_id is None for a in applied)
                keep = mail.kind == "unparseable" or unmatched > 0
                conn.execute(update(inbound_messages).where(inbound_messages.c.id == inbound_id).values(
                    matched=len(applied) - unmatched, unmatched=unmatched,
                    raw=mail.raw[: rules.keep_raw] if keep else None))  # fmt: skip
                return Recorded(inbound_id, new=True, applied=tuple(applied))
        except IntegrityError:
            with self.engine.connect() as conn:
                found = conn.execute(select(inbound_messages.c.id)
                                     .where(inbound_messages.c.content_hash == mail.content_hash)).scalar()  # fmt: skip
            if found is None:
                raise
            return Recorded(found, new=False)  # stored by another reader meanwhile

    def _apply(self, conn: Connection, inbound_id: int, mail: ReturnedMail, rules: BounceRules,
               dated: datetime) -> list[Applied]:  # fmt: skip
        delivery, by = None, None
        if mail.verp_delivery is not None:
            delivery, by = self._delivery(conn, deliveries.c.id == mail.verp_delivery), "verp"
        if delivery is None and mail.original_message_id:
            delivery, by = self._delivery(conn, deliveries.c.message_id == mail.original_message_id), "message_id"
        if delivery is not None:
            one = _recipient_for(mail, delivery.email)
            return [self._act(conn, inbound_id, mail, one, delivery, by, rules, dated)]
        out = []
        for one in mail.recipients or (ReturnedRecipient(None, mail.kind),):
            found = self._by_address(conn, one, dated, rules.match_days)
            out.append(self._act(conn, inbound_id, mail, one, found, "recipient" if found else None, rules, dated))
        return out

    def _delivery(self, conn: Connection, clause: Any) -> Any:
        """An email delivery (one with a contact) and its contact and campaign."""
        return conn.execute(
            select(*_DELIVERY).join(contacts, contacts.c.id == deliveries.c.contact_id)
            .join(steps, steps.c.id == deliveries.c.step_id).where(clause).limit(1)
        ).first()  # fmt: skip

    def _by_address(self, conn: Connection, one: ReturnedRecipient, dated: datetime, days: int) -> Any:
        """The latest delivery sent to the address (or the original one) in the window."""
        for address in dict.fromkeys(a for a in (one.address, one.original) if a):
            contact_id = conn.execute(select(contacts.c.id).where(contacts.c.email_key == email_key(address))).scalar()
            if contact_id is None:
                continue
            sent = (
                select(delivery_events.c.delivery_id)
                .join(deliveries, deliveries.c.id == delivery_events.c.delivery_id)
                .where(deliveries.c.contact_id == contact_id, delivery_events.c.event == "sent",
                       delivery_events.c.at <= dated + _SKEW, delivery_events.c.at >= dated - timedelta(days=days))
                .order_by(delivery_events.c.at.desc(), delivery_events.c.id.desc()).limit(1)
            ).scalar_subquery()  # fmt: skip
            found = self._delivery(conn, deliveries.c.id == sent)
            if found is not None:
                return found
        return None

    def _act(self, conn: Connection, inbound_id: int, mail: ReturnedMail, one: ReturnedRecipient, delivery: Any,
             by: str | None, rules: BounceRules, dated: datetime) -> Applied:  # fmt: skip
        row = {"inbound_id": inbound_id, "address": one.address, "kind": one.kind, "status": one.status,
               "diagnostic": one.diagnostic, "dated": dated}  # fmt: skip
        if delivery is None:
            conn.execute(insert(inbound_recipients).values(**row, effect="unmatched"))
            return Applied(one.address, one.kind, "unmatched")
        row |= {"delivery_id": delivery.id, "contact_id": delivery.contact_id, "matched_by": by}
        recipient_id = conn.execute(insert(inbound_recipients).values(**row, effect=one.kind)).inserted_primary_key[0]
        code = f" ({one.status})" if one.status else ""
        effect, to, via = one.kind, None, "bounce"
        if one.kind == "hard":
            effect, to, why = "bounced", "bounced", f"hard bounce{code}: the address does not work"
        elif one.kind == "soft":
            n = self._soft_count(conn, delivery.contact_id, dated, rules.soft_days)
            if n >= rules.soft_limit:
                effect, to = "bounced", "bounced"
                why = (f"soft bounce{code}: {n} soft-bounced messages within {rules.soft_days} days "
                       f"(a limit of {rules.soft_limit}), counted as a hard bounce")  # fmt: skip
            else:
                effect = "soft_bounce"
                why = f"soft bounce{code}: {n} of {rules.soft_limit} within {rules.soft_days} days"
        elif one.kind == "complaint":
            effect, to, via = "complained", "complained", "complaint"
            why = f"complaint ({mail.feedback_type or 'feedback report'}): the recipient reported the message"
        else:
            effect, why = "auto_reply", "an automatic reply: it changes nobody's status"
        conn.execute(update(inbound_recipients).where(inbound_recipients.c.id == recipient_id).values(effect=effect))
        became = None
        if to is not None:
            among = ("active",) if to == "bounced" else ("active", "bounced", "unsubscribed")
            clause = (contacts.c.id == delivery.contact_id) & contacts.c.status.in_(among)
            record_changes(conn, clause, to, via=via, at=self.clock(), campaign=delivery.campaign,
                           reason=f"{why} (returned message {inbound_id})")  # fmt: skip
            if conn.execute(update(contacts).where(clause).values(status=to, updated_at=self.clock())).rowcount:
                became = to
        detail = {"reason": why, "kind": one.kind, "status": one.status, "reply": one.diagnostic,
                  "address": one.address, "matched_by": by, "inbound": inbound_id, "format": mail.format,
                  "feedback_type": mail.feedback_type, "was": delivery.status,
                  "contact": f"{delivery.status} -> {became}" if became else None}  # fmt: skip
        self._event(conn, delivery.step_id, delivery.id, effect,
                    {k: v for k, v in detail.items() if v not in (None, "")})  # fmt: skip
        return Applied(one.address, one.kind, effect, delivery.id, by, delivery.email, became)

    @staticmethod
    def _soft_count(conn: Connection, contact_id: int, dated: datetime, days: int) -> int:
        """Distinct deliveries of the contact soft-bounced within ``days`` up to
        ``dated``, since the contact was last reactivated."""
        since = dated - timedelta(days=days)
        reactivated = conn.execute(
            select(func.max(consent_events.c.at)).where(consent_events.c.contact_id == contact_id,
                                                        consent_events.c.status_to == "active")
        ).scalar()  # fmt: skip
        if reactivated is not None and reactivated > since:
            since = reactivated
        return conn.execute(
            select(func.count(inbound_recipients.c.delivery_id.distinct())).where(
                inbound_recipients.c.contact_id == contact_id, inbound_recipients.c.kind == "soft",
                inbound_recipients.c.dated > since, inbound_recipients.c.dated <= dated)
        ).scalar_one()  # fmt: skip

    # -- reading -------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Messages stored by kind, and how many name someone no delivery matches."""
        with self.engine.connect() as conn:
            out = dict(conn.execute(select(inbound_messages.c.kind, func.count())
                                    .group_by(inbound_messages.c.kind)).all())  # type: ignore[arg-type]  # fmt: skip
            out["unmatched"] = conn.execute(
                select(func.count()).where(inbound_messages.c.unmatched > 0)
            ).scalar_one()
        return out

    def messages(self, *, kind: str | None = None, unmatched: bool = False,
                 limit: int = 50) -> list[dict[str, Any]]:  # fmt: skip
        """The latest messages (newest first), each with its recipients."""
        query = select(*_LIST_COLUMNS).order_by(inbound_messages.c.id.desc()).limit(limit)
        if kind:
            query = query.where(inbound_messages.c.kind == kind)
        if unmatched:
            query = query.where(inbound_messages.c.unmatched > 0)
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
            recipients = self._recipients(conn, [r["id"] for r in rows])
        for row in rows:
            row["recipients"] = recipients.get(row["id"], [])
        return rows

    def message(self, inbound_id: int) -> dict[str, Any] | None:
        """One message with its recipients and, when it was kept, its text."""
        with self.engine.connect() as conn:
            row = conn.execute(select(inbound_messages).where(inbound_messages.c.id == inbound_id)).first()
            if row is None:
                return None
            out = dict(row._mapping)
            out["recipients"] = self._recipients(conn, [inbound_id]).get(inbound_id, [])
        return out

    def about_contact(self, contact_id: int, *, limit: int = 20) -> list[dict[str, Any]]:
        """What came back about the contact, newest first."""
        query = (
            select(inbound_recipients.c.inbound_id, inbound_recipients.c.kind, inbound_recipients.c.effect,
                   inbound_recipients.c.status, inbound_recipients.c.diagnostic, inbound_recipients.c.matched_by,
                   inbound_recipients.c.delivery_id, inbound_recipients.c.dated, inbound_messages.c.feedback_type)
            .join(inbound_messages, inbound_messages.c.id == inbound_recipients.c.inbound_id)
            .where(inbound_recipients.c.contact_id == contact_id)
            .order_by(inbound_recipients.c.id.desc()).limit(limit)
        )  # fmt: skip
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    @staticmethod
    def _recipients(conn: Connection, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
        out: dict[int, list[dict[str, Any]]] = {}
        if not ids:
            return out
        query = (select(inbound_recipients).where(inbound_recipients.c.inbound_id.in_(ids))
                 .order_by(inbound_recipients.c.id))  # fmt: skip
        for r in conn.execute(query):
            out.setdefault(r.inbound_id, []).append(dict(r._mapping))
        return out


def _recipient_for(mail: ReturnedMail, email: str) -> ReturnedRecipient:
    """Of the recipients a report names, the one the matched delivery went to (by
    address as delivered or as given), else its only one, else the first of the
    message's own kind; a report that names nobody: the message's kind alone."""
    want = email.casefold()
    for one in mail.recipients:
        if want in {(a or "").casefold() for a in (one.address, one.original)}:
            return one
    if len(mail.recipients) == 1:
        return mail.recipients[0]
    for one in mail.recipients:
        if one.kind == mail.kind:
            return one
    return ReturnedRecipient(None, mail.kind)
