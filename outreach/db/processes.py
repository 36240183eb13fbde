"""The processes table (who runs around this database, with their heartbeats) and the
scheduler's leadership lock: a PostgreSQL advisory lock held on a connection of its
own, or on SQLite (one machine) an flock on a file beside the database. Either ends
with the process that holds it, kill -9 included."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError

from outreach.db.models import deliveries, processes, utcnow
from outreach.db.patience import Patience, patient
from outreach.db.repository import Repository
from outreach.ports.processes import Lead, ProcessInfo

# The advisory lock key of the scheduler's leadership (the migrations use 7_453_001).
# Advisory locks belong to one database: each database has its own leader.
LEADER_KEY = 7_453_002


def _info(row: Any) -> ProcessInfo:
    return ProcessInfo(id=row.id, host=row.host, pid=row.pid, role=row.role, started_at=row.started_at,
                       heartbeat_at=row.heartbeat_at, leader=bool(row.leader), state=dict(row.state or {}))  # fmt: skip


@patient
@dataclass
class SqlProcesses(Repository):
    engine: Engine
    clock: Callable[[], datetime] = utcnow  # wall time, even in a rehearsal
    patience: Patience = field(default_factory=lambda: Patience(limit=10.0))


    def register(self, process: ProcessInfo) -> None:
        """Add (or replace) this process's row, its heartbeat now."""
        with self._write() as conn, conn.begin():
            conn.execute(delete(processes).where(processes.c.id == process.id))
            conn.execute(insert(processes).values(
                id=process.id, host=process.host, pid=process.pid, role=process.role,
                started_at=process.started_at, heartbeat_at=self.clock(), leader=int(process.leader),
                state=process.state,
            ))  # fmt: skip

    def beat(self, process_id: str, *, leader: bool, state: dict[str, Any]) -> bool:
        """Its heartbeat now, whether it leads and what it says of itself, with
        ``sending``: the deliveries leased to it now. False when its row is gone
        (pruned while it could not beat): it registers again."""
        with self._write() as conn, conn.begin():
            holding = conn.execute(select(func.count()).select_from(deliveries).where(
                deliveries.c.status == "sending", deliveries.c.holder == process_id)).scalar_one()  # fmt: skip
            done = conn.execute(update(processes).where(processes.c.id == process_id).values(
                heartbeat_at=self.clock(), leader=int(leader), state={**state, "sending": holding}))  # fmt: skip
        return bool(done.rowcount)

    def remove(self, process_id: str) -> None:
        with self._write() as conn, conn.begin():
            conn.execute(delete(processes).where(processes.c.id == process_id))

    def prune(self, before: datetime) -> int:
        """Rows of processes silent since before ``before`` go; how many."""
        with self._write() as conn, conn.begin():
            return conn.execute(delete(processes).where(processes.c.heartbeat_at < before)).rowcount

    def listed(self) -> list[ProcessInfo]:
        """Every row, leader first, then by host and start."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(processes).order_by(
                processes.c.leader.desc(), processes.c.host, processes.c.started_at, processes.c.pid)).all()  # fmt: skip
        return [_info(r) for r in rows]

    def lead(self) -> Lead | None:
        """The scheduler's leadership if no other process holds it, else None."""
        url = self.engine.url
        if url.get_backend_name() == "postgresql":
            return _pg_lead(self.engine)
        database = url.database
        if not database or database == ":memory:":  # a database of this process alone
            return _Alone()
        return _file_lead(Path(f"{database}.scheduler.lock"))


class _Alone:
    def holds(self) -> bool:
        return True

    def release(self) -> None:
        pass


def _pg_lead(engine: Engine) -> Lead | None:
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        got = conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({LEADER_KEY})").scalar()
    except BaseException:
        conn.close()
        raise
    if not got:
        conn.close()
        return None
    return _PgLead(conn)


class _PgLead:
    """The advisory lock, on its own connection for as long as it is held: when the
    process dies its connection closes and the server lets the lock go."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def holds(self) -> bool:
        try:
            return bool(self.conn.exec_driver_sql(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
                f" AND classid = 0 AND objid = {LEADER_KEY} AND objsubid = 1 AND granted").scalar())  # fmt: skip
        except DBAPIError:  # the connection is gone, and the lock with it
            return False

    def release(self) -> None:
        with contextlib.suppress(DBAPIError):
            self.conn.exec_driver_sql(f"SELECT pg_advisory_unlock({LEADER_KEY})")
        with contextlib.suppress(DBAPIError):
            self.conn.invalidate()  # never back to the pool: whatever it holds goes with it
            self.conn.close()


def _file_lead(path: Path) -> Lead | None:
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return _FileLead(path, fd)


class _FileLead:
    """An flock on ``<database>.scheduler.lock``: the kernel lets it go when the
    process ends, however it ends."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd

    def holds(self) -> bool:
        """Still locked by us, and still the file at that path (a lock file deleted
        and made again would let a second process lock the new one)."""
        if self.fd < 0:
            return False
        try:
            return os.fstat(self.fd).st_ino == os.stat(self.path).st_ino
        except OSError:
            return False

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
