"""Processes around one database: each registers in the processes table and beats
from a thread (``Presence``); exactly one scheduler is active (``Leadership``: an
advisory lock on PostgreSQL, a lock file beside a SQLite database); the others stand
by and one takes over when the leader dies. The leader runs APScheduler on the shared
job store and settles steps; a firing that runs twice changes nothing the second time
(``firing.fire`` acts on a step still scheduled or held, and materialising is once per
step and contact)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from outreach.domain.errors import ConfigError, OutreachError
from outreach.identity import LEASE_SECONDS, process_id
from outreach.ports import Lead, Processes, ProcessInfo

if TYPE_CHECKING:  # the runner passes its services in; leadership sits below app
    from apscheduler.schedulers.background import BackgroundScheduler

    from outreach.app import Services


class Role(StrEnum):
    SCHEDULER = "scheduler"  # fires jobs and settles steps (when it leads)
    SENDER = "sender"  # sends email and posts
    ALL = "all"  # both

    @property
    def schedules(self) -> bool:
        return self in (Role.SCHEDULER, Role.ALL)

    @property
    def sends(self) -> bool:
        return self in (Role.SENDER, Role.ALL)


# environment variable -> Timing field
TIMING_ENV = {
    "OUTREACH_HEARTBEAT_SECONDS": "heartbeat",
    "OUTREACH_STANDBY_SECONDS": "standby",
    "OUTREACH_GONE_SECONDS": "gone",
    "OUTREACH_LEASE_SECONDS": "lease",
}


@dataclass(frozen=True)
class Timing:
    heartbeat: float = 5.0  # seconds between two heartbeats of a process
    standby: float = 2.0  # a standby asks for the leadership this often; the leader checks it holds it
    gone: float = 60.0  # a process silent this long is gone: shown so, and its row pruned
    settle: float = 5.0  # the leader promotes waiting steps and finishes done ones this often
    lease: float = LEASE_SECONDS  # a claim lasts this long unless its sender renews it

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Timing:
        values: dict[str, float] = {}
        for name, attribute in TIMING_ENV.items():
            raw = env.get(name)
            if not raw:
                continue
            try:
                values[attribute] = float(raw)
            except ValueError:
                values[attribute] = -1.0
            if not 0 < values[attribute] < 86_400:
                raise ConfigError(f"{name} is {raw!r}, not a number of seconds above 0")
        timing = cls(**values)
        if timing.gone < 3 * timing.heartbeat:
            raise ConfigError(f"OUTREACH_GONE_SECONDS ({timing.gone:g}) is less than three heartbeats "
                              f"({3 * timing.heartbeat:g} s): a live process would be pruned")  # fmt: skip
        if timing.lease < 1:
            raise ConfigError(f"OUTREACH_LEASE_SECONDS ({timing.lease:g}) is under a second: a sender "
                              "could not renew its claims in time")  # fmt: skip
        return timing


def _nothing(_message: str) -> None:
    pass


def now() -> datetime:
    return datetime.now(UTC)


class Presence:
    """This process in the processes table: registered when made, its heartbeat (and
    what it says of itself) written every ``timing.heartbeat`` seconds from a thread,
    its row removed on a clean stop. Each beat also prunes the rows of processes
    silent for ``timing.gone`` seconds."""

    def __init__(self, processes: Processes, role: str, timing: Timing, *,
                 state: Callable[[], dict[str, Any]] | None = None, facts: dict[str, Any] | None = None,
                 warn: Callable[[str], None] = _nothing) -> None:  # fmt: skip
        self.id = process_id()
        self.processes, self.role, self.timing, self.warn = processes, role, timing, warn
        self.leader = False
        self.started_at = now()
        self.state = state or dict
        self.facts = {"every": timing.heartbeat, **(facts or {})}  # fixed: its interval, once, worker_of
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self._lock = threading.Lock()  # one beat at a time (the thread's and a leader's own)
        try:
            processes.register(self._info())
        except OutreachError as exc:  # a stalled database: the first beat that gets through registers it
            self._failing = True
            warn(f"cannot register this process yet ({exc.message}); trying again every {timing.heartbeat:g} s")

    def _said(self) -> dict[str, Any]:
        return {**self.state(), **self.facts}

    def _info(self) -> ProcessInfo:
        return ProcessInfo(id=self.id, host=socket.gethostname(), pid=os.getpid(), role=self.role,
                           started_at=self.started_at, heartbeat_at=now(), leader=self.leader,
                           state=self._said())  # fmt: skip

    def start(self) -> None:
        """The heartbeat thread (started after any fork: a fork copies no thread)."""
        self._thread = threading.Thread(target=self._beating, name="heartbeat", daemon=True)
        self._thread.start()

    def _beating(self) -> None:
        while not self._stop.wait(self.timing.heartbeat):
            self.beat()

    def beat(self) -> None:
        """One heartbeat now; a database that does not answer is a warning, once."""
        with self._lock:
            try:
                if not self.processes.beat(self.id, leader=self.leader, state=self._said()):
                    self.processes.register(self._info())  # pruned while it could not beat
                self.processes.prune(now() - timedelta(seconds=self.timing.gone))
            except Exception as exc:
                if not self._failing:
                    self.warn(f"cannot write this process's heartbeat ({type(exc).__name__}: {exc}); "
                              f"trying again every {self.timing.heartbeat:g} s")  # fmt: skip
                self._failing = True
                return
            if self._failing:
                self.warn("heartbeat written again")
                self._failing = False

    def stop(self) -> None:
        """Stop beating and remove this process's row (a clean stop)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            self.processes.remove(self.id)
        except Exception as exc:  # it will show as gone, then be pruned
            self.warn(f"cannot remove this process from the processes table: {exc}")


def live_senders(processes: Processes, at: datetime | None = None) -> list[ProcessInfo]:
    """Long-running senders (``run``, role sender or all) that beat lately."""
    at = at or now()
    return [p for p in processes.listed()
            if p.role in (Role.SENDER, Role.ALL) and not p.state.get("once") and p.live(at)]  # fmt: skip


def live_leader(processes: Processes, but: str | None = None, at: datetime | None = None) -> ProcessInfo | None:
    """The process that leads now, as the table says (it beat lately), other than ``but``."""
    at = at or now()
    return next((p for p in processes.listed() if p.leader and p.id != but and p.live(at)), None)


class Leadership:
    """The scheduler's leadership for this process: taken when free, and while held,
    APScheduler runs here on the shared job store and steps are settled."""

    def __init__(self, services: Services, presence: Presence, timing: Timing,
                 say: Callable[[str], None] = _nothing, warn: Callable[[str], None] = _nothing) -> None:  # fmt: skip
        self.services, self.presence, self.timing, self.say, self.warn = services, presence, timing, say, warn
        self.lead: Lead | None = None
        self.scheduler: BackgroundScheduler | None = None

    @property
    def leading(self) -> bool:
        return self.lead is not None

    def take(self) -> bool:
        """The leadership now if it is free."""
        lead = self.services.processes.lead()
        if lead is None:
            return False
        self.lead = lead
        self.presence.leader = True
        self.presence.beat()  # the table says so at once
        return True

    def take_for_a_round(self) -> None:
        """For a run until idle: the leadership now, or an error when another scheduler
        leads. A lock whose holder beats no more (a process just killed, its database
        session not yet ended) is waited for, up to ten seconds or three heartbeats."""
        deadline = time.monotonic() + max(10.0, 3 * self.timing.heartbeat)
        while not self.take():
            other = live_leader(self.services.processes, but=self.presence.id)
            if other is not None:
                raise OutreachError(
                    f"another scheduler leads for this database: {other.host}, pid {other.pid}, "
                    f"since {other.started_at:%Y-%m-%d %H:%M:%S} UTC; its jobs fire there",
                    code="scheduler_running", host=other.host, pid=other.pid,
                )  # fmt: skip
            if time.monotonic() > deadline:
                raise OutreachError("the scheduler's lock is held by a process that is not in the "
                                    "processes table (or beats no more)", code="scheduler_lock_held")  # fmt: skip
            time.sleep(0.25)

    def serve(self, stop: threading.Event) -> None:
        """Until ``stop``: stand by while another process leads (asking again every
        ``timing.standby`` seconds), lead when the leadership is free, and stand by
        again if it is lost (the database connection that held it went)."""
        standing_by = False
        before = ""  # the leader seen while standing by
        settled = 0.0
        try:
            while not stop.is_set():
                if self.lead is None:
                    try:
                        taken = self.take()
                    except OutreachError as exc:  # the database does not answer: ask again later
                        self.warn(f"scheduler: cannot ask for the leadership ({exc.message})")
                        taken = False
                    if not taken:
                        other = live_leader(self.services.processes, but=self.presence.id)
                        before = f"{other.host} (pid {other.pid})" if other else before
                        if not standing_by:
                            self.say("scheduler: standing by" + (f"; {before} leads" if before else ""))
                        standing_by = True
                        stop.wait(self.timing.standby)
                        continue
                    took = "took over the leadership" + (f" from {before}" if before else "")
                    self.say(f"scheduler: {took if standing_by else 'leading'}; jobs fire in this process")
                    standing_by = False
                    self._start()
                if stop.wait(min(self.timing.standby, self.timing.settle)):
                    break
                if not self.lead.holds():
                    self.warn("scheduler: the leadership was lost (its database connection went); standing by")
                    self._end()
                    standing_by = True
                    continue
                if self.scheduler is not None:
                    self.scheduler.wakeup()  # jobs added or moved by other processes are seen
                if time.monotonic() - settled >= self.timing.settle:
                    from outreach.firing import settle

                    settle(self.services)
                    settled = time.monotonic()
        finally:
            self._end()

    def _start(self) -> None:
        """Firings a dead leader had taken out of the store fire (or are logged missed),
        then APScheduler runs: what fell due meanwhile fires within its misfire grace."""
        from outreach.scheduling import recover_orphans, start

        recover_orphans(self.services)
        self.scheduler = start(self.services)

    def _end(self) -> None:
        if self.scheduler is not None:
            from outreach import jobs

            self.scheduler.shutdown(wait=True)
            jobs.stop_serving(self.services)
            self.scheduler = None
        self.release()

    def release(self) -> None:
        if self.lead is not None:
            self.lead.release()
            self.lead = None
            if self.presence.leader:
                self.presence.leader = False
                self.presence.beat()
