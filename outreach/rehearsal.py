"""Dress rehearsal: the whole plan run with time compressed (``--speed 1d=10s``) to
local targets only, on the rehearsal's own database (``.outreach/rehearsal/``):
email over real SMTP to the embedded Maildir server, X posts to a file, press
releases to a local newsroom. Every step fires through the same ``fire`` as a
launch, at its own instant of a clock that runs faster, and the senders write a real
delivery log (``outreach --rehearsal log``) with the plan's own dates in it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from outreach.app import Services
from outreach.checks import errors_of
from outreach.control import approve_campaign
from outreach.domain import audience
from outreach.domain.contact import ContactRecord
from outreach.domain.errors import InputFileError
from outreach.firing import fire, promote_waiting, settle
from outreach.ports import StepInfo
from outreach.scheduling import job_id, make_scheduler, schedule

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SPEED = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*=\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*")


def parse_speed(text: str) -> float:
    """``1d=10s`` -> plan seconds per real second (8640)."""
    match = _SPEED.fullmatch(text)
    if not match:
        raise InputFileError(f"--speed {text!r} is not PLAN=REAL",
                             hint="e.g. --speed 1d=10s: a day of the plan passes in ten seconds")  # fmt: skip
    plan = float(match[1]) * _UNITS[match[2]]
    real = float(match[3]) * _UNITS[match[4]]
    if plan <= 0 or real <= 0 or plan < real:
        raise InputFileError(f"--speed {text!r} does not speed time up",
                             hint="the plan's side must be the longer one, e.g. 1d=10s")  # fmt: skip
    return plan / real


class CompressedClock:
    """Plan time that starts at ``start`` and runs ``factor`` times faster."""

    def __init__(self, start: datetime, factor: float) -> None:
        self.factor = factor
        self.restart(start)

    def restart(self, start: datetime) -> None:
        """Plan time is ``start`` now."""
        self.start = start
        self._t0 = time.monotonic()
        self.held: datetime | None = None

    def __call__(self) -> datetime:
        if self.held is not None:
            return self.held
        return self.start + timedelta(seconds=(time.monotonic() - self._t0) * self.factor)

    def hold(self, at: datetime | None = None) -> None:
        """Plan time stands still, at ``at`` (a step's instant, which the real sleep
        reaches a millisecond early or late: a minute and a half of plan time at
        1w=10s; steps come in time order, so time still only moves on) or now, while
        what fell due is sent (at 8,640 times real speed, a tenth of a second of
        sending would be a quarter of an hour late)."""
        self.held = at if at is not None and at >= self.start else self()

    def release(self) -> None:
        if self.held is not None:
            self.restart(self.held)

    def real_seconds_until(self, at: datetime) -> float:
        return (at - self()).total_seconds() / self.factor


@dataclass
class Rehearsal:
    campaign: str
    stuck: list[str] = field(default_factory=list)  # steps still waiting or sending at the end
    seconds: float = 0.0


def copy_contacts(source: Services, target: Services) -> int:
    """Every contact of the workspace into the rehearsal's database, as they are."""
    copied = 0
    with target.contacts.writer() as writer:
        batch: list[ContactRecord] = []
        for c in source.contacts.iterate(audience.EVERYONE):
            batch.append(ContactRecord(c.email, c.name, c.organization, c.kind, c.sector, c.country,
                                       c.language, c.timezone, c.x_handle, c.status, c.tags, c.attrs))  # fmt: skip
            if len(batch) >= 5000:
                copied += len(batch)
                writer.write(batch)
                batch = []
        if batch:
            copied += len(batch)
            writer.write(batch)
    return copied


def first_instant(services: Services, plan_file: Path) -> datetime:
    from outreach.plans import load
    from outreach.scheduling import plan_timeline

    line = plan_timeline(services, load(plan_file))
    return min(f.at for f in line.firings)


async def rehearse(services: Services, plan_file: Path, clock: CompressedClock, *,
                   on_fire: Callable[[StepInfo, str], None] | None = None,
                   settle_for: float = 20.0) -> Rehearsal:  # fmt: skip
    """Schedule the plan on the rehearsal database, approve it, fire each step when
    the compressed clock reaches it, send everything, and stop when all is done
    (or nothing has moved for ``settle_for`` real seconds)."""
    from outreach.plans import load

    started = time.monotonic()
    clock.hold(at=clock.start)  # setting up takes no plan time: approved before the first step
    campaign = load(plan_file).campaign.id
    schedule(services, plan_file, check=errors_of(services))  # a plan with errors is refused
    steps = services.outbox.steps(campaign)
    approve_campaign(services, campaign, "rehearsal (automatic)")
    # The rehearsal fires the steps itself, on its clock: the stored jobs go.
    editor = make_scheduler(services)
    editor.start(paused=True)
    try:
        for step in steps:
            if editor.get_job(job_id(campaign, step.key)) is not None:
                editor.remove_job(job_id(campaign, step.key))
    finally:
        editor.shutdown()
    report = Rehearsal(campaign)
    clock.release()
    with services.email_channel(maildir=services.settings.state_dir / "outbox") as (channel, _where):
        dispatcher = services.dispatcher(channel)
        poster = services.poster(local=True)
        stop = asyncio.Event()
        senders = asyncio.gather(
            dispatcher.run(stop=stop, poll=0.02, recover=False), poster.run(stop=stop, poll=0.02)
        )
        try:
            for step in sorted(steps, key=lambda s: (s.send_at, s.id)):
                wait = clock.real_seconds_until(step.send_at)
                if wait > 0:
                    await asyncio.sleep(wait)
                clock.hold(at=step.send_at)
                status = await asyncio.to_thread(fire, services, campaign, step.key, clock())
                await _drain_due(services, campaign, settle_for)
                clock.release()
                if on_fire:
                    on_fire(services.outbox.step(step.id), status)
            report.stuck = await _settle(services, campaign, settle_for)
            await asyncio.to_thread(settle, services)  # finished steps show done
        finally:
            stop.set()
            poster.stopping.set()
            await senders
            await channel.close()
    report.seconds = time.monotonic() - started
    return report


async def _drain_due(services: Services, campaign: str, settle: float) -> None:
    """Until nothing of the campaign that is due now is left unsent (with the clock
    held, that is what fell due at this instant)."""
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        await asyncio.to_thread(promote_waiting, services)
        if not services.outbox.due_now(campaign):
            return
        await asyncio.sleep(0.01)


async def _settle(services: Services, campaign: str, settle: float) -> list[str]:
    """Wait until nothing of the campaign is left to send; what never finishes is named."""
    last, since = None, time.monotonic()
    while True:
        await asyncio.to_thread(promote_waiting, services)
        counts = services.outbox.counts(campaign=campaign)
        waiting = [s.key for s in services.outbox.steps(campaign) if s.status == "waiting"]
        pending = sum(counts.get(k, 0) for k in ("queued", "deferred", "sending"))
        if not pending and not waiting:
            return []
        state = (pending, tuple(waiting), counts.get("sent", 0))
        if state != last:
            last, since = state, time.monotonic()
        elif time.monotonic() - since > settle:
            return waiting + [f"{pending} deliveries not sent"] * bool(pending)
        await asyncio.sleep(0.05)
