"""Processes and their roles: a sender (with its forked workers) sends email and posts;
a scheduler fires jobs and settles steps while it leads (``leadership``: one active
scheduler per database, the others standing by); ``all`` does both. Every process is
in the processes table with its heartbeat. Signals, and the rounds of
``--until-idle``. The CLI (and later the web) starts them; what they say goes through
a ``Report``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from outreach.app import Services
from outreach.children import die_with_parent
from outreach.db.patience import Patience
from outreach.domain.errors import OutreachError
from outreach.identity import set_lease_seconds
from outreach.leadership import Leadership, Presence, Role, Timing


def _nothing(_message: str) -> None:
    pass


@dataclass
class Report:
    """Where a running process's words go: ``say`` for news, ``warn`` for trouble it
    waits out, ``progress(counts since start, messages per second)`` twice a second."""

    say: Callable[[str], None] = _nothing
    warn: Callable[[str], None] = _nothing
    progress: Callable[[dict[str, int], float], None] | None = None


def drain(services: Services, *, report: Report | None = None, until_idle: bool = True,
          workers: int | None = None, role: Role = Role.SENDER, timing: Timing | None = None,
          worker_of: str | None = None) -> None:  # fmt: skip
    """Run this process's ``role`` in the foreground until idle (or stopped), then return.

    A sender sending to a relay runs ``workers`` processes side by side (default: one
    per core), forked after this one took over what stopped senders left (expired
    leases only: never a live sender's). A scheduler leads or stands by; until idle it
    takes the leadership for the run, or refuses when another scheduler leads.
    ``worker_of``: this is a forked worker of that process.
    """
    report = report or Report()
    timing = timing or Timing()
    set_lease_seconds(timing.lease)
    child = worker_of is not None
    sends = role.sends
    relay = bool(services.settings.smtp_url)
    workers = 1 if child or not sends or not relay else (workers or os.cpu_count() or 1)
    waiting = Patience(limit=None, notify=report.warn)
    services.outbox.patience = services.posts.patience = waiting  # a stall is waited out
    if sends:  # the local Maildir, X posts without credentials and the newsroom are kept there
        services.settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    # made first: a misconfigured X channel is refused before anything else happens
    poster = services.poster() if sends and not child else None
    senders: list[Any] = [poster] if poster is not None else []  # their stats: what was sent

    def state() -> dict[str, Any]:
        return {"sent": sum(s.stats.sent for s in senders)}

    facts: dict[str, Any] = {"once": True} if until_idle else {}
    if worker_of is not None:
        facts["worker_of"] = worker_of
    elif workers > 1:
        facts["workers"] = workers
    presence = Presence(services.processes, role.value, timing, state=state, facts=facts, warn=report.warn)
    leadership = (Leadership(services, presence, timing, say=report.say, warn=report.warn)
                  if role.schedules and not child else None)  # fmt: skip
    children: list[int] = []
    codes: list[int] = []
    try:
        if leadership is not None:
            from outreach.scheduling import fire_due, prepare

            prepare(services)
            if until_idle:  # what fell due while nothing ran fires before anything is sent
                leadership.take_for_a_round()
                fire_due(services)
        if sends and not child:
            services.outbox.recover()
        if workers > 1:  # before any thread starts: fork copies only the calling thread
            children = _fork_workers(services, workers - 1, until_idle, presence.id, timing)
        presence.start()
        asyncio.run(_main(services, report, role, until_idle, workers, poster, senders, leadership,
                          children, codes, child))  # fmt: skip
    finally:
        if leadership is not None:
            leadership.release()
        presence.stop()
    failed = [code for code in codes if code]
    if failed:
        raise OutreachError(
            f"{len(failed)} sender process(es) stopped with an error; see the messages above"
        )


async def _main(services: Services, report: Report, role: Role, until_idle: bool, workers: int,
                poster: Any, senders: list[Any], leadership: Leadership | None, children: list[int],
                codes: list[int], child: bool) -> None:  # fmt: skip
    halt = asyncio.Event()
    stopping = threading.Event()  # read by the leadership's thread

    def stop() -> None:  # the poster checks between posts (it works in a thread)
        halt.set()
        stopping.set()
        if poster is not None:
            poster.stopping.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    leading: asyncio.Future[None] | None = None  # the leadership's thread: stopped, never cancelled
    fetcher: asyncio.Task[None] | None = None
    if leadership is not None and not until_idle:
        leading = asyncio.ensure_future(asyncio.to_thread(leadership.serve, stopping))
        leading.add_done_callback(lambda _done: stop())  # it ends when stopped, or failing
        if services.settings.bounce_imap_url:
            fetcher = asyncio.create_task(fetch_bounces(services, report, halt, leading=lambda: leadership.leading))
    failed_here = False
    try:
        if role.sends:
            await _send(services, report, until_idle, workers, poster, senders, leadership, halt, child)
        elif until_idle:  # a scheduler's round: fire what is due and settle, until nothing changes
            while not halt.is_set() and await asyncio.to_thread(catch_up, services, True):
                pass
        else:
            await halt.wait()
    except BaseException:
        failed_here = True
        raise
    finally:
        for pid in children:  # they finish by themselves only when sending until idle
            if halt.is_set() or failed_here or not until_idle:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        for pid in children:
            _pid, status = await asyncio.to_thread(os.waitpid, pid, 0)
            codes.append(os.waitstatus_to_exitcode(status))
        stopping.set()
        if fetcher is not None:
            fetcher.cancel()
            await asyncio.gather(fetcher, return_exceptions=True)
        if leading is not None:  # APScheduler shut down, the leadership given up
            await asyncio.wait([leading])
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if leading is not None and leading.exception() is not None:  # it failed: say so, as a sender would
        raise leading.exception()  # type: ignore[misc]


async def _send(services: Services, report: Report, until_idle: bool, workers: int, poster: Any,
                senders: list[Any], leadership: Leadership | None, halt: asyncio.Event,
                child: bool) -> None:  # fmt: skip
    """The sender: email through the relay (or the local Maildir) and the posts, until
    stopped, or until idle (in rounds: steps that waited for what was just sent go on,
    and, when this process leads, jobs that fell due meanwhile fire)."""
    watching = report.progress is not None and not child

    async def watch(start_counts: dict[str, int], started: float) -> None:
        while watching and report.progress is not None:
            counts = services.outbox.counts()
            done = {k: counts.get(k, 0) - start_counts.get(k, 0) for k in ("sent", "failed", "deferred")}
            elapsed = max(time.monotonic() - started, 1e-9)
            report.progress(done, done["sent"] / elapsed)
            await asyncio.sleep(0.5)

    with services.email_channel() as (channel, where):
        if not child:
            report.say(f"sending through {where}" + (f" with {workers} processes" if workers > 1 else ""))
        dispatcher = services.dispatcher(channel)
        senders.append(dispatcher)
        watcher = asyncio.create_task(watch(services.outbox.counts(), time.monotonic()))
        if poster is not None:
            report.say("posting: " + "; ".join(f"{name} to {target.name}"
                                               for name, target in poster.targets.items()))  # fmt: skip
        try:
            while True:
                if poster is not None:
                    await asyncio.gather(
                        dispatcher.run(stop=halt, until_idle=until_idle, recover=False),
                        poster.run(stop=halt, until_idle=until_idle),
                    )
                else:
                    await dispatcher.run(stop=halt, until_idle=until_idle, recover=False)
                if child or halt.is_set() or not until_idle:
                    break
                leading = leadership is not None and leadership.leading
                if not await asyncio.to_thread(catch_up, services, leading):
                    break
        finally:
            watcher.cancel()
            await channel.close()


async def fetch_bounces(services: Services, report: Report, halt: asyncio.Event, *,
                        leading: Callable[[], bool] = lambda: True) -> None:  # fmt: skip
    """Beside the leading scheduler: the bounce mailbox read when it leads and then
    every ``bounce_fetch_minutes``. A failure is a warning; the process goes on."""
    from outreach.bounces import fetch

    stop = threading.Event()  # read between two messages by the fetching thread
    every = services.settings.bounce_fetch_minutes * 60
    try:
        while not halt.is_set():
            if not leading():  # a standby reads nothing: the leader does
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(halt.wait(), timeout=0.5)
                continue
            try:
                tally = await asyncio.to_thread(fetch, services, stop=stop)
                if tally.read:
                    report.say(f"bounce mailbox: read {tally.read} message(s), {tally.again} read before; "
                               + (", ".join(f"{n} {e}" for e, n in sorted(tally.effects.items())) or "no event"))  # fmt: skip
            except Exception as exc:  # whatever it is, the process goes on
                said = exc.message if isinstance(exc, OutreachError) else f"{type(exc).__name__}: {exc}"
                password = services.settings.bounce_imap_password
                if password:
                    said = said.replace(password, "***")
                report.warn(f"cannot read the bounce mailbox: {said}; trying again in "
                            f"{services.settings.bounce_fetch_minutes:g} min")  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(halt.wait(), timeout=every)
    finally:
        stop.set()


def catch_up(services: Services, leading: bool) -> int:
    """Between two rounds of ``--until-idle``: how many steps changed (promoted, done,
    and when this process leads, fired)."""
    from outreach.firing import settle
    from outreach.scheduling import fire_due

    changed = settle(services)
    if leading:
        changed += fire_due(services)
    return changed


def _fork_workers(services: Services, count: int, until_idle: bool, parent_id: str,
                  timing: Timing) -> list[int]:  # fmt: skip
    """Worker senders, forked: they share this process's imports and compiled
    templates (no start-up of their own) and open their own database connections;
    each is a process of its own in the processes table (a sender, worker of this
    one). Each dies with this process, even on kill -9 (PR_SET_PDEATHSIG)."""
    parent = os.getpid()
    pids = []
    for _ in range(count):
        pid = os.fork()
        if pid:
            pids.append(pid)
            continue
        code = 1
        try:
            services.engine.dispose(close=False)  # the parent's connections stay the parent's
            die_with_parent(parent)
            drain(services, until_idle=until_idle, role=Role.SENDER, timing=timing, worker_of=parent_id)
            code = 0
        except BaseException:  # reported, then this worker goes
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pids
