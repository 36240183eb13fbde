"""Processes: the sender (and its forked workers) and the scheduler beside it, their
lock, signals and rate split, and the rounds of ``--until-idle``. The CLI (and later
the web) starts them; what they say goes through a ``Report``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from outreach.app import Services
from outreach.children import die_with_parent
from outreach.config import Settings
from outreach.db.patience import Patience
from outreach.domain.errors import OutreachError


def _nothing(_message: str) -> None:
    pass


@dataclass
class Report:
    """Where a running sender's words go: ``say`` for news, ``warn`` for trouble it
    waits out, ``progress(counts since start, messages per second)`` twice a second."""

    say: Callable[[str], None] = _nothing
    warn: Callable[[str], None] = _nothing
    progress: Callable[[dict[str, int], float], None] | None = None


def drain(services: Services, *, report: Report | None = None, until_idle: bool = True,
          workers: int | None = None, child: bool = False, scheduler: bool = False, share: int = 1,
          lock: IO[str] | None = None) -> None:  # fmt: skip
    """Run the sender in the foreground until idle (or stopped), then return.

    With a relay, ``workers`` processes send side by side (default: one per core),
    each within its ``share`` of the rate limits; this one resolves what a stopped
    sender left behind first, holds the workspace's sender lock so that no second
    ``outreach run`` does that under it, and then forks the others.
    """
    report = report or Report()
    relay = bool(services.settings.smtp_url)
    workers = share if child else 1 if not relay else (workers or os.cpu_count() or 1)
    watching = report.progress is not None and not child
    waiting = Patience(limit=None, notify=report.warn)
    services.outbox.patience = services.posts.patience = waiting  # a stall is waited out
    lock = lock if lock is not None or child else sender_lock(services.settings)
    children: list[int] = []
    # made first: a misconfigured X channel is refused before any worker exists
    poster = None if child else services.poster()
    if not child:
        services.outbox.recover()
        if scheduler:
            from outreach.scheduling import fire_due, prepare, recover_orphans

            prepare(services)
            if until_idle:  # what fell due while nothing ran fires before anything is sent
                fire_due(services)
            else:  # firings a killed process took out of the store, not yet done
                recover_orphans(services)
        if workers > 1:  # before any thread starts: fork copies only the calling thread
            children = _fork_workers(services, workers - 1, until_idle, share=workers)

    async def watch(start_counts: dict[str, int], started: float) -> None:
        while watching and report.progress is not None:
            counts = services.outbox.counts()
            done = {
                k: counts.get(k, 0) - start_counts.get(k, 0) for k in ("sent", "failed", "deferred")
            }
            elapsed = max(time.monotonic() - started, 1e-9)
            report.progress(done, done["sent"] / elapsed)
            await asyncio.sleep(0.5)

    async def main() -> None:
        with services.email_channel() as (channel, where):
            if not child:
                report.say(f"sending through {where}" + (f" with {workers} processes" if workers > 1 else ""))
            dispatcher = services.dispatcher(channel)
            if workers > 1:
                dispatcher.policy = dataclasses.replace(
                    dispatcher.policy, per_second=dispatcher.policy.per_second / workers,
                    per_hour=max(1, dispatcher.policy.per_hour // workers),
                )  # fmt: skip
            halt = asyncio.Event()

            def stop() -> None:  # the poster checks between posts (it works in a thread)
                halt.set()
                if poster is not None:
                    poster.stopping.set()

            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop)
            watcher = asyncio.create_task(watch(services.outbox.counts(), time.monotonic()))
            jobs = None
            if scheduler and not until_idle:
                from outreach.firing import settle
                from outreach.scheduling import start as start_scheduler

                jobs = start_scheduler(services)

                async def promote() -> None:
                    while True:
                        await asyncio.to_thread(settle, services)
                        await asyncio.sleep(5)

                promoter = asyncio.create_task(promote())
            fetcher = None
            if scheduler and not until_idle and not child and services.settings.bounce_imap_url:
                fetcher = asyncio.create_task(fetch_bounces(services, report, halt))
            failed_here = False
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
                    # steps that waited for what was just sent go on; jobs that fell
                    # due meanwhile fire: until nothing that is due is left
                    if not await asyncio.to_thread(catch_up, services, scheduler):
                        break
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
                watcher.cancel()
                if fetcher is not None:
                    fetcher.cancel()
                if jobs is not None:
                    promoter.cancel()
                    jobs.shutdown(wait=True)
                await channel.close()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

    codes: list[int] = []
    try:
        asyncio.run(main())
    finally:
        if lock is not None:
            lock.close()
    failed = [code for code in codes if code]
    if failed:
        raise OutreachError(
            f"{len(failed)} sender process(es) stopped with an error; see the messages above"
        )


async def fetch_bounces(services: Services, report: Report, halt: asyncio.Event) -> None:
    """Beside a running sender: the bounce mailbox read now and every
    ``bounce_fetch_minutes``. A failure is a warning; the sender goes on."""
    from outreach.bounces import fetch

    stop = threading.Event()  # read between two messages by the fetching thread
    every = services.settings.bounce_fetch_minutes * 60
    try:
        while not halt.is_set():
            try:
                tally = await asyncio.to_thread(fetch, services, stop=stop)
                if tally.read:
                    report.say(f"bounce mailbox: read {tally.read} message(s), {tally.again} read before; "
                               + (", ".join(f"{n} {e}" for e, n in sorted(tally.effects.items())) or "no event"))  # fmt: skip
            except Exception as exc:  # whatever it is, the sender goes on
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


def catch_up(services: Services, scheduler: bool) -> int:
    """Between two rounds of ``--until-idle``: how many steps changed (promoted, done,
    fired)."""
    from outreach.firing import settle
    from outreach.scheduling import fire_due

    changed = settle(services)
    if scheduler:
        changed += fire_due(services)
    return changed


def _fork_workers(services: Services, count: int, until_idle: bool, *, share: int) -> list[int]:
    """Worker senders, forked: they share this process's imports and compiled
    templates (no start-up of their own) and open their own database connections.
    Each dies with this process, even on kill -9 (PR_SET_PDEATHSIG): a sender left
    running would race the next one's recovery."""
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
            drain(services, until_idle=until_idle, child=True, share=share)
            code = 0
        except BaseException:  # reported, then this worker goes
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pids


def sender_lock(settings: Settings) -> IO[str]:
    """One sender (with its worker processes) per workspace at a time."""
    handle = try_sender_lock(settings)
    if handle is None:
        raise OutreachError(
            "another outreach sender is running for this workspace",
            hint="let it finish, or stop it (Ctrl-C) before starting another",
        )
    return handle


def try_sender_lock(settings: Settings) -> IO[str] | None:
    """The sender lock, or None when another sender holds it."""
    import fcntl

    path = settings.state_dir / "sender.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


