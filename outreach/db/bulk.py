"""Bulk statements on one connection, as fast as each database allows them.

SQLite: a statement is compiled once per shape and rows go to the driver as the
tuples they are (SQLAlchemy's per-row parameter handling would cost more than the
inserts themselves), many rows per INSERT. Other databases: SQLAlchemy's own
executemany (``can_copy`` says whether COPY can be had: PostgreSQL through psycopg,
which the contact import uses, ``db.contact_copy``).
"""

from __future__ import annotations

from itertools import chain

from sqlalchemy import ARRAY, Connection, Insert, any_, bindparam

# Parameters in one statement: SQLite's limit before version 3.32. Measured: 83 rows
# of 12 values per INSERT beat both one row and 200 or 500 rows per statement.
MAX_PARAMETERS = 999


def rows_per_statement(width: int) -> int:
    """How many rows of ``width`` values one INSERT statement takes on SQLite."""
    return max(MAX_PARAMETERS // width, 1)


class Bulk:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.sqlite = conn.dialect.name == "sqlite"
        self.postgresql = conn.dialect.name == "postgresql"
        self.can_copy = self.postgresql and conn.dialect.driver == "psycopg"
        self._compiled: dict[tuple, tuple[str, list[int], int, str]] = {}

    def among(self, column, values: list):  # type: ignore[no-untyped-def]
        """``column IN values``; on PostgreSQL ``= ANY(array)``, one parameter rather
        than thousands."""
        if self.postgresql:
            return column == any_(bindparam("values", values, type_=ARRAY(column.type)))
        return column.in_(values)

    def driver_value(self, column, value):  # type: ignore[no-untyped-def]
        """``value`` as the SQLite driver gets it from ``column``'s type; as it is
        elsewhere (SQLAlchemy converts it there)."""
        if not self.sqlite:
            return value
        dialect = self.conn.dialect
        processor = column.type.dialect_impl(dialect).bind_processor(dialect)
        return processor(value) if processor else value

    def executemany(self, stmt, keys: tuple[str, ...], rows: list[tuple]) -> None:  # type: ignore[no-untyped-def]
        """Execute ``stmt`` for each row: tuples of driver-ready values in the order
        of ``keys``. On SQLite an INSERT takes many rows per statement (the driver's
        fixed cost per statement is most of a short row's cost)."""
        if not self.sqlite:
            self.conn.execute(stmt, [dict(zip(keys, r, strict=True)) for r in rows])
            return
        sql, order, many, many_sql = self._statement(stmt, keys)
        if order != list(range(len(keys))):
            rows = [tuple(r[i] for i in order) for r in rows]
        done = 0
        if many > 1 and len(rows) >= many:
            cursor = self.conn.connection.dbapi_connection.cursor()
            done = len(rows) - len(rows) % many
            for start in range(0, done, many):
                cursor.execute(many_sql, tuple(chain.from_iterable(rows[start : start + many])))
            cursor.close()
        if done < len(rows):
            self.conn.exec_driver_sql(sql, rows[done:])

    def execute_chunks(self, stmt, keys: tuple[str, ...], chunks: list[tuple]) -> None:  # type: ignore[no-untyped-def]
        """Execute an INSERT on SQLite for rows given flat in ``keys`` order, cut into
        tuples of ``rows_per_statement`` rows (the last may hold fewer): each full one
        goes to the driver as it is."""
        _, order, many, many_sql = self._statement(stmt, keys)
        width = len(keys)
        full = many * width if order == list(range(width)) else -1
        cursor = self.conn.connection.dbapi_connection.cursor()
        try:
            for chunk in chunks:
                if len(chunk) == full:
                    cursor.execute(many_sql, chunk)
                else:
                    rows = [chunk[i : i + width] for i in range(0, len(chunk), width)]
                    self.executemany(stmt, keys, rows)
        finally:
            cursor.close()

    def _statement(self, stmt, keys: tuple[str, ...]) -> tuple[str, list[int], int, str]:  # type: ignore[no-untyped-def]
        """``stmt`` compiled for rows of ``keys``: its SQL, the order the SQL wants the
        keys in, and for an INSERT on SQLite how many rows one statement takes and the
        SQL that takes them (``VALUES (...), (...), ...``)."""
        cache_key = (id(stmt), keys)
        if cache_key not in self._compiled:
            compiled = stmt.compile(dialect=self.conn.dialect, column_keys=list(keys))
            order = [keys.index(n) for n in compiled.positiontup]
            sql = compiled.string
            many, many_sql = 1, sql
            if isinstance(stmt, Insert) and self.sqlite:
                many = rows_per_statement(len(keys))
                head, _, group = sql.partition(" VALUES ")
                many_sql = f"{head} VALUES {', '.join([group] * many)}"
            self._compiled[cache_key] = (sql, order, many, many_sql)
        return self._compiled[cache_key]
