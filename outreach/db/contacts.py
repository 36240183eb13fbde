"""The contact store on SQLAlchemy Core: queries and changes by segment.

Bulk writes for imports are in ``contact_writer``."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from outreach.db.consent import record_changes
from outreach.db.contact_writer import ContactWriter
from outreach.db.models import contact_tags, contacts, suppressions, utcnow
from outreach.db.segments import where
from outreach.domain.audience import Expr
from outreach.domain.contact import Contact, email_key
from outreach.domain.suppression import suppression_hash, suppression_hashes


class SqlContactStore:
    """``ports.ContactStore`` on any SQLAlchemy engine.

    ``key``: the workspace's secret key (or a function that gives it, called when it is
    first needed), with which erased addresses are kept as HMAC-SHA256. Suppressions
    stored as unkeyed SHA-256 (before keys were used; the addresses are gone, so
    they cannot be converted) are checked as well, and keep blocking their
    addresses. Without a key (tests, tools) the unkeyed form is written.
    """

    def __init__(self, engine: Engine, *, key: bytes | Callable[[], bytes] | None = None) -> None:
        self.engine = engine
        self._key = key

    @property
    def key(self) -> bytes | None:
        """The suppression key, fetched once."""
        if callable(self._key):
            self._key = self._key()
        return self._key

    @contextmanager
    def writer(self, *, dry_run: bool = False) -> Iterator[ContactWriter]:
        """One transaction for a whole import: committed at the end, or rolled back
        (on error, and always for a dry run) so nothing is ever written half-way."""
        with self.engine.connect().execution_options(write=True) as conn:
            sqlite = conn.dialect.name == "sqlite"
            try:
                tx = conn.begin()
                try:
                    writer = ContactWriter(conn, key=lambda: self.key)
                    yield writer
                    if not dry_run:
                        writer.finish()
                except BaseException:
                    tx.rollback()
                    raise
                if dry_run:
                    tx.rollback()
                else:
                    tx.commit()
            finally:
                if sqlite:  # the pooled connection goes back with SQLite's default
                    # page cache (the writer may have raised it)
                    conn.connection.dbapi_connection.execute("PRAGMA cache_size=-2000")

    # -- reading -------------------------------------------------------------
    def count(self, expr: Expr) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count()).select_from(contacts).where(where(expr))
            ).scalar_one()

    def zone_counts(self, expr: Expr) -> dict[str | None, int]:
        """How many contacts of ``expr`` are in each time zone (None: no zone)."""
        query = (
            select(contacts.c.timezone, func.count())
            .where(where(expr))
            .group_by(contacts.c.timezone)
        )
        with self.engine.connect() as conn:
            return dict(conn.execute(query).all())  # type: ignore[arg-type]

    def find(self, expr: Expr, *, limit: int | None = None, offset: int = 0) -> list[Contact]:
        query = select(contacts).where(where(expr)).order_by(contacts.c.id).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return self._hydrate(conn, conn.execute(query).all())

    def iterate(self, expr: Expr, *, batch: int = 2000) -> Iterator[Contact]:
        """Every matching contact in id order, a batch at a time (memory stays flat)."""
        last = 0
        clause = where(expr)
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(contacts)
                    .where(clause, contacts.c.id > last)
                    .order_by(contacts.c.id)
                    .limit(batch)
                ).all()
                page = self._hydrate(conn, rows)
            yield from page
            if len(rows) < batch:
                return
            last = rows[-1].id

    def get(self, email: str) -> Contact | None:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(contacts).where(contacts.c.email_key == email_key(email))
            ).all()
            found = self._hydrate(conn, rows)
        return found[0] if found else None

    def is_suppressed(self, email: str) -> bool:
        with self.engine.connect() as conn:
            hit = conn.execute(
                select(suppressions.c.email_hash).where(
                    suppressions.c.email_hash.in_(suppression_hashes(email, self.key))
                )
            ).first()
        return hit is not None

    @staticmethod
    def _hydrate(conn: Connection, rows: Sequence) -> list[Contact]:  # type: ignore[type-arg]
        tags: dict[int, list[str]] = {}
        if rows:
            query = (
                select(contact_tags.c.contact_id, contact_tags.c.tag)
                .where(contact_tags.c.contact_id.in_([r.id for r in rows]))
                .order_by(contact_tags.c.tag)
            )
            for cid, tag in conn.execute(query):
                tags.setdefault(cid, []).append(tag)
        return [
            Contact(
                id=r.id,
                email=r.email,
                name=r.name,
                organization=r.organization,
                kind=r.kind,
                sector=r.sector,
                country=r.country,
                language=r.language,
                timezone=r.timezone,
                x_handle=r.x_handle,
                status=r.status,
                tags=tuple(tags.get(r.id, ())),
                attrs=dict(r.attrs or {}),
                created_at=r.created_at,
                updated_at=r.updated_at,
            )
            for r in rows
        ]

    # -- changing ------------------------------------------------------------
    def add_tag(self, expr: Expr, tag: str) -> int:
        """Tag every matching contact; returns how many gained the tag."""
        has_it = select(contact_tags.c.contact_id).where(
            contact_tags.c.contact_id == contacts.c.id, contact_tags.c.tag == tag
        )
        targets = select(contacts.c.id).where(where(expr), ~has_it.exists())
        with self.engine.connect().execution_options(write=True) as conn, conn.begin():
            ids = conn.execute(targets).scalars().all()
            for chunk in _chunks(ids):
                conn.execute(insert(contact_tags), [{"contact_id": i, "tag": tag} for i in chunk])
                self._touch(conn, chunk)
        return len(ids)

    def remove_tag(self, expr: Expr, tag: str) -> int:
        targets = select(contacts.c.id).where(
            where(expr),
            select(contact_tags.c.contact_id)
            .where(contact_tags.c.contact_id == contacts.c.id, contact_tags.c.tag == tag)
            .exists(),
        )
        with self.engine.connect().execution_options(write=True) as conn, conn.begin():
            ids = conn.execute(targets).scalars().all()
            for chunk in _chunks(ids):
                conn.execute(
                    delete(contact_tags).where(
                        contact_tags.c.tag == tag, contact_tags.c.contact_id.in_(chunk)
                    )
                )
                self._touch(conn, chunk)
        return len(ids)

    def set_status(self, expr: Expr, status: str, *, only_if: str | None = "active",
                   via: str = "cli", actor: str | None = None) -> int:  # fmt: skip
        """Set ``status`` on matching contacts (by default only those now active); each
        change is kept in the consent history with ``via`` (how: ``cli`` for a command)
        and ``actor`` (who, when known)."""
        clause = where(expr)
        if only_if is not None:
            clause = clause & (contacts.c.status == only_if)
        now = utcnow()
        with self.engine.connect().execution_options(write=True) as conn, conn.begin():
            record_changes(conn, clause, status, via=via, at=now, actor=actor)
            result = conn.execute(
                update(contacts).where(clause).values(status=status, updated_at=now)
            )
            return result.rowcount

    def reactivate(self, email: str, *, reason: str, by: str) -> str | None:
        """Undo a wrong bounce: a bounced contact becomes active again, and its attrs
        keep who did it, when and why (``reactivated_at``, ``_by``, ``_reason``,
        ``_from``; a later reactivation replaces them). The contact's status before
        (only ``bounced`` is changed), or None when no contact has the address."""
        with self.engine.connect().execution_options(write=True) as conn, conn.begin():
            row = conn.execute(
                select(contacts.c.id, contacts.c.status, contacts.c.attrs).where(
                    contacts.c.email_key == email_key(email)
                )
            ).first()
            if row is None or row.status != "bounced":
                return None if row is None else row.status
            now = utcnow()
            attrs = dict(row.attrs or {}) | {
                "reactivated_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "reactivated_by": by,
                "reactivated_reason": reason, "reactivated_from": row.status,
            }  # fmt: skip
            record_changes(conn, contacts.c.id == row.id, "active", via="reactivate", at=now,
                           actor=by, reason=reason)  # fmt: skip
            conn.execute(
                update(contacts)
                .where(contacts.c.id == row.id, contacts.c.status == "bounced")
                .values(status="active", attrs=attrs, updated_at=now)
            )
        return row.status

    def delete(self, expr: Expr, *, erase: bool = False, reason: str = "erased on request") -> int:
        """Delete matching contacts; with ``erase`` keep only a suppression hash of each."""
        clause = where(expr)
        with self.engine.connect().execution_options(write=True) as conn, conn.begin():
            emails = conn.execute(select(contacts.c.id, contacts.c.email).where(clause)).all()
            if erase:
                now = utcnow()
                key = self.key
                hashes = {suppression_hash(e.email, key) for e in emails}
                known = (
                    set(
                        conn.execute(
                            select(suppressions.c.email_hash).where(
                                suppressions.c.email_hash.in_(list(hashes))
                            )
                        ).scalars()
                    )
                    if hashes
                    else set()
                )
                fresh = [
                    {"email_hash": h, "reason": reason, "created_at": now} for h in hashes - known
                ]
                if fresh:
                    conn.execute(insert(suppressions), fresh)
            for chunk in _chunks([e.id for e in emails]):
                conn.execute(delete(contacts).where(contacts.c.id.in_(chunk)))
        return len(emails)

    @staticmethod
    def _touch(conn: Connection, ids: Sequence[int]) -> None:
        conn.execute(update(contacts).where(contacts.c.id.in_(ids)).values(updated_at=utcnow()))


def _chunks(items: Sequence[int], size: int = 5000) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
