"""Bulk writes for imports: upsert batches of contacts inside one transaction.

The hot path of a million-row import. Rows are prepared (``prepare``) in the
import's worker processes as plain tuples in the INSERT's column order, so this
process only looks up existing addresses, hands new rows to the driver as they are,
and merges the few that exist already.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import partial
from json.encoder import encode_basestring_ascii as _quote

from sqlalchemy import Connection, bindparam, func, insert, literal_column, select, update

from outreach.db.models import contact_tags, contacts, suppressions, utcnow
from outreach.domain.contact import ContactRecord, suppression_hash
from outreach.ports import BatchOutcome

# A prepared row: the INSERT's values but the two timestamps, then the tags.
# kind and status may be None ("not given"): the INSERT fills in their defaults,
# an update keeps what is stored.
_COLUMNS = ("email", "email_key", "name", "organization", "kind", "sector", "country",
            "language", "timezone", "x_handle", "status", "attrs")  # fmt: skip
_STAMPS = ("created_at", "updated_at")
_FIELDS = _COLUMNS[:-1]  # what an update compares and merges (email_key never changes)
_ATTRS = len(_COLUMNS) - 1
_TAGS = len(_COLUMNS)
_KEY = 1
_STATUS = _COLUMNS.index("status")

Prepared = tuple  # (*_COLUMNS values, tags)


def prepare(records: Sequence[ContactRecord], *, json_text: bool) -> list[Prepared]:
    """Rows ready for ``ContactWriter.write_prepared`` (runs in import workers).

    ``json_text``: store attributes as JSON text (SQLite); else as a dict for the
    driver to adapt (PostgreSQL).
    """
    return [
        (r.email, r.email.casefold(), r.name, r.organization, r.kind, r.sector, r.country,
         r.language, r.timezone, r.x_handle, r.status,
         _json_text(r.attrs) if json_text else r.attrs, r.tags)
        for r in records
    ]  # fmt: skip


def _json_text(attrs: dict[str, str]) -> str:
    """``json.dumps(attrs)`` for a flat dict of strings, several times faster."""
    if not attrs:
        return "{}"
    return "{" + ", ".join(f"{_quote(k)}: {_quote(v)}" for k, v in attrs.items()) + "}"


class ContactWriter:
    """Writes batches of records inside one transaction (see ``SqlContactStore.writer``)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        # SQLite: driver-ready tuples straight to the driver (see _executemany).
        # Others: plain values through SQLAlchemy, whose batched multi-row INSERTs
        # (insertmanyvalues) are already fast on PostgreSQL.
        self.raw = conn.dialect.name == "sqlite"
        self.json_text = self.raw
        self._compiled: dict[tuple, tuple[str, list[int]]] = {}
        self._any_suppressed = (
            conn.execute(select(suppressions.c.email_hash).limit(1)).first() is not None
        )
        # SQLite: insert blocks as new at first, and look addresses up only once one
        # turns out to be stored (see _insert_all)
        self.optimistic = self.raw
        self._insert = insert(contacts).values(
            {c: bindparam(c) for c in (*_COLUMNS, *_STAMPS)}
            | {
                "kind": func.coalesce(bindparam("kind"), literal_column("'other'")),
                "status": func.coalesce(bindparam("status"), literal_column("'active'")),
            }
        )
        self._tag_insert = insert(contact_tags)
        self._update = (
            update(contacts)
            .where(contacts.c.id == bindparam("_id"))
            .values({c: bindparam(c) for c in (*_FIELDS, "attrs", "updated_at")})
        )

    def preparer(self) -> Callable[[Sequence[ContactRecord]], list[Prepared]]:
        """``prepare`` for this database, picklable for worker processes."""
        return partial(prepare, json_text=self.json_text)

    def write(self, records: Sequence[ContactRecord], *, mode: str = "upsert") -> BatchOutcome:
        return self.write_prepared(prepare(records, json_text=self.json_text), mode=mode)

    def write_prepared(self, rows: Sequence[Prepared], *, mode: str = "upsert") -> BatchOutcome:
        """Insert or update as if one row after the other (a later duplicate wins)."""
        seen: set[str] = set()
        for i, row in enumerate(rows):
            key = row[_KEY]
            if key in seen:  # a repeated address: write what came before it first
                outcome = self._write(rows[:i], mode)
                outcome.add(self.write_prepared(rows[i:], mode=mode), i)
                return outcome
            seen.add(key)
        return self._write(rows, mode)

    def _write(self, rows: Sequence[Prepared], mode: str) -> BatchOutcome:
        out = BatchOutcome()
        if not rows:
            return out
        if self.optimistic and not self._any_suppressed:
            inserted = self._insert_all(rows)
            if inserted is not None:
                out.inserted = inserted
                return out
            self.optimistic = False  # this import meets stored addresses: look them up first
        keys = [row[_KEY] for row in rows]
        blocked = self._suppressed(keys)
        existing = {
            r.email_key: r
            for r in self.conn.execute(
                select(contacts.c.id, *(contacts.c[c] for c in _FIELDS), contacts.c.attrs).where(
                    contacts.c.email_key.in_(keys)
                )
            )
        }
        stamps = (self._driver_value(contacts.c.updated_at, utcnow()),) * 2
        new_rows: list[tuple] = []
        new_tags: list[tuple[str, ...]] = []
        changed: list[Prepared] = []
        for i, row in enumerate(rows):
            if i in blocked:
                out.suppressed.append(i)
            elif row[_KEY] not in existing:
                new_rows.append(row[:_TAGS] + stamps)
                new_tags.append(row[_TAGS])
            elif mode == "insert-only":
                out.existing += 1
            else:
                changed.append(row)

        tag_rows: list[tuple[int, str]] = []
        if new_rows:
            self._executemany(self._insert, (*_COLUMNS, *_STAMPS), new_rows)
            out.inserted += len(new_rows)
            if any(new_tags):
                for contact_id, tags in zip(self._new_ids(new_rows), new_tags, strict=True):
                    tag_rows += [(contact_id, t) for t in tags]
        if changed:
            updates, added = self._merge(changed, existing, stamps[0])
            out.updated += len(updates)
            out.unchanged += len(changed) - len(updates)
            if updates:
                self._executemany(self._update, (*_FIELDS, "attrs", "updated_at", "_id"), updates)
            tag_rows += added
        if tag_rows:
            self._executemany(self._tag_insert, ("contact_id", "tag"), tag_rows)
        return out

    def _suppressed(self, keys: list[str]) -> set[int]:
        if not self._any_suppressed:
            return set()
        hashes = {suppression_hash(k): i for i, k in enumerate(keys)}
        query = select(suppressions.c.email_hash).where(suppressions.c.email_hash.in_(list(hashes)))
        return {hashes[h] for h in self.conn.execute(query).scalars()}

    def _insert_all(self, rows: Sequence[Prepared]) -> int | None:
        """Insert every row as new without looking any up first (a new list, the common
        case, then costs one index probe less per row); None, with nothing written, if
        one of them is stored already."""
        import sqlite3

        from sqlalchemy.exc import IntegrityError

        stamps = (self._driver_value(contacts.c.updated_at, utcnow()),) * 2
        self.conn.exec_driver_sql("SAVEPOINT outreach_block")
        try:
            self._executemany(self._insert, (*_COLUMNS, *_STAMPS), [row[:_TAGS] + stamps for row in rows])
        except (IntegrityError, sqlite3.IntegrityError):
            self.conn.exec_driver_sql("ROLLBACK TO outreach_block")
            self.conn.exec_driver_sql("RELEASE outreach_block")
            return None
        self.conn.exec_driver_sql("RELEASE outreach_block")
        tags = [row[_TAGS] for row in rows]
        if any(tags):
            first = self.conn.exec_driver_sql("SELECT last_insert_rowid()").scalar_one() - len(rows) + 1
            self._executemany(self._tag_insert, ("contact_id", "tag"),
                              [(first + i, t) for i, row_tags in enumerate(tags) for t in row_tags])  # fmt: skip
        return len(rows)

    def _merge(self, rows: list[Prepared], existing: dict, stamp) -> tuple[list[tuple], list]:  # type: ignore[no-untyped-def]
        """Updates for rows whose address is stored: given values replace stored ones,
        blanks keep them, attributes merge, tags add, and status never returns to
        active (an import re-subscribes nobody)."""
        ids = [existing[row[_KEY]].id for row in rows]
        old_tags: dict[int, set[str]] = {}
        if any(row[_TAGS] for row in rows):
            query = select(contact_tags.c.contact_id, contact_tags.c.tag).where(
                contact_tags.c.contact_id.in_(ids)
            )
            for cid, tag in self.conn.execute(query):
                old_tags.setdefault(cid, set()).add(tag)
        updates: list[tuple] = []
        tag_rows: list[tuple[int, str]] = []
        for row, cid in zip(rows, ids, strict=True):
            stored = existing[row[_KEY]]
            current = tuple(getattr(stored, c) for c in _FIELDS)
            merged = [
                old
                if new is None or (n == _STATUS and old != "active" and new == "active")
                else new
                for n, (old, new) in enumerate(zip(current, row[: len(_FIELDS)], strict=True))
            ]
            given = json.loads(row[_ATTRS]) if self.json_text else row[_ATTRS]
            attrs = {**(stored.attrs or {}), **given}
            added = sorted(set(row[_TAGS]) - old_tags.get(cid, set()))
            tag_rows += [(cid, t) for t in added]
            if tuple(merged) != current or attrs != (stored.attrs or {}) or added:
                updates.append((*merged, self._driver_value(contacts.c.attrs, attrs), stamp, cid))
        return updates, tag_rows

    def _driver_value(self, column, value):  # type: ignore[no-untyped-def]
        """``value`` as the driver gets it on the raw path; as it is otherwise."""
        if not self.raw:
            return value
        dialect = self.conn.dialect
        processor = column.type.dialect_impl(dialect).bind_processor(dialect)
        return processor(value) if processor else value

    def _new_ids(self, new_rows: list[tuple]) -> list[int]:
        """Ids of the rows just inserted, in order."""
        if self.conn.dialect.name == "sqlite":
            # Inside this write transaction (BEGIN IMMEDIATE: no other writer) SQLite
            # numbers new rows max(id)+1, +2, ...: the last id gives all of them.
            last = self.conn.exec_driver_sql("SELECT last_insert_rowid()").scalar_one()
            return list(range(last - len(new_rows) + 1, last + 1))
        keys = [row[_KEY] for row in new_rows]
        query = select(contacts.c.email_key, contacts.c.id).where(contacts.c.email_key.in_(keys))
        ids = dict(self.conn.execute(query).all())
        return [ids[k] for k in keys]

    def _executemany(self, stmt, keys: tuple[str, ...], rows: list[tuple]) -> None:  # type: ignore[no-untyped-def]
        """Execute ``stmt`` once per row. Rows are tuples of driver-ready values in the
        order of ``keys``; the statement is compiled once per shape and the tuples go to
        the driver as they are: SQLAlchemy's per-row parameter handling would otherwise
        cost more than the inserts themselves."""
        if not self.raw:
            self.conn.execute(stmt, [dict(zip(keys, r, strict=True)) for r in rows])
            return
        cache_key = (id(stmt), keys)
        if cache_key not in self._compiled:
            compiled = stmt.compile(dialect=self.conn.dialect, column_keys=list(keys))
            order = [keys.index(n) for n in compiled.positiontup]
            self._compiled[cache_key] = (compiled.string, order)
        sql, order = self._compiled[cache_key]
        if order != list(range(len(keys))):
            rows = [tuple(r[i] for i in order) for r in rows]
        self.conn.exec_driver_sql(sql, rows)
