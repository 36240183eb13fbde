"""Outcomes recorded promptly, group-committed: what the server answered is in the
database within about ``EVERY`` seconds of its reply, many outcomes per transaction.

A sender killed at any instant sends again what it had handed over and not yet
recorded: the fewer of those, the fewer duplicates. The writer flushes every
``EVERY`` seconds, or at once when ``MOST`` outcomes are waiting, one transaction per
flush (run in a thread: sending goes on meanwhile); ``room()`` holds back new sends
while ``cap`` outcomes are waiting or being written (a database that stalls stops
the sending instead of piling up unrecorded mail). Messages accepted by the server
and not yet recorded are then at most the cap, plus one window handed after the last
look and the messages on the connections: ``cap_for`` keeps that within ``UNRECORDED``
(100) at full speed; at 50 messages a second, it is what 0.1 to 0.2 s send (5 to 10).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from outreach.ports import Outcome

EVERY = 0.1  # seconds an outcome waits at most before its flush starts
MOST = 40  # outcomes that start a flush at once
CAP = 80  # outcomes waiting or being written that hold back new sends
UNRECORDED = 100  # accepted and unrecorded messages at most, at full speed


def cap_for(connections: int) -> int:
    """The cap for a sender with that many connections (and windows of at most that
    many messages), so that what a crash leaves unrecorded stays within ``UNRECORDED``."""
    return max(MOST, UNRECORDED - 2 * connections)


@dataclass
class Waits:
    """How long outcomes waited between their reply and their commit."""

    count: int = 0
    total: float = 0.0
    longest: float = 0.0

    def add(self, waited: float) -> None:
        self.count += 1
        self.total += waited
        self.longest = max(self.longest, waited)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


class OutcomeWriter:
    """Records outcomes through ``record`` (one transaction a call) in the background."""

    def __init__(self, record: Callable[[Sequence[Outcome]], None], *, every: float = EVERY,
                 most: int = MOST, cap: int = CAP) -> None:  # fmt: skip
        self.record = record
        self.every, self.most, self.cap = every, most, cap
        self.waits = Waits()
        self._pending: list[tuple[float, Outcome]] = []
        self._writing = 0
        self._wake = asyncio.Event()
        self._moved = asyncio.Event()  # a flush ended
        self._now = False  # flush without waiting (``flush``)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> OutcomeWriter:
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        return self

    def add(self, outcome: Outcome) -> None:
        self._pending.append((time.monotonic(), outcome))
        if len(self._pending) == 1 or len(self._pending) >= self.most:
            self._wake.set()

    @property
    def waiting(self) -> int:
        """Outcomes not yet committed (waiting or being written)."""
        return len(self._pending) + self._writing

    async def room(self) -> None:
        """Returns once fewer than ``cap`` outcomes are uncommitted."""
        while self.waiting >= self.cap:
            self._now = True
            self._wake.set()
            await self._flushed()

    async def flush(self) -> None:
        """Returns once every outcome added so far is committed."""
        while self.waiting:
            self._now = True
            self._wake.set()
            await self._flushed()

    async def close(self) -> None:
        try:
            await self.flush()
        finally:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                self._task = None

    async def _flushed(self) -> None:
        self._check()
        self._moved.clear()
        waiter = asyncio.ensure_future(self._moved.wait())
        assert self._task is not None, "start() the writer first"
        await asyncio.wait([waiter, self._task], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        self._check()

    def _check(self) -> None:
        """A failed write (an error the database's patience does not wait out) stops the sender."""
        if self._task is not None and self._task.done() and not self._task.cancelled():
            error = self._task.exception()
            if error is not None:
                raise error

    async def _run(self) -> None:
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            due = self._pending[0][0] + self.every - time.monotonic()
            if due > 0 and len(self._pending) < self.most and not self._now:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), due)
                continue
            batch, self._pending, self._now = self._pending, [], False
            self._writing = len(batch)
            try:
                await asyncio.to_thread(self.record, [o for _at, o in batch])
            finally:
                self._writing = 0
            done = time.monotonic()
            for at, _o in batch:
                self.waits.add(done - at)
            self._moved.set()
