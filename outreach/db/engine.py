"""Engines and schema upgrades. No module-level engine: callers own the one they make."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from outreach.domain.errors import DatabaseError

MIGRATIONS = Path(__file__).with_name("migrations")
# The newest migration. A database already there needs no Alembic at start-up (which
# costs a tenth of a second per command); a test keeps this equal to Alembic's head.
HEAD = "0004"
# One key for PostgreSQL's advisory lock around migrations (two processes starting at once).
_MIGRATION_LOCK = 7_453_001


def redact_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def make_engine(url: str) -> Engine:
    """An engine for ``url``. SQLite gets WAL, foreign keys and real transactions."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(
            f"database URL {redact_url(url)} is not a SQLAlchemy URL",
            hint="use sqlite:///path/to/file.db or postgresql+psycopg://user@host/db",
        ) from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 30})
        _sqlite_pragmas(engine)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("psycopg2", ""):
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        return create_engine(parsed, pool_pre_ping=True)
    except NoSuchModuleError:
        raise DatabaseError(
            f"no driver for {redact_url(url)}",
            hint="install the PostgreSQL extra: pip install 'outreach[postgres]'",
        ) from None
    except ModuleNotFoundError as exc:
        raise DatabaseError(
            f"the database driver {exc.name!r} is not installed",
            hint="install the PostgreSQL extra: pip install 'outreach[postgres]'",
        ) from None


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        # Let SQLAlchemy's "begin" event (below) own transactions: pysqlite's own
        # handling would otherwise commit around DDL and defer BEGIN.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        # Writers ask for IMMEDIATE so that they wait for the lock (busy_timeout)
        # instead of failing when a read turns into a write.
        mode = "BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN"
        conn.exec_driver_sql(mode)


def _alembic_config(connection):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _heads() -> set[str]:
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(None)
    return set(ScriptDirectory.from_config(cfg).get_heads())


def current_revisions(engine: Engine) -> set[str]:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


def upgrade(engine: Engine) -> tuple[set[str], set[str]]:
    """Bring the schema to the newest revision; returns (before, after)."""
    try:
        with engine.connect().execution_options(write=True) as conn:
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:  # a table rebuild must not cascade: foreign keys off (outside a transaction)
                conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")
            try:
                before, after = _upgrade(conn)
            finally:
                if sqlite:
                    conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")
    except OperationalError as exc:
        raise DatabaseError(
            f"cannot open the database {redact_url(str(engine.url))}: {exc.orig}",
            hint="check OUTREACH_DATABASE_URL or database_url in outreach.toml",
        ) from None
    return before, after


def _upgrade(conn):  # type: ignore[no-untyped-def]
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    with conn.begin():
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
        before = set(MigrationContext.configure(conn).get_current_heads())
        if before != _heads():
            command.upgrade(_alembic_config(conn), "head")
            if conn.dialect.name == "sqlite":
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise DatabaseError(f"the upgrade left {len(broken)} broken reference(s)")
        after = set(MigrationContext.configure(conn).get_current_heads())
    return before, after


def open_database(url: str) -> Engine:
    """An engine whose schema is current (created or upgraded on first use)."""
    engine = make_engine(url)
    if not _is_current(engine):
        upgrade(engine)
    return engine


def _is_current(engine: Engine) -> bool:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    try:
        with engine.connect() as conn:
            versions = {
                row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))
            }
    except DBAPIError:
        return False  # no schema yet, or the database cannot be reached: upgrade() says which
    return versions == {HEAD}
