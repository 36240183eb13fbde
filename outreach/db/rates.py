"""Rate limits for the whole deployment, kept in the database (``rate_buckets``) so
that every sender process, on any machine, draws on the same allowance
(``ports.Rates``). A process takes a chunk of units per round trip (one short
transaction), never a write per message.

Two kinds of limit, by their span:

- under a minute (``email:second``): a token bucket, one row: ``tokens`` refilled by
  the time elapsed since ``updated_at`` at count/per a second, up to ``Limit.burst``
  (a tenth of ``count``: at most 1.1 x ``count`` in any ``per`` seconds);
- a minute or more (``email:hour``, ``x:15min``, ``x:day``): a sliding window counted
  in 60 slots (rows ``NAME@SLOT``, ``tokens`` = units taken in that slot, a slot being
  per/60 seconds). What was taken in the last 61 slots counts, so nothing taken within
  the last ``per`` seconds is ever forgotten: at most ``count`` in any ``per`` seconds.
  (A token bucket of a whole hour would let through nearly twice its count in the
  hour after a quiet one: its full bucket, then its refill.)

The row named after a window is its lock (its ``tokens`` say nothing): on PostgreSQL
the rows of one take are locked in name order (SELECT ... FOR UPDATE), so two
processes never deadlock; on SQLite the writer holds the database. ``updated_at`` never goes back, so processes
whose clocks differ a little grant no more than the fastest clock allows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, delete, select, update
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from outreach.db.models import rate_buckets, utcnow
from outreach.db.patience import Patience, patient
from outreach.db.repository import Repository
from outreach.ports.outbox import Limit

SLOTS = 60  # a window's slots; what the last SLOTS + 1 slots took counts
SWEEP_ALL_SECONDS = 3600.0  # slots over two days old (of steps long done, say) go this often
WINDOW_FROM = 60.0  # limits over this many seconds or more are counted in windows


def is_window(limit: Limit) -> bool:
    return limit.per >= WINDOW_FROM


@patient
@dataclass
class SqlRates(Repository):
    engine: Engine
    clock: Callable[[], datetime] = utcnow
    patience: Patience = field(default_factory=Patience)  # waits out a stalled database
    _swept: dict[str, int] = field(default_factory=dict)  # window -> the oldest slot kept
    _last_sweep_all: float = 0.0  # when this process last swept every window's old slots


    def take(self, limits: Sequence[Limit], want: int) -> tuple[int, float]:
        """Up to ``want`` units within every one of ``limits`` at once (in one
        transaction): how many were granted, and when fewer than ``want``, the seconds
        until one more may be."""
        if want <= 0 or not limits:
            return max(0, want), 0.0
        now = self.clock()
        t = now.timestamp()
        names = sorted({limit.name for limit in limits})
        query = select(rate_buckets).where(rate_buckets.c.name.in_(names)).order_by(rate_buckets.c.name)
        if self.engine.dialect.name == "postgresql":
            query = query.with_for_update()  # in name order: no deadlock
        with self._write() as conn, conn.begin():
            rows = {r.name: r for r in conn.execute(query)}
            if len(rows) < len(names):  # the first take of a limit: its row, full
                self._create(conn, [limit for limit in limits if limit.name not in rows], now)
                rows = {r.name: r for r in conn.execute(query)}
            states = [_Bucket(limit, rows[limit.name], t) if not is_window(limit)
                      else _Window(limit, conn, t) for limit in limits]  # fmt: skip
            granted = max(0, min(want, *(s.available() for s in states)))
            if granted:
                for state in states:
                    state.take(conn, granted, now)
            wait = 0.0 if granted == want else max(s.wait(granted) for s in states)
            for state in states:
                if isinstance(state, _Window):
                    self._sweep(conn, state)
            if self._last_sweep_all + SWEEP_ALL_SECONDS <= t:  # the slots of limits no one takes any more
                conn.execute(delete(rate_buckets).where(rate_buckets.c.name.contains("@", autoescape=True),
                                                        rate_buckets.c.updated_at < now - timedelta(days=2)))  # fmt: skip
                self._last_sweep_all = t
        return granted, wait

    def _create(self, conn: Connection, limits: Sequence[Limit], now: datetime) -> None:
        """Each limit's row, full, unless it is there (created by whoever comes first)."""
        insert = pg_dialect.insert if conn.dialect.name == "postgresql" else sqlite_dialect.insert
        for limit in sorted(limits, key=lambda x: x.name):
            conn.execute(insert(rate_buckets).values(name=limit.name, tokens=limit.burst, updated_at=now)
                         .on_conflict_do_nothing(index_elements=["name"]))  # fmt: skip

    def _sweep(self, conn: Connection, window: _Window) -> None:
        """Slots too old to count any more go (once per slot, per process)."""
        oldest = window.first
        if self._swept.get(window.limit.name) == oldest:
            return
        conn.execute(delete(rate_buckets).where(rate_buckets.c.name > f"{window.limit.name}@",
                                                rate_buckets.c.name < _slot_name(window.limit.name, oldest)))  # fmt: skip
        self._swept[window.limit.name] = oldest


class _Bucket:
    """A token bucket: ``limit.burst`` units at most, refilled at count/per a second."""

    def __init__(self, limit: Limit, row, t: float) -> None:  # type: ignore[no-untyped-def]
        self.limit = limit
        self.rate = limit.count / limit.per
        last = row.updated_at.timestamp()
        self.tokens = min(limit.burst, row.tokens + max(0.0, t - last) * self.rate)
        self.stamp = max(last, t)  # never back: a clock behind another's adds nothing

    def available(self) -> int:
        return math.floor(self.tokens + 1e-9)

    def take(self, conn: Connection, n: int, _now: datetime) -> None:
        self.tokens -= n
        conn.execute(update(rate_buckets).where(rate_buckets.c.name == self.limit.name)
                     .values(tokens=self.tokens, updated_at=datetime.fromtimestamp(self.stamp, UTC)))  # fmt: skip

    def wait(self, _granted: int) -> float:
        left = self.tokens  # after ``take``, if anything was granted
        return 0.0 if left >= 1 else (1 - left) / self.rate


class _Window:
    """A sliding window in slots: what the last SLOTS + 1 slots took counts."""

    def __init__(self, limit: Limit, conn: Connection, t: float) -> None:
        self.limit = limit
        self.span = limit.per / SLOTS
        self.t = t
        self.slot = int(t // self.span)
        self.first = self.slot - SLOTS
        rows = conn.execute(
            select(rate_buckets.c.name, rate_buckets.c.tokens)
            .where(rate_buckets.c.name >= _slot_name(limit.name, self.first),
                   rate_buckets.c.name <= _slot_name(limit.name, self.slot))
        ).all()  # fmt: skip
        self.used = {int(name.rsplit("@", 1)[1]): tokens for name, tokens in rows}

    def available(self) -> int:
        return math.floor(self.limit.count - sum(self.used.values()) + 1e-9)

    def take(self, conn: Connection, n: int, _now: datetime) -> None:
        insert = pg_dialect.insert if conn.dialect.name == "postgresql" else sqlite_dialect.insert
        row = insert(rate_buckets).values(name=_slot_name(self.limit.name, self.slot), tokens=float(n),
                                          updated_at=datetime.fromtimestamp(self.slot * self.span, UTC))  # fmt: skip
        conn.execute(row.on_conflict_do_update(index_elements=["name"],
                                               set_={"tokens": rate_buckets.c.tokens + row.excluded.tokens}))  # fmt: skip
        self.used[self.slot] = self.used.get(self.slot, 0.0) + n

    def wait(self, _granted: int) -> float:
        """Until slots that drop out leave room for one more."""
        used = sum(self.used.values())
        if self.limit.count - used >= 1:
            return 0.0
        for slot in sorted(self.used):
            used -= self.used[slot]
            if self.limit.count - used >= 1:
                return max(0.0, (slot + SLOTS + 1) * self.span - self.t)
        return self.limit.per


def _slot_name(name: str, slot: int) -> str:
    return f"{name}@{slot:012d}"  # zero-padded: slots sort as their names do
