"""The contact store on SQLAlchemy Core: bulk upsert for imports, queries by segment."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, bindparam, delete, func, insert, select, update

from outreach.db.models import contact_tags, contacts, suppressions, utcnow
from outreach.db.segments import where
from outreach.domain.audience import Expr
from outreach.domain.contact import Contact, ContactRecord, email_key, suppression_hash
from outreach.ports import BatchOutcome

# Columns an import may set on an existing contact (email_key never changes).
_UPDATABLE = (
    "email",
    "name",
    "organization",
    "kind",
    "sector",
    "country",
    "language",
    "timezone",
    "x_handle",
    "status",
)
_ROW = [contacts.c.id, contacts.c.email_key, *(contacts.c[c] for c in _UPDATABLE), contacts.c.attrs]


class ContactWriter:
    """Writes batches of records inside one transaction (see ``SqlContactStore.writer``)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._update = (
            update(contacts)
            .where(contacts.c.id == bindparam("_id"))
            .values({c: bindparam(c) for c in (*_UPDATABLE, "attrs", "updated_at")})
        )

    def write(self, records: Sequence[ContactRecord], *, mode: str = "upsert") -> BatchOutcome:
        """Insert or update ``records`` as if one after the other (a later duplicate wins)."""
        keys = [email_key(r.email) for r in records]
        seen: set[str] = set()
        for i, key in enumerate(keys):
            if key in seen:  # a repeated address: write what came before it first
                outcome = self._write(records[:i], keys[:i], mode)
                outcome.add(self.write(records[i:], mode=mode), i)
                return outcome
            seen.add(key)
        return self._write(records, keys, mode)

    def _write(self, records: Sequence[ContactRecord], keys: list[str], mode: str) -> BatchOutcome:
        out = BatchOutcome()
        if not records:
            return out
        conn = self.conn
        hashes = {suppression_hash(k): i for i, k in enumerate(keys)}
        blocked = {
            hashes[h]
            for h in conn.execute(
                select(suppressions.c.email_hash).where(suppressions.c.email_hash.in_(list(hashes)))
            ).scalars()
        }
        existing = {
            row.email_key: row
            for row in conn.execute(select(*_ROW).where(contacts.c.email_key.in_(keys)))
        }
        old_tags: dict[int, set[str]] = {}
        if existing and any(r.tags for r in records):
            ids = [row.id for row in existing.values()]
            for cid, tag in conn.execute(
                select(contact_tags.c.contact_id, contact_tags.c.tag).where(
                    contact_tags.c.contact_id.in_(ids)
                )
            ):
                old_tags.setdefault(cid, set()).add(tag)

        now = utcnow()
        new_rows: list[dict] = []
        new_tags: list[tuple[str, ...]] = []
        changed_rows: list[dict] = []
        tag_rows: list[dict] = []
        for i, (record, key) in enumerate(zip(records, keys, strict=True)):
            if i in blocked:
                out.suppressed.append(i)
                continue
            row = existing.get(key)
            if row is None:
                new_rows.append(_new_row(record, key, now))
                new_tags.append(record.tags)
                continue
            if mode == "insert-only":
                out.existing += 1
                continue
            current = {c: getattr(row, c) for c in _UPDATABLE}
            merged = dict(current)
            for column in _UPDATABLE:
                value = getattr(record, column)
                if value is None:
                    continue
                if column == "status" and current["status"] != "active" and value == "active":
                    continue  # consent: an import never re-subscribes anyone
                merged[column] = value
            attrs = {**(row.attrs or {}), **record.attrs}
            added = set(record.tags) - old_tags.get(row.id, set())
            tag_rows += [{"contact_id": row.id, "tag": t} for t in sorted(added)]
            if merged != current or attrs != (row.attrs or {}) or added:
                changed_rows.append({"_id": row.id, **merged, "attrs": attrs, "updated_at": now})
                out.updated += 1
            else:
                out.unchanged += 1

        if new_rows:
            if any(new_tags):
                ids = (
                    conn.execute(
                        insert(contacts).returning(contacts.c.id, sort_by_parameter_order=True),
                        new_rows,
                    )
                    .scalars()
                    .all()
                )
                for cid, tags in zip(ids, new_tags, strict=True):
                    tag_rows += [{"contact_id": cid, "tag": t} for t in tags]
            else:
                conn.execute(insert(contacts), new_rows)
            out.inserted += len(new_rows)
        if changed_rows:
            conn.execute(self._update, changed_rows)
        if tag_rows:
            conn.execute(insert(contact_tags), tag_rows)
        return out


def _new_row(record: ContactRecord, key: str, now) -> dict:  # type: ignore[no-untyped-def]
    return {
        "email": record.email,
        "email_key": key,
        "name": record.name,
        "organization": record.organization,
        "kind": record.kind or "other",
        "sector": record.sector,
        "country": record.country,
        "language": record.language,
        "timezone": record.timezone,
        "x_handle": record.x_handle,
        "status": record.status or "active",
        "attrs": record.attrs,
        "created_at": now,
        "updated_at": now,
    }


class SqlContactStore:
    """``ports.ContactStore`` on any SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def writer(self, *, dry_run: bool = False) -> Iterator[ContactWriter]:
        """One transaction for a whole import: committed at the end, or rolled back
        (on error, and always for a dry run) so nothing is ever written half-way."""
        with self.engine.connect().execution_options(write=True) as conn:
            tx = conn.begin()
            try:
                yield ContactWriter(conn)
            except BaseException:
                tx.rollback()
                raise
            if dry_run:
                tx.rollback()
            else:
                tx.commit()

    # -- reading -------------------------------------------------------------
    def count(self, expr: Expr) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count()).select_from(contacts).where(where(expr))
            ).scalar_one()

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
                    suppressions.c.email_hash == suppression_hash(email)
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

    def set_status(self, expr: Expr, status: str, *, only_if: str | None = "active") -> int:
        """Set ``status`` on matching contacts (by default only those now active)."""
        clause = where(expr)
        if only_if is not None:
            clause = clause & (contacts.c.status == only_if)
        with self.engine.connect().execution_options(write=True) as conn, conn.begin():
            result = conn.execute(
                update(contacts).where(clause).values(status=status, updated_at=utcnow())
            )
            return result.rowcount

    def delete(self, expr: Expr, *, erase: bool = False, reason: str = "erased on request") -> int:
        """Delete matching contacts; with ``erase`` keep only a suppression hash of each."""
        clause = where(expr)
        with self.engine.connect().execution_options(write=True) as conn, conn.begin():
            emails = conn.execute(select(contacts.c.id, contacts.c.email).where(clause)).all()
            if erase:
                now = utcnow()
                hashes = {suppression_hash(e.email) for e in emails}
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
