"""Bulk writes for imports: upsert batches of contacts inside one transaction.

The hot path of a million-row import. Blocks are prepared (``prepare``) in the
import's worker processes, their values already in the INSERT's column order and
cut into one statement's rows, so on SQLite this process hands new rows to the
driver as they come, and looks addresses up (and merges) only once a block turns out
to meet stored ones. On PostgreSQL through psycopg, blocks are COPY data merged by
one statement each (``contact_copy``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from sqlalchemy import (
    Connection,
    Index,
    Integer,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    update,
)

from outreach.db.bulk import Bulk, rows_per_statement
from outreach.db.contact_copy import ContactCopy, CopyBlock, json_text
from outreach.db.models import contact_tags, contacts, suppressions, utcnow
from outreach.domain.contact import ContactRecord
from outreach.domain.suppression import suppression_hashes
from outreach.ports import BatchOutcome

# A prepared row: the INSERT's values but the two timestamps (one per import, written
# into the statement). kind and status may be None ("not given"): the INSERT fills in
# their defaults, an update keeps what is stored.
_COLUMNS = ("email", "email_key", "name", "organization", "kind", "sector", "country",
            "language", "timezone", "x_handle", "status", "attrs")  # fmt: skip
_FIELDS = _COLUMNS[:-1]  # what an update compares and merges (email_key never changes)
_ATTRS = len(_COLUMNS) - 1
_KEY = 1
_STATUS = _COLUMNS.index("status")
_RECORD_TAGS = ContactRecord._fields.index("tags")
_WIDTH = len(_COLUMNS)
_ROWS_PER_CHUNK = rows_per_statement(_WIDTH)
_TAGS_PER_CHUNK = rows_per_statement(2)
_HASHES_PER_QUERY = 5000  # far below any database's limit on parameters


@dataclass(frozen=True, slots=True)
class Prepared:
    """A block of records as the writer takes them, made in an import worker.

    The rows' INSERT values (in _COLUMNS order) are kept flat, cut into tuples of as
    many rows as one INSERT statement takes: the writer hands each full tuple to
    SQLite as it is. The tags are kept the same way as pairs (rows after its
    contact's row, tag): once the block is inserted as new rows, a contact's id is
    the last inserted id minus that number, so SQLite computes every tag's contact
    id itself.
    """

    values: list[tuple]  # _ROWS_PER_CHUNK rows each, the last may have fewer
    tags: list[tuple]  # _TAGS_PER_CHUNK pairs each, the last may have fewer
    count: int
    distinct: bool  # no address appears twice in the block

    def __len__(self) -> int:
        return self.count

    def rows(self) -> list[tuple]:
        """The rows, a tuple each."""
        return [chunk[i : i + _WIDTH] for chunk in self.values for i in range(0, len(chunk), _WIDTH)]

    def row_tags(self) -> list[list[str]]:
        """The tags of each row."""
        out: list[list[str]] = [[] for _ in range(self.count)]
        last = self.count - 1
        for chunk in self.tags:
            for i in range(0, len(chunk), 2):
                out[last - chunk[i]].append(chunk[i + 1])
        return out


def _chunks(flat: list, size: int) -> list[tuple]:
    return [tuple(flat[i : i + size]) for i in range(0, len(flat), size)]


def prepare(records: Sequence[ContactRecord], *, json_text: bool) -> Prepared:
    """The block for ``ContactWriter.write_prepared`` (runs in import workers).

    ``json_text``: store attributes as JSON text (SQLite); else as a dict for the
    driver to adapt (other databases).
    """
    text = _json_text if json_text else _same
    flat: list = []
    add_row = flat.extend
    for (email, name, organization, kind, sector, country, language, timezone, x_handle,
         status, _tags, attrs) in records:  # fmt: skip
        add_row((email, email.casefold(), name, organization, kind, sector, country, language,
                 timezone, x_handle, status, text(attrs)))  # fmt: skip
    tags: list = []
    after = len(records)
    for record in records:
        after -= 1
        for tag in record[_RECORD_TAGS]:
            tags += (after, tag)
    distinct = len(set(flat[_KEY::_WIDTH])) == len(records)
    return Prepared(
        _chunks(flat, _ROWS_PER_CHUNK * _WIDTH), _chunks(tags, _TAGS_PER_CHUNK * 2),
        len(records), distinct,
    )  # fmt: skip


_json_text = json_text


def _same(value: object) -> object:
    return value


class ContactWriter:
    """Writes blocks of records inside one transaction (see ``SqlContactStore.writer``).

    On SQLite, an import into an empty store drops the secondary indexes first and
    builds them again in ``finish``, inside the same transaction: sorting a million
    entries once is much cheaper than a million inserts into growing trees, and a
    failed import rolls the indexes back with everything else.
    """

    def __init__(
        self, conn: Connection, *, key: bytes | Callable[[], bytes | None] | None = None
    ) -> None:
        self.conn = conn
        self.key = key  # of the suppression hashes, or what gives it (see SqlContactStore)
        self.bulk = Bulk(conn)
        self.raw = self.bulk.sqlite  # driver-ready tuples straight to the driver
        self.json_text = self.raw
        self._any_suppressed = (
            conn.execute(select(suppressions.c.email_hash).limit(1)).first() is not None
        )
        # SQLite: insert blocks as new at first, and look addresses up only once one
        # turns out to be stored (see _insert_all)
        self.optimistic = self.raw
        self.stamp = utcnow()
        # PostgreSQL through psycopg: COPY into a staging table, one merge per block
        self.copy = ContactCopy(conn, self.stamp) if self.bulk.can_copy else None
        self._deferred: list[Index] = []
        if self.raw and conn.execute(select(contacts.c.id).limit(1)).first() is None:
            # (a unique index stays: it is what finds an address met twice)
            self._deferred = [i for i in (*contacts.indexes, *contact_tags.indexes) if not i.unique]
            for index in self._deferred:
                index.drop(conn)
        elif self.raw:
            # Into a store with its indexes, 32 MiB of page cache keeps the hot index
            # pages. Not without them: SQLite sorts an index in runs of its cache's
            # size, and runs that fit the CPU's caches build faster.
            conn.exec_driver_sql("PRAGMA cache_size=-32768")
        stamps = {
            "created_at": bindparam("created_at"),
            "updated_at": bindparam("updated_at"),
        }
        if self.raw:  # the import's one time, written into the statement once
            text = self.bulk.driver_value(contacts.c.created_at, self.stamp)
            stamps = dict.fromkeys(stamps, literal_column(f"'{text}'"))
        self._insert = insert(contacts).values(
            {c: bindparam(c) for c in _COLUMNS}
            | stamps
            | {
                "kind": func.coalesce(bindparam("kind"), literal_column("'other'")),
                "status": func.coalesce(bindparam("status"), literal_column("'active'")),
            }
        )
        self._tag_insert = insert(contact_tags)
        # contact_tags is a WITHOUT ROWID table: its inserts leave last_insert_rowid()
        # at the block's last contact
        self._block_tag_insert = insert(contact_tags).values(
            contact_id=literal_column("last_insert_rowid()") - bindparam("after", type_=Integer),
            tag=bindparam("tag"),
        ).inline()  # no RETURNING of the computed key
        self._update = (
            update(contacts)
            .where(contacts.c.id == bindparam("_id"))
            .values({c: bindparam(c) for c in (*_FIELDS, "attrs", "updated_at")})
        )

    def finish(self) -> None:
        """Build the indexes dropped for this import (before the commit)."""
        if self.copy:
            self.copy.finish()
        if not self._deferred:
            return
        # the import's validation workers are done: SQLite's sorter may use the cores
        helpers = min((os.cpu_count() or 1) - 1, 4)
        self.conn.exec_driver_sql(f"PRAGMA threads={helpers}")
        try:
            for index in self._deferred:
                index.create(self.conn)
        finally:
            self.conn.exec_driver_sql("PRAGMA threads=0")
        self._deferred = []

    def preparer(self) -> Callable[[Sequence[ContactRecord]], Prepared | CopyBlock]:
        """``prepare`` for this database, picklable for worker processes."""
        if self.copy:
            return self.copy.preparer()
        return partial(prepare, json_text=self.json_text)

    def write(self, records: Sequence[ContactRecord], *, mode: str = "upsert") -> BatchOutcome:
        return self.write_prepared(self.preparer()(records), mode=mode)

    def write_prepared(self, block: Prepared | CopyBlock, *, mode: str = "upsert") -> BatchOutcome:
        """Insert or update as if one row after the other (a later duplicate wins)."""
        if not block.count:
            return BatchOutcome()
        if isinstance(block, CopyBlock):
            assert self.copy is not None, "a block prepared for PostgreSQL's COPY"
            return self.copy.write(block, mode, self._suppressed if self._any_suppressed else None)
        if self.optimistic and block.distinct and not self._any_suppressed:
            if self._insert_all(block):
                return BatchOutcome(inserted=block.count)
            self.optimistic = False  # this import meets stored addresses: look them up first
        return self._write_rows(block.rows(), block.row_tags(), mode)

    def _write_rows(self, rows: list[tuple], tags: list[list[str]], mode: str) -> BatchOutcome:
        seen: set[str] = set()
        for i, row in enumerate(rows):
            key = row[_KEY]
            if key in seen:  # a repeated address: write what came before it first
                outcome = self._write(rows[:i], tags[:i], mode)
                outcome.add(self._write_rows(rows[i:], tags[i:], mode), i)
                return outcome
            seen.add(key)
        return self._write(rows, tags, mode)

    def _write(self, rows: list[tuple], row_tags: list[list[str]], mode: str) -> BatchOutcome:
        out = BatchOutcome()
        if not rows:
            return out
        keys = [row[_KEY] for row in rows]
        blocked = self._suppressed(keys)
        existing = {
            r.email_key: r
            for r in self.conn.execute(
                select(contacts.c.id, *(contacts.c[c] for c in _FIELDS), contacts.c.attrs).where(
                    self.bulk.among(contacts.c.email_key, keys)
                )
            )
        }
        stamp = self.bulk.driver_value(contacts.c.updated_at, utcnow())
        new_rows: list[tuple] = []
        new_tags: list[list[str]] = []
        changed: list[tuple[tuple, list[str]]] = []
        for i, (row, tags) in enumerate(zip(rows, row_tags, strict=True)):
            if i in blocked:
                out.suppressed.append(i)
            elif row[_KEY] not in existing:
                new_rows.append(row)
                new_tags.append(tags)
            elif mode == "insert-only":
                out.existing += 1
            else:
                changed.append((row, tags))

        tag_rows: list[tuple[int, str]] = []
        if new_rows:
            self._insert_rows(new_rows)
            out.inserted += len(new_rows)
            if any(new_tags):
                for contact_id, tags in zip(self._new_ids(new_rows), new_tags, strict=True):
                    tag_rows += [(contact_id, t) for t in tags]
        if changed:
            updates, added = self._merge(changed, existing, stamp)
            out.updated += len(updates)
            out.unchanged += len(changed) - len(updates)
            if updates:
                self.bulk.executemany(self._update, (*_FIELDS, "attrs", "updated_at", "_id"), updates)
            tag_rows += added
        if tag_rows:
            self.bulk.executemany(self._tag_insert, ("contact_id", "tag"), tag_rows)
        return out

    def _insert_rows(self, rows: list[tuple]) -> None:
        """Insert new rows (``_new_ids`` finds their ids)."""
        if self.raw:
            self.bulk.executemany(self._insert, _COLUMNS, rows)
            return
        stamp = self.stamp
        self.bulk.executemany(self._insert, (*_COLUMNS, "created_at", "updated_at"),
                              [(*row, stamp, stamp) for row in rows])  # fmt: skip

    def _suppressed(self, keys: list[str]) -> set[int]:
        """Positions of the addresses on the suppression list, in either form."""
        if not self._any_suppressed:
            return set()
        if callable(self.key):
            self.key = self.key()
        key = self.key
        hashes = {h: i for i, k in enumerate(keys) for h in suppression_hashes(k, key)}
        wanted = list(hashes)
        found: set[int] = set()
        for start in range(0, len(wanted), _HASHES_PER_QUERY):
            query = select(suppressions.c.email_hash).where(
                self.bulk.among(suppressions.c.email_hash, wanted[start : start + _HASHES_PER_QUERY])
            )
            found.update(hashes[h] for h in self.conn.execute(query).scalars())
        return found

    def _insert_all(self, block: Prepared) -> bool:
        """Insert every row as new without looking any up first (a new list, the common
        case, then costs one index probe less per row); False, with nothing written, if
        one of them is stored already. SQLite only (see ``optimistic``)."""
        import sqlite3

        from sqlalchemy.exc import IntegrityError

        self.conn.exec_driver_sql("SAVEPOINT outreach_block")
        try:
            self.bulk.execute_chunks(self._insert, _COLUMNS, block.values)
        except (IntegrityError, sqlite3.IntegrityError):
            self.conn.exec_driver_sql("ROLLBACK TO outreach_block")
            self.conn.exec_driver_sql("RELEASE outreach_block")
            return False
        self.conn.exec_driver_sql("RELEASE outreach_block")
        if block.tags:
            self.bulk.execute_chunks(self._block_tag_insert, ("after", "tag"), block.tags)
        return True

    def _merge(self, changed: list[tuple[tuple, list[str]]], existing: dict, stamp) -> tuple[list[tuple], list]:  # type: ignore[no-untyped-def]
        """Updates for rows whose address is stored: given values replace stored ones,
        blanks keep them, attributes merge, tags add, and status never returns to
        active (an import re-subscribes nobody) nor leaves ``complained``."""
        ids = [existing[row[_KEY]].id for row, _ in changed]
        old_tags: dict[int, set[str]] = {}
        if any(tags for _, tags in changed):
            query = select(contact_tags.c.contact_id, contact_tags.c.tag).where(
                self.bulk.among(contact_tags.c.contact_id, ids)
            )
            for cid, tag in self.conn.execute(query):
                old_tags.setdefault(cid, set()).add(tag)
        updates: list[tuple] = []
        tag_rows: list[tuple[int, str]] = []
        for (row, tags), cid in zip(changed, ids, strict=True):
            stored = existing[row[_KEY]]
            current = tuple(getattr(stored, c) for c in _FIELDS)
            merged = [
                old
                if new is None or (n == _STATUS and (old == "complained" or (old != "active" and new == "active")))
                else new
                for n, (old, new) in enumerate(zip(current, row[: len(_FIELDS)], strict=True))
            ]
            given = json.loads(row[_ATTRS]) if self.json_text else row[_ATTRS]
            attrs = {**(stored.attrs or {}), **given}
            added = sorted(set(tags) - old_tags.get(cid, set()))
            tag_rows += [(cid, t) for t in added]
            if tuple(merged) != current or attrs != (stored.attrs or {}) or added:
                updates.append((*merged, self.bulk.driver_value(contacts.c.attrs, attrs), stamp, cid))
        return updates, tag_rows

    def _new_ids(self, new_rows: list[tuple]) -> list[int]:
        """Ids of the rows just inserted, in order."""
        if self.conn.dialect.name == "sqlite":
            # Inside this write transaction (BEGIN IMMEDIATE: no other writer) SQLite
            # numbers new rows max(id)+1, +2, ...: the last id gives all of them.
            last = self.conn.exec_driver_sql("SELECT last_insert_rowid()").scalar_one()
            return list(range(last - len(new_rows) + 1, last + 1))
        keys = [row[_KEY] for row in new_rows]
        query = select(contacts.c.email_key, contacts.c.id).where(self.bulk.among(contacts.c.email_key, keys))
        ids = dict(self.conn.execute(query).all())
        return [ids[k] for k in keys]
