"""The outbox's two halves: a step's audience becomes delivery rows
(``materialize``), and the sender loop turns due rows into sent, logged email.

The loop claims a batch under its holder's lease (each row ``sending`` and logged
before anything leaves; ``db.leases``), and works through it in windows of about
what the rate sends in ``WINDOW_SECONDS`` (at least one, at most a message per
connection): it checks each contact again (someone who unsubscribed since is
skipped), renders, waits for the rate limits (shared by every sender process), marks
the window ``handed`` in one write, and only then gives those messages to the
server. Each outcome is recorded within about 0.1 s of its reply, group-committed
(``recorder``). A process killed at any instant leaves ``sending`` rows that a
survivor (or the next start) takes over once their lease has expired: those never
handed go back to the queue unmarked; those handed go again, marked uncertain.
Nothing is lost, and every possible duplicate is in the log. So does a message sent
whole whose reply never came (``uncertain``): the retry that sends it again is
labelled.

A refusal counts against what it refuses. Only a recipient-specific answer to RCPT
bounces a contact; a relay that refuses us (at connect, EHLO, AUTH, MAIL FROM, or
relaying), or answers many recipients in a row with the same permanent reply,
pauses the step with its words and fails nobody: those deliveries wait, their
attempt not spent, for ``outreach resume``. (Messages are prepared in ``messages``,
replies judged in ``replies``, outcomes recorded by ``recorder``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from outreach.domain.campaign import CampaignInfo
from outreach.domain.errors import OutreachError
from outreach.identity import lease_seconds, process_id
from outreach.messages import Messages, Ready, UrlsFor
from outreach.policy import Limiter, LimiterFor, RateLimiter, SendPolicy
from outreach.ports import EmailChannel, Outbox, Outcome, StepInfo
from outreach.recorder import OutcomeWriter, Waits, cap_for
from outreach.replies import Replies, StepState
from outreach.templating import TemplateLibrary

WINDOW_SECONDS = 0.1  # a window is about what the rate sends in this long


@dataclass
class Stats:
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.monotonic)
    recorded: Waits = field(default_factory=Waits)  # how long outcomes waited to be committed

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.sent / elapsed if elapsed > 0 else 0.0


class Dispatcher(Messages, Replies):
    def __init__(
        self,
        outbox: Outbox,
        library: TemplateLibrary,
        channel: EmailChannel,
        *,
        campaign_for: Callable[[str], CampaignInfo],
        urls_for: UrlsFor,
        sender: str | None,
        reply_to: str | None = None,
        policy: SendPolicy | None = None,
        clock: Callable[[], datetime] | None = None,
        on_progress: Callable[[Stats], None] | None = None,
        library_for: Callable[[StepInfo], TemplateLibrary] | None = None,
        envelope: Callable[[int], str] | None = None,
        holder: str | None = None,
        limits: LimiterFor | None = None,
    ) -> None:
        self.outbox = outbox
        self.library = library
        # a step's own templates (its campaign's snapshot), else ``library``
        self.library_for = library_for or (lambda _info: library)
        self.channel = channel
        self.campaign_for = campaign_for
        self.urls_for = urls_for
        self.sender = sender
        self.reply_to = reply_to
        # the envelope sender (MAIL FROM) of a delivery, by its id: the bounce address,
        # per delivery with VERP (bounces.envelope_for); None: the From address
        self.envelope = envelope
        self.policy = policy or SendPolicy()
        self.clock = clock or _utcnow
        self.on_progress = on_progress
        self.stats = Stats()
        self._steps: dict[int, StepState] = {}
        self._held: set[int] = set()  # failed in this batch by a reply found to be the relay's
        self._again: set[int] = set()  # held before: their own reply decides now
        # who holds what this sender claims (a forked worker is another process)
        self.holder = holder or process_id()
        # rate limits by name: shared by the deployment's senders (the database), or
        # None: this process's own (a policy without a database, the local target)
        self.limits = limits
        self.limiter: Limiter = RateLimiter(self.policy.per_second, self.policy.per_hour)
        self._writer: OutcomeWriter | None = None
        self._done: list[Outcome] = []  # the outcomes of the batch in hand
        self._back: dict[int, Outcome] = {}  # failures that may yet turn out the relay's

    # -- the loop ----------------------------------------------------------------------
    async def run(self, *, stop: asyncio.Event | None = None, until_idle: bool = False,
                  poll: float = 1.0, recover: bool = True) -> Stats:  # fmt: skip
        """Send until ``stop`` is set (finishing the batch in hand), or with
        ``until_idle`` until nothing is due now and no other sender holds any (a dead
        sender's rows are taken over once their lease expires). ``recover`` first
        takes over what stopped senders left ``sending``. Meanwhile this sender's
        leases are renewed, and expired ones taken over when idle and every lease."""
        stop = stop or asyncio.Event()
        if recover:
            await asyncio.to_thread(self.outbox.recover, by=self.holder)
        if self.limits is None:
            since = self.clock() - timedelta(hours=1)
            self.limiter = RateLimiter(self.policy.per_second, self.policy.per_hour,
                                       self.outbox.sent_since("email", since))  # fmt: skip
        else:
            self.limiter = self.limits("email", self.policy.per_second, self.policy.per_hour)
        self._writer = self._new_writer()
        keeper = asyncio.create_task(self._keep_leases())
        taken_over = time.monotonic()
        try:
            while not stop.is_set():
                if keeper.done():
                    keeper.result()  # an error renewing: raised here
                done = await self.run_batch()
                if _look(taken_over, busy=bool(done), until_idle=until_idle):
                    taken_over = time.monotonic()  # what dead senders left, their leases expired
                    if await asyncio.to_thread(self.outbox.recover, by=self.holder):
                        continue
                if done:
                    continue
                wait = poll
                if until_idle:
                    until = await asyncio.to_thread(self.outbox.held_until, ["email"], by=self.holder)
                    if until is None:
                        break
                    wait = min(poll, max(0.05, (until - self.clock()).total_seconds() + 0.05))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=wait)
        finally:
            keeper.cancel()
            writer, self._writer = self._writer, None
            await writer.close()
        return self.stats

    async def _keep_leases(self) -> None:
        """This sender's ``sending`` rows keep a live lease while it runs."""
        while True:
            await asyncio.sleep(lease_seconds() / 3)
            await asyncio.to_thread(self.outbox.renew, self.holder)

    def _new_writer(self) -> OutcomeWriter:
        writer = OutcomeWriter(self._record, cap=cap_for(self.channel.size)).start()
        writer.waits = self.stats.recorded
        return writer

    def _record(self, outcomes: Sequence[Outcome]) -> None:
        self.outbox.record(outcomes, holder=self.holder)

    @property
    def batch(self) -> int:
        """Large enough to keep every connection busy between two claims, small
        enough that a stopped sender leaves little unsent in hand."""
        return self.policy.batch or min(500, max(50, 25 * self.channel.size))

    @property
    def window(self) -> int:
        """Messages marked handed in one write, then given to the server: about what
        the rate sends in ``WINDOW_SECONDS``, at least one, at most one a connection."""
        return max(1, min(self.channel.size, int(self.policy.per_second * WINDOW_SECONDS)))

    async def run_batch(self) -> int:
        if self._writer is not None:
            return await self._batch(self._writer)
        writer = self._writer = self._new_writer()  # called alone: outcomes recorded on return
        try:
            return await self._batch(writer)
        finally:
            self._writer = None
            await writer.close()

    async def _batch(self, writer: OutcomeWriter) -> int:
        claimed = await asyncio.to_thread(self.outbox.claim, channel="email", limit=self.batch,
                                          now=self.clock(), holder=self.holder)  # fmt: skip
        if not claimed:
            return 0
        for step_id in {c.step_id for c in claimed}:  # claimed, so active again (resumed): afresh
            if step_id in self._steps and self._steps[step_id].info.status != "active":
                del self._steps[step_id]
        claimed = [self._with_history(c) if c.attempts > 1 else c for c in claimed]
        self._done = []
        slots = asyncio.Semaphore(self.channel.size)
        waiting = _Unstarted()
        broken: dict[int, str] = {}  # steps that cannot be prepared: they fail alone
        sends: list[asyncio.Task[None]] = []
        for start in range(0, len(claimed), self.window):
            ready = []  # rendered while the window before is in flight
            for item in claimed[start : start + self.window]:
                prepared = self._prepare(item, broken)
                if isinstance(prepared, Outcome):
                    self._settle(prepared)
                else:
                    ready.append(prepared)
            for r in ready:
                if r.step.limiter is not None:
                    await r.step.limiter.acquire()
                await self.limiter.acquire()
            await waiting.none()  # the window before is on its way (each on a connection)
            ready = [r for r in ready if self._still_active(r)]
            if not ready:
                continue
            await writer.room()
            mine = await asyncio.to_thread(self.outbox.hand, [r.item.delivery_id for r in ready], self.holder)
            for r in ready:  # a row taken over meanwhile is another sender's: it does not go
                if r.item.delivery_id in mine:
                    waiting.add()
                    sends.append(asyncio.create_task(self._send(r, slots, waiting)))
        await asyncio.gather(*sends)
        self._release(everything=True)
        await writer.flush()
        for step_id, reason in broken.items():
            self.outbox.set_step_status(step_id, "failed", f"cannot be sent: {reason}")
            self.outbox.skip_pending(step_id, f"not sent: the step failed ({reason})")
        self._count(self._done)
        return len(claimed)

    def _still_active(self, r: Ready) -> bool:
        """After the wait for the rate: a step paused meanwhile holds its messages."""
        if r.step.info.status == "active":
            return True
        self._settle(self._outcome(r.item, "deferred", {"reason": f"step {r.step.info.status}",
                                                        "counts_as_attempt": False},
                                   next_attempt=self.clock()))  # fmt: skip
        return False

    async def _send(self, r: Ready, slots: asyncio.Semaphore, waiting: _Unstarted) -> None:
        async with slots:
            waiting.started()
            try:
                result = await self.channel.send(r.mail_from, r.item.contact.email, r.compose)
                outcome = self._result(r.item, r.step, result, r.msg_id)
            except OutreachError as exc:
                outcome = self._outcome(r.item, "failed", {"reason": exc.message}, error=exc.message)
        self._settle(outcome)

    def _settle(self, outcome: Outcome) -> None:
        """To the writer, except a failure in a run of the same permanent reply (it may
        yet turn out to be the relay's and be held instead): that waits for the run's end."""
        step = self._steps.get(outcome.step_id)
        if outcome.status == "failed" and step is not None and outcome.delivery_id in step.run_ids:
            self._back[outcome.delivery_id] = outcome
        else:
            self._write(outcome)
        if self._back:
            self._release()

    def _release(self, *, everything: bool = False) -> None:
        for delivery_id, outcome in list(self._back.items()):
            step = self._steps.get(outcome.step_id)
            if delivery_id in self._held:
                self._write(self._hold(outcome))
            elif everything or step is None or delivery_id not in step.run_ids:
                self._write(outcome)
            else:
                continue
            del self._back[delivery_id]
        if everything:
            self._held.clear()
            self._again.clear()

    def _write(self, outcome: Outcome) -> None:
        self._done.append(outcome)
        assert self._writer is not None
        self._writer.add(outcome)

    def _count(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            name = o.status if o.status in ("sent", "failed", "deferred") else "skipped"
            setattr(self.stats, name, getattr(self.stats, name) + 1)
        if self.on_progress:
            self.on_progress(self.stats)


class _Unstarted:
    """Sends created and not yet on a connection: the next window waits for none."""

    def __init__(self) -> None:
        self.count = 0
        self._none = asyncio.Event()
        self._none.set()

    def add(self) -> None:
        self.count += 1
        self._none.clear()

    def started(self) -> None:
        self.count -= 1
        if not self.count:
            self._none.set()

    async def none(self) -> None:
        await self._none.wait()


def _look(last: float, *, busy: bool, until_idle: bool) -> bool:
    """Whether a sender looks for expired leases now: every lease while busy, a third of
    one while idle, and each time it finds nothing to do before stopping when idle."""
    return (until_idle and not busy) or time.monotonic() - last >= lease_seconds() / (1 if busy else 3)


def _utcnow() -> datetime:
    return datetime.now(UTC)
