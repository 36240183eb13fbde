"""Engines and schema upgrades. No module-level engine: callers own the one they make.

A database URL's password may hold any character (``outreach.domain.urls``: the
credentials end at the URL's last ``@``); it is never shown. A SQLite database holds
personal data: its file is created readable by its owner only (0600, its -wal and
-shm get the same mode), and so are the folders made for it (0700).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from outreach.domain.errors import DatabaseError
from outreach.domain.urls import mask_url, split_url

MIGRATIONS = Path(__file__).with_name("migrations")
# The newest migration. A database already there needs no Alembic at start-up (which
# costs a tenth of a second per command); a test keeps this equal to Alembic's head.
HEAD = "0009"
# One key for PostgreSQL's advisory lock around migrations (two processes starting at once).
_MIGRATION_LOCK = 7_453_001


def redact_url(url: str) -> str:
    """``url`` with its password masked, whatever characters it holds."""
    return mask_url(url)


def parse_url(url: str) -> URL:
    """``url`` as SQLAlchemy's URL, the credentials taken up to the last ``@`` (SQLAlchemy
    alone ends the password at the first, and takes the rest for the host)."""
    parts = split_url(url)
    try:
        parsed = make_url(parts.without_credentials())
    except (ArgumentError, ValueError):
        raise DatabaseError(
            f"database URL {redact_url(url)} is not a SQLAlchemy URL",
            hint="use sqlite:///path/to/file.db or postgresql+psycopg://user@host/db",
        ) from None
    if parts.userinfo is not None:
        parsed = parsed.set(username=parts.username, password=parts.password)
    return parsed


def _private_file(path: Path) -> None:
    """Create the database file readable by its owner only, and each missing folder
    on its way accessible by its owner only (whatever the umask); an existing file or
    folder keeps its mode."""
    missing = []
    folder = path.parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(folder, 0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _same_mode_beside(path: str) -> None:
    """Give the -wal and -shm files the database file's mode."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return
    for side in (f"{path}-wal", f"{path}-shm"):
        try:
            if stat.S_IMODE(os.stat(side).st_mode) != mode:
                os.chmod(side, mode)
        except OSError:
            continue  # not there (yet), or another user's


def make_engine(url: str) -> Engine:
    """An engine for ``url``. SQLite gets WAL, foreign keys and real transactions."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = None
        if parsed.database and parsed.database != ":memory:" and "uri" not in parsed.query:
            path = parsed.database
            _private_file(Path(path))
        engine = create_engine(parsed, connect_args={"timeout": 30})
        _sqlite_pragmas(engine, path)
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


def _sqlite_pragmas(engine: Engine, path: str | None) -> None:
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
        if path is not None:
            _same_mode_beside(path)

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
        said = str(exc.orig)
        if engine.url.password:
            said = said.replace(engine.url.password, "***")
        raise DatabaseError(
            f"cannot open the database {redact_url(str(engine.url))}: {said}",
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
