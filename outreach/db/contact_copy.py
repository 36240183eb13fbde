"""Imports into PostgreSQL (psycopg 3): new contacts and their tags go in with COPY;
parts of a block that meet stored addresses are merged by one set-based statement.

Worker processes turn a block's records into COPY data (``prepare_copy``): a line per
contact in the table's own columns (defaults filled in) and a line per tag, each with
a ``%d`` where the contact's id goes. The block is cut where an address comes back (a
later row updates what an earlier one wrote, as if one row after the other): every
part holds each address once. For each part, one query looks its addresses up and,
if none is stored, draws the new contacts' ids from the sequence in file order; this
process writes them into the data (one ``%`` over the whole part) and copies the
contacts, then their tags, into the tables.

A part that meets stored addresses (or holds an erased one) is copied into temporary
tables instead, each row's position (from 1) in the place of its id, and one
statement merges it (``contact_merge``) with the rules of every store: given values
replace stored ones, blanks keep them, attributes merge (stored keys first, in their
order), tags add, and status never returns to active nor leaves ``complained``.

Into an empty store the tags' foreign key and the contacts' secondary indexes are
dropped first and made again in ``finish``, inside the import's transaction (a failed
import rolls them back with everything else): one check of the whole table costs a
fraction of a check (and a row lock) per tag, and one sort less than an insert per
row into an index of few distinct keys, or a trigram index. (The tags' index stays:
kept up row by row, it costs no more than built again.) Both tables are locked for
the import then: readers of the contacts wait for its commit. If another session
holds them for longer than ``_LOCK_WAIT``, the import runs with the checks in place.
Only this import can then have written an address the store holds: a bit per address
(``_Written``) spares the lookup of those it never wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from json.encoder import encode_basestring_ascii as _quote
from operator import itemgetter

from sqlalchemy import Connection, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import AddConstraint, DropConstraint

from outreach.db.contact_merge import (
    COLUMNS,
    FIELDS,
    KIND_GIVEN,
    ROWS,
    STATUS_GIVEN,
    TAGS,
    merge_sql,
)
from outreach.db.models import contact_tags, contacts, utcnow
from outreach.domain.contact import ContactRecord
from outreach.ports import BatchOutcome

_TABS = len(FIELDS) + 2  # in a line between its id and its attrs
_SORT_MEMORY = "256MB"  # at least, for the index built again after an import
_LOCK_WAIT = "2s"  # for the tables of an empty store; then the import keeps the checks
_CSV = "(FORMAT csv, DELIMITER E'\\t')"


@dataclass(frozen=True, slots=True)
class Segment:
    """Rows of a block whose addresses all differ, as COPY data (CSV, tab-separated),
    each line with a ``%d`` for its contact's id (literal ``%`` written ``%%``)."""

    data: bytes  # a line per contact, in COLUMNS
    tags: bytes  # a line per tag: contact_id, tag
    owners: tuple[int, ...]  # each tag's row
    keys: tuple[str, ...]  # the email keys
    flags: bytes  # per row: KIND_GIVEN | STATUS_GIVEN
    start: int  # the first row's place in the block
    count: int


@dataclass(frozen=True, slots=True)
class CopyBlock:
    """A block of records as the PostgreSQL writer takes them, made in an import worker."""

    segments: tuple[Segment, ...]
    count: int

    def __len__(self) -> int:
        return self.count


def json_text(attrs: dict[str, str]) -> str:
    """``json.dumps(attrs)`` for a flat dict of strings, several times faster."""
    if not attrs:
        return "{}"
    if len(attrs) == 1:
        ((key, value),) = attrs.items()
        return f"{{{_quote(key)}: {_quote(value)}}}"
    return "{" + ", ".join([f"{_quote(k)}: {_quote(v)}" for k, v in attrs.items()]) + "}"


def prepare_copy(
    records: Sequence[ContactRecord], *, stamp: str, encoding: str = "utf-8"
) -> CopyBlock:
    """The block for ``ContactCopy.write`` (runs in import workers). ``stamp``: the new
    contacts' created_at; ``encoding``: the connection's."""
    parts = _Parts(stamp, encoding)
    seen: set[str] = set()
    for pos, record in enumerate(records):
        key = record[0].casefold()
        if key in seen:  # an address met again: what came before it goes first
            parts.cut(pos)
            seen = set()
        seen.add(key)
        parts.add(record, key)
    parts.cut(len(records))
    return CopyBlock(tuple(parts.done), len(records))


class _Parts:
    """The segments of a block, as ``prepare_copy`` cuts them."""

    def __init__(self, stamp: str, encoding: str) -> None:
        self.tail = f"\t{stamp}\t{stamp}\n"
        self.encoding = encoding
        self.done: list[Segment] = []
        self.start = 0
        self._clear()

    def _clear(self) -> None:
        self.lines: list[str] = []
        self.tag_lines: list[str] = []
        self.owners: list[int] = []
        self.keys: list[str] = []
        self.flags: list[int] = []

    def add(self, record: ContactRecord, key: str) -> None:
        (email, name, organization, kind, sector, country, language, timezone, x_handle,
         status, tags, attrs) = record  # fmt: skip
        # the common row: no value is empty text (blank cells are None: NULL) and
        # none holds a character that CSV quotes or that % formatting reads
        head = "\t".join((email, key, name or "", organization or "", kind or "other",
                          sector or "", country or "", language or "", timezone or "",
                          x_handle or "", status or "active"))  # fmt: skip
        if ("" in record or head.count("\t") != _TABS
                or '"' in head or "%" in head or "\n" in head or "\r" in head):  # fmt: skip
            head = "\t".join(_field(v) for v in (email, key, name, organization, kind or "other",
                             sector, country, language, timezone, x_handle, status or "active"))  # fmt: skip
        text = json_text(attrs).replace("%", "%%")
        self.lines.append(f'%d\t{head}\t"{text.replace(chr(34), chr(34) * 2)}"{self.tail}'
                          if attrs else f"%d\t{head}\t{{}}{self.tail}")  # fmt: skip
        if tags:  # (a tag is letters, digits and . : / + -, never quoted)
            text = "\t".join(tags)
            if ("" in tags or text.count("\t") != len(tags) - 1
                    or '"' in text or "%" in text or "\n" in text or "\r" in text):  # fmt: skip
                self.tag_lines.append("".join(f"%d\t{_field(t)}\n" for t in tags))
            else:
                self.tag_lines.append("%d\t" + text.replace("\t", "\n%d\t") + "\n")
            self.owners += [len(self.keys)] * len(tags)
        self.keys.append(key)
        self.flags.append((kind is not None) * KIND_GIVEN + (status is not None) * STATUS_GIVEN)

    def cut(self, end: int) -> None:
        if not self.keys:
            return
        self.done.append(Segment(
            "".join(self.lines).encode(self.encoding), "".join(self.tag_lines).encode(self.encoding),
            tuple(self.owners), tuple(self.keys), bytes(self.flags), self.start, len(self.keys),
        ))  # fmt: skip
        self.start = end
        self._clear()


def _field(value: str | None) -> str:
    """A value as a CSV field: None is NULL (nothing), empty text is quoted; and with
    its % doubled (the data goes through % formatting)."""
    if value is None:
        return ""
    value = value.replace("%", "%%")
    if value == "" or any(c in value for c in '"\t\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value


class ContactCopy:
    """Writes ``CopyBlock``s inside the import's transaction (see ``ContactWriter``)."""

    def __init__(self, conn: Connection, stamp: datetime) -> None:
        self.conn = conn
        self.stamp = stamp  # created_at of the import's new contacts
        self.dbapi = conn.connection.dbapi_connection
        self.encoding: str = self.dbapi.info.encoding  # type: ignore[union-attr]
        # A statement takes milliseconds, but its estimated cost (a lookup per row)
        # passes the threshold of JIT compilation, which would take seconds
        conn.exec_driver_sql("SELECT set_config('jit', 'off', true)")
        sequence = conn.exec_driver_sql("SELECT pg_get_serial_sequence('contacts', 'id')").scalar_one()
        seq = "'" + sequence.replace("'", "''") + "'::regclass"
        self._merge = {mode: merge_sql(mode, seq) for mode in ("upsert", "insert-only")}
        names = ", ".join(COLUMNS)
        self._copy_contacts = f"COPY contacts ({names}) FROM STDIN {_CSV}"
        self._copy_tags = f"COPY contact_tags (contact_id, tag) FROM STDIN {_CSV}"
        self._staged = False
        self._foreign_key = next(iter(contact_tags.foreign_key_constraints))
        self._deferred: list[tuple[str, str]] = []  # (name, definition)
        self.checks_deferred = self._defer_checks()
        # A part's ids, drawn from the sequence in file order; while the tables are this
        # import's alone, the last of a range that one call reserves. The ids, if none
        # of the addresses given is stored (a lookup per address in the unique index: a
        # seq scan stopping at the first hit would look cheaper to the planner, and read
        # the whole table when there is none); else NULL.
        ids = (f"setval({seq}, nextval({seq}) + %(n)s - 1)" if self.checks_deferred
               else f"ARRAY(SELECT nextval({seq}) FROM generate_series(1, %(n)s))")  # fmt: skip
        self._ids = f"SELECT {ids}"
        self._new_ids = (
            "SELECT CASE WHEN EXISTS (SELECT FROM unnest(%(keys)s::text[]) k CROSS JOIN LATERAL"
            f" (SELECT FROM contacts c WHERE c.email_key = k LIMIT 1) c) THEN NULL ELSE {ids} END"
        )
        # into an empty store, the addresses this import wrote
        self._written = _Written() if self.checks_deferred else None

    def preparer(self) -> Callable[[Sequence[ContactRecord]], CopyBlock]:
        """``prepare_copy`` for this import, picklable for worker processes."""
        return partial(prepare_copy, stamp=self.stamp.isoformat(), encoding=self.encoding)

    def write(
        self, block: CopyBlock, mode: str, suppressed: Callable[[list[str]], set[int]] | None
    ) -> BatchOutcome:
        """Insert or update as if one row after the other (a later duplicate wins).
        ``suppressed``: the positions of erased addresses among a list of keys."""
        out = BatchOutcome()
        with self.dbapi.cursor() as cursor:  # type: ignore[union-attr]
            for part in block.segments:
                # the addresses that may be stored: all, but into an empty store
                # those this import may have written already
                maybe = self._written.add(part.keys) if self._written else part.keys
                blocked: list[int] = []
                if suppressed is not None:
                    blocked = sorted(suppressed(list(part.keys)))
                    out.suppressed += [part.start + i for i in blocked]
                if len(blocked) == part.count:
                    continue
                if not blocked:
                    if maybe:
                        cursor.execute(self._new_ids, {"keys": _array(maybe), "n": part.count},
                                       prepare=False)  # fmt: skip
                    else:
                        cursor.execute(self._ids, {"n": part.count}, prepare=False)
                    ids = cursor.fetchone()[0]  # type: ignore[index]
                    if ids is not None:  # every address new
                        if isinstance(ids, int):
                            ids = range(ids - part.count + 1, ids + 1)
                        self._copy(cursor, part, ids)
                        out.inserted += part.count
                        continue
                self._merge_part(cursor, part, blocked, mode, out)
        return out

    def _copy(self, cursor, part: Segment, ids: Sequence[int]) -> None:  # type: ignore[no-untyped-def]
        """The part's contacts and tags into their tables, with these ids."""
        with cursor.copy(self._copy_contacts) as copy:
            copy.write(part.data % tuple(ids))
            # (made while the server takes the contacts)
            tags = part.tags % _pick(ids, part.owners) if part.owners else b""
        if tags:
            with cursor.copy(self._copy_tags) as copy:
                copy.write(tags)

    def _merge_part(self, cursor, part: Segment, blocked: list[int], mode: str,  # type: ignore[no-untyped-def]
                    out: BatchOutcome) -> None:  # fmt: skip
        """The part into the temporary tables (each row's position, from 1, for its
        id), merged by one statement."""
        if not self._staged:
            stage = ", ".join(["pos int", *(f"{c} {'timestamptz' if c.endswith('_at') else 'text'}"
                                            for c in COLUMNS[1:])])  # fmt: skip
            cursor.execute(f"CREATE TEMPORARY TABLE {ROWS} ({stage}) ON COMMIT DROP")
            cursor.execute(f"CREATE TEMPORARY TABLE {TAGS} (pos int, tag text) ON COMMIT DROP")
            self._staged = True
        places = range(1, part.count + 1)
        with cursor.copy(f"COPY {ROWS} FROM STDIN {_CSV}") as copy:
            copy.write(part.data % tuple(places))
        if part.owners:
            with cursor.copy(f"COPY {TAGS} FROM STDIN {_CSV}") as copy:
                copy.write(part.tags % _pick(places, part.owners))
        flags = "{" + ",".join(map(str, part.flags)) + "}"
        params = {"blocked": [i + 1 for i in blocked], "flags": flags, "now": utcnow()}
        cursor.execute(self._merge[mode], params, prepare=False)
        inserted, met, updated = cursor.fetchone()  # type: ignore[misc]
        cursor.execute(f"TRUNCATE {ROWS}, {TAGS}")
        out.inserted += inserted
        if mode == "insert-only":
            out.existing += met - inserted
        else:
            out.updated += updated
            out.unchanged += met - inserted - updated

    def finish(self) -> None:
        """Make again what ``_defer_checks`` dropped (before the commit)."""
        if not self.checks_deferred:
            return
        conn = self.conn
        # memory enough for a parallel sort (PostgreSQL gives each worker 32 MB at least)
        memory = conn.exec_driver_sql("SHOW maintenance_work_mem").scalar_one()
        conn.exec_driver_sql(
            "SELECT set_config('maintenance_work_mem', %(m)s, true) WHERE "
            "pg_size_bytes(current_setting('maintenance_work_mem')) < pg_size_bytes(%(m)s)",
            {"m": _SORT_MEMORY},
        )
        for _name, definition in self._deferred:
            self.dbapi.execute(definition)  # type: ignore[union-attr]  # (as written: a % is no parameter)
        conn.exec_driver_sql("SELECT set_config('maintenance_work_mem', %(m)s, true)", {"m": memory})
        # The check of every tag's contact: a merge of the two primary keys, in order,
        # is several times quicker than the hash join the planner picks
        hash_join = conn.exec_driver_sql("SHOW enable_hashjoin").scalar_one()
        conn.exec_driver_sql("SET LOCAL enable_hashjoin = off")
        conn.execute(AddConstraint(self._foreign_key))
        conn.exec_driver_sql("SELECT set_config('enable_hashjoin', %(v)s, true)", {"v": hash_join})
        self.checks_deferred = False

    def _defer_checks(self) -> bool:
        """Into an empty store: drop the tags' foreign key and the secondary indexes,
        once both tables are locked for this transaction. False (nothing dropped, no
        lock kept) if the store holds contacts or the locks are not had within
        ``_LOCK_WAIT``."""
        conn = self.conn
        if conn.execute(select(contacts.c.id).limit(1)).first() is not None:
            return False
        wait = conn.exec_driver_sql("SHOW lock_timeout").scalar_one()
        conn.exec_driver_sql("SAVEPOINT outreach_checks")
        try:
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{_LOCK_WAIT}'")
            conn.exec_driver_sql("LOCK TABLE contacts, contact_tags IN ACCESS EXCLUSIVE MODE")
            if conn.execute(select(contacts.c.id).limit(1)).first() is not None:
                raise LookupError("contacts came in meanwhile")
            conn.execute(DropConstraint(self._foreign_key))
            # the contacts' secondary indexes, whatever their kind (the migrations add
            # some on PostgreSQL alone), made again from their definitions
            self._deferred = conn.exec_driver_sql(
                "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index"
                " WHERE indrelid = 'contacts'::regclass AND NOT indisunique"
            ).all()  # type: ignore[assignment]
            for name, _definition in self._deferred:
                self.dbapi.execute(f"DROP INDEX {name}")  # type: ignore[union-attr]
        except (DBAPIError, LookupError):
            # (the locks taken since the savepoint go with it)
            conn.exec_driver_sql("ROLLBACK TO SAVEPOINT outreach_checks")
            conn.exec_driver_sql("RELEASE SAVEPOINT outreach_checks")
            self._deferred = []
            return False
        conn.exec_driver_sql("RELEASE SAVEPOINT outreach_checks")
        conn.exec_driver_sql("SELECT set_config('lock_timeout', %(wait)s, true)", {"wait": wait})
        return True


class _Written:
    """The addresses an import into an empty store has written, as one bit each of a
    16 MiB map (by the hash of the address): an address whose bit is clear is not
    stored. One whose bit is set may be (or share its bit with one that is: about one
    in 130 of them after a million rows), and is looked up."""

    BITS = 1 << 27

    def __init__(self) -> None:
        self.bits = bytearray(self.BITS >> 3)

    def add(self, keys: Sequence[str]) -> list[str]:
        """Note ``keys``; those of them whose bit was set already."""
        bits, mask, met = self.bits, self.BITS - 1, []
        for key in keys:
            at = hash(key) & mask
            byte, bit = at >> 3, 1 << (at & 7)
            if bits[byte] & bit:
                met.append(key)
            else:
                bits[byte] |= bit
        return met


def _array(keys: Sequence[str]) -> str:
    """``keys`` as a PostgreSQL array literal (text[])."""
    if any('"' in k or "\\" in k for k in keys):  # (an address may quote its local part)
        keys = [k.replace("\\", "\\\\").replace('"', '\\"') for k in keys]
    return '{"' + '","'.join(keys) + '"}'


def _pick(values: Sequence[int], places: tuple[int, ...]) -> tuple[int, ...]:
    """``values`` at ``places``, as a tuple (also for one place)."""
    return itemgetter(*places)(values) if len(places) > 1 else (values[places[0]],)
