"""Many senders around one database: claims under leases (a live sender's rows are
never taken, an expired lease is), rows handed or not at a crash, claims that never
collide, recording that never deadlocks, rate limits for the whole deployment, and a
real kill -9 of ``outreach run`` followed by another run. Real SQLite and PostgreSQL
(``database_url``), real SMTP (aiosmtpd), the real CLI in its own process."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from outreach.app import Services, build
from outreach.channels.smtp import SmtpPool, parse_smtp_url
from outreach.channels.x import XFile
from outreach.config import load_settings
from outreach.db.engine import make_engine
from outreach.db.models import consent_events, contacts, deliveries
from outreach.db.outbox import SqlOutbox
from outreach.db.posts import SqlPosts
from outreach.db.rates import SqlRates
from outreach.imports import import_files
from outreach.policy import SendPolicy, SharedRateLimiter, email_limits
from outreach.ports import Outcome
from outreach.ports.outbox import Limit
from outreach.posting import Poster
from tests.conftest import ROOT, wait_until
from tests.smtp_server import Faults, Recorder, SmtpServer

A, B = "host-a:101:1700000000", "host-b:202:1700000000"  # two senders' ids (identity.process_id)
ENV = {"OUTREACH_SECRET_KEY": "test-key"}


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _services(tmp_path: Path, database_url: str, people: int = 300) -> Services:
    ws = tmp_path / "ws"
    if not ws.exists():
        for folder in ("templates", "schedules"):
            shutil.copytree(ROOT / folder, ws / folder)
        rows = "".join(f"p{i}@org{i % 37}.example.org,Person {i},industry,FJ\n" for i in range(people))
        (ws / "contacts").mkdir()
        (ws / "contacts" / "many.csv").write_text("email,name,kind,country\n" + rows)
        services = build(load_settings(ws, env={**ENV, "OUTREACH_DATABASE_URL": database_url}))
        import_files(services.contacts, [ws / "contacts" / "many.csv"])
        return services
    return build(load_settings(ws, env={**ENV, "OUTREACH_DATABASE_URL": database_url}))


def _step(services: Services, key: str = "leases", channel: str = "email", at: datetime | None = None):  # type: ignore[no-untyped-def]
    return services.outbox.ensure_step(
        campaign="cop-2014", key=key, channel=channel, template="cop-industry" if channel == "email" else "cop-launch",
        audience="kind:industry" if channel == "email" else "", send_at=at or datetime.now(UTC),
    )  # fmt: skip


def _rows(services: Services, ids: list[int]) -> dict[int, tuple]:
    with services.engine.connect() as conn:
        return {r.id: (r.status, r.uncertain, r.holder, r.handed) for r in conn.execute(
            select(deliveries.c.id, deliveries.c.status, deliveries.c.uncertain, deliveries.c.holder,
                   deliveries.c.handed).where(deliveries.c.id.in_(ids)))}  # fmt: skip


def test_two_senders_on_one_database_send_each_recipient_exactly_once(tmp_path: Path, database_url: str) -> None:
    first = _services(tmp_path, database_url)
    second = _services(tmp_path, database_url)  # its own engine, as another machine's
    step = _step(first)
    n = first.outbox.materialize(step)
    recorder = Recorder(Faults(slow=0.004))
    with SmtpServer(recorder) as server:

        async def main() -> list:  # type: ignore[type-arg]
            pools = [SmtpPool(parse_smtp_url(server.url)) for _ in range(2)]
            senders = []
            for services, pool, holder in zip((first, second), pools, (A, B), strict=True):
                sender = services.dispatcher(pool)
                sender.holder, sender.policy = holder, SendPolicy(per_second=10_000, batch=20)
                senders.append(sender)
            try:
                return await asyncio.gather(*(s.run(until_idle=True) for s in senders))
            finally:
                for pool in pools:
                    await pool.close()

        stats = asyncio.run(main())
    received = [r for r, _m, _raw in recorder.accepted]
    assert len(received) == n == 300 and len(set(received)) == n
    assert len(set(recorder.message_ids())) == n
    assert first.outbox.counts(step_id=step.id) == {"sent": n}
    assert all(s.sent > 20 for s in stats), [s.sent for s in stats]  # both took their share
    with first.engine.connect() as conn:
        by_holder = dict(conn.execute(select(deliveries.c.holder, func.count()).group_by(deliveries.c.holder)).all())
    assert by_holder == {A: stats[0].sent, B: stats[1].sent}
    assert not first.outbox.events(event="uncertain") and not first.outbox.events(event="released")
    first.close()
    second.close()


def test_a_live_senders_rows_are_never_taken_and_an_expired_lease_is(tmp_path: Path, database_url: str) -> None:
    services = _services(tmp_path, database_url, people=20)
    start = datetime.now(UTC)
    services.outbox.materialize(_step(services, at=start))
    clock = Clock(start + timedelta(seconds=1))
    outbox = SqlOutbox(services.engine, clock)
    ids = [c.delivery_id for c in outbox.claim(channel="email", limit=5, holder=A)]
    assert len(ids) == 5
    assert outbox.recover(by=B) == 0 and outbox.recover() == 0  # at a start, too
    clock.now += timedelta(seconds=20)
    assert outbox.renew(A) == 5  # A is alive
    clock.now += timedelta(seconds=25)  # 45 s after the claim, 25 after the renewal
    assert outbox.recover(by=B) == 0
    assert outbox.held_until(["email"], by=B) == clock.now + timedelta(seconds=5)
    assert outbox.held_until(["email"], by=A) is None  # nobody else holds any
    assert all(row[:3] == ("sending", 0, A) for row in _rows(services, ids).values())
    clock.now += timedelta(seconds=6)  # A stopped renewing: its lease ran out
    assert outbox.recover(by=A) == 0  # never its own (it may still be sending them)
    assert outbox.recover(by=B) == 5
    assert {row[:2] for row in _rows(services, ids).values()} == {("queued", 0)}  # none was handed
    released = services.outbox.events(event="released")
    assert sorted(e["delivery_id"] for e in released) == sorted(ids)
    assert all(e["detail"]["counts_as_attempt"] is False and e["detail"]["holder"] == A for e in released)
    services.close()


def test_rows_handed_over_come_back_uncertain_the_others_unmarked(tmp_path: Path, database_url: str) -> None:
    services = _services(tmp_path, database_url, people=20)
    start = datetime.now(UTC)
    services.outbox.materialize(_step(services, at=start))
    clock = Clock(start + timedelta(seconds=1))
    outbox, posts = SqlOutbox(services.engine, clock), SqlPosts(services.engine, clock)
    for key in ("x-one", "x-two"):  # two X posts, each a thread of its own
        posts.materialize(_step(services, key, "x", start), [{"text": key, "images": []}])
    claimed = outbox.claim(channel="email", limit=6, holder=A)
    ids = [c.delivery_id for c in claimed]
    assert outbox.hand(ids[:2], A) == set(ids[:2])  # their messages went to the server
    one, two = posts.claim(channels=["x"], holder=A), posts.claim(channels=["x"], holder=A)
    assert one is not None and two is not None and outbox.hand([one.delivery_id], A) == {one.delivery_id}
    clock.now += timedelta(seconds=31)
    assert outbox.hand(ids[2:], B) == set()  # not B's to hand
    assert outbox.recover(by=B) == 8
    rows = _rows(services, [*ids, one.delivery_id, two.delivery_id])
    assert [rows[i][:2] for i in ids] == [("queued", 1)] * 2 + [("queued", 0)] * 4
    assert rows[one.delivery_id][:2] == ("uncertain", 1)  # X: a person decides
    assert rows[two.delivery_id][:2] == ("queued", 0)  # never reached X: it may go
    uncertain = {e["delivery_id"]: e["detail"] for e in services.outbox.events(event="uncertain")}
    assert set(uncertain) == {*ids[:2], one.delivery_id}
    assert "may get it twice" in uncertain[ids[0]]["reason"] and uncertain[one.delivery_id]["decide"]
    assert {e["delivery_id"] for e in services.outbox.events(event="released")} == {*ids[2:], two.delivery_id}
    # A was only slow: its outcome, recorded late, changes nothing (B may send it now)
    late = Outcome(ids[0], claimed[0].step_id, claimed[0].contact.id, "sent", "sent", {"code": 250})
    outbox.record([late], holder=A)
    assert _rows(services, [ids[0]])[ids[0]][:2] == ("queued", 1)
    (sent,) = services.outbox.events(event="sent")
    assert "another sender took it over" in sent["detail"]["late"]
    assert outbox.hand(ids[:1], A) == set()  # nor can A send it again
    services.close()


def test_claims_from_many_processes_never_overlap(tmp_path: Path, database_url: str) -> None:
    services = _services(tmp_path, database_url, people=400)
    n = services.outbox.materialize(_step(services))
    start = datetime.now(UTC) - timedelta(minutes=1)
    posts = SqlPosts(services.engine)
    for i in range(150):  # press releases and X posts: one item each
        posts.materialize(_step(services, f"item-{i}", "press" if i % 2 else "x", start), [{"text": f"{i}"}])
    taken: dict[str, list[int]] = {}
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def claimer(name: str) -> None:  # a process of its own: its engine, its connections
        engine = make_engine(database_url)
        outbox, items = SqlOutbox(engine), SqlPosts(engine)
        mine = taken.setdefault(name, [])
        try:
            barrier.wait()
            while batch := outbox.claim(channel="email", limit=7, holder=name):
                mine += [c.delivery_id for c in batch]
            while (item := items.claim(channels=["x", "press"], holder=name)) is not None:
                mine.append(item.delivery_id)
        except BaseException as exc:  # raised in the test below
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=claimer, args=(f"host-{i}:{i}:1",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    every = [i for ids in taken.values() for i in ids]
    assert len(every) == len(set(every)) == n + 150  # each row claimed once, none left
    assert sum(1 for ids in taken.values() if ids) >= 2  # they did claim side by side
    with services.engine.connect() as conn:
        holders = dict(conn.execute(select(deliveries.c.id, deliveries.c.holder)).all())
    assert all(holders[i] == name for name, ids in taken.items() for i in ids)
    services.close()


def test_two_senders_recording_at_once_never_deadlock(tmp_path: Path, database_url: str) -> None:
    """Two steps to the same people, one sender each; their outcomes (a third of them
    bounces of the same contacts) recorded at once, in chunks of shuffled order, while
    leases are renewed and windows handed. Each bounced contact changes once."""
    services = _services(tmp_path, database_url, people=240)
    for key in ("first", "second"):
        services.outbox.materialize(_step(services, key))
    claimed = {A: services.outbox.claim(channel="email", limit=240, holder=A)}
    claimed[B] = services.outbox.claim(channel="email", limit=240, holder=B)
    assert len(claimed[A]) == len(claimed[B]) == 240 and {c.step_id for c in claimed[A]} != {c.step_id for c in claimed[B]}

    def outcome(c) -> Outcome:  # type: ignore[no-untyped-def]
        bounce = c.contact.id % 3 == 0
        return Outcome(c.delivery_id, c.step_id, c.contact.id, "failed" if bounce else "sent",
                       "failed" if bounce else "sent", {"code": 550 if bounce else 250}, bounce=bounce)  # fmt: skip

    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def sender(holder: str) -> None:
        engine = make_engine(database_url)
        outbox = SqlOutbox(engine)
        try:
            outcomes = sorted((outcome(c) for c in claimed[holder]), key=lambda o: o.contact_id)
            chunks = [outcomes[i : i + 24] for i in range(0, len(outcomes), 24)]
            barrier.wait()
            for chunk in chunks:
                random.shuffle(chunk)
                outbox.record(chunk, holder=holder)
        except BaseException as exc:
            errors.append(exc)
        finally:
            engine.dispose()

    def keeper(holder: str) -> None:
        engine = make_engine(database_url)
        outbox = SqlOutbox(engine)
        ids = [c.delivery_id for c in claimed[holder]]
        try:
            barrier.wait()
            for i in range(0, len(ids), 8):
                outbox.renew(holder)
                outbox.hand(ids[i : i + 8][::-1], holder)
        except BaseException as exc:
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=sender, args=(A,)), threading.Thread(target=sender, args=(B,)),
               threading.Thread(target=keeper, args=(A,)), threading.Thread(target=keeper, args=(B,))]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert services.outbox.counts() == {"sent": 320, "failed": 160}
    with services.engine.connect() as conn:
        bounced = conn.execute(select(func.count()).where(contacts.c.status == "bounced")).scalar_one()
        changes = conn.execute(select(consent_events.c.contact_id, func.count())
                               .group_by(consent_events.c.contact_id)).all()  # fmt: skip
    assert bounced == 80 and len(changes) == 80 and {n for _c, n in changes} == {1}  # one change each
    services.close()


def test_a_rate_limit_holds_for_every_process_together(tmp_path: Path, database_url: str) -> None:
    services = _services(tmp_path, database_url, people=1)
    per_second = 40

    async def grants(limiter: SharedRateLimiter, until: float, stamps: list[float]) -> None:
        while time.monotonic() < until:
            await limiter.acquire()
            stamps.append(time.monotonic())

    async def main() -> list[list[float]]:
        engines = [make_engine(database_url) for _ in range(2)]
        limiters = [SharedRateLimiter(SqlRates(e), email_limits("email", per_second, 10**6)) for e in engines]
        stamps: list[list[float]] = [[], []]
        until = time.monotonic() + 3.0
        try:
            await asyncio.gather(*(grants(lim, until, s) for lim, s in zip(limiters, stamps, strict=True)))
        finally:
            for e in engines:
                e.dispose()
        return stamps

    started = time.monotonic()
    stamps = asyncio.run(main())
    every = sorted(stamps[0] + stamps[1])
    elapsed = every[-1] - started
    assert all(len(s) > 10 for s in stamps)  # both got units
    # a token bucket holding a tenth of a second's worth (4), full at first, then its
    # rate, whoever takes; each process may have a chunk (4) in hand
    assert len(every) <= 4 + per_second * elapsed + 2 * 4
    for second in (0, 1, 2):  # the rate, for both together, from the first second on
        window = [t for t in every if started + second <= t < started + second + 1]
        assert len(window) <= per_second + 4 + 2 * 4, (second, len(window))
    services.close()


def test_a_window_limit_counts_what_every_process_took_in_its_span(tmp_path: Path, database_url: str) -> None:
    services = _services(tmp_path, database_url, people=1)
    clock = Clock(datetime(2014, 9, 5, 7, 0, 30, tzinfo=UTC))
    first, second = SqlRates(services.engine, clock), SqlRates(make_engine(database_url), clock)
    limits = [Limit("test:minute", 30, 60.0)]
    assert first.take(limits, 20) == (20, 0.0)
    granted, wait = second.take(limits, 20)
    assert granted == 10 and 0 < wait <= 61  # what the first took counts
    clock.now += timedelta(seconds=30)
    assert second.take(limits, 5)[0] == 0  # all of it within the last minute
    clock.now += timedelta(seconds=32)  # the first's slot is over a minute old
    assert first.take(limits, 50)[0] == 30
    second.engine.dispose()
    services.close()


def test_x_limits_hold_for_every_poster(tmp_path: Path, database_url: str) -> None:
    services = _services(tmp_path, database_url, people=1)
    start = datetime.now(UTC) - timedelta(minutes=1)
    posts = SqlPosts(services.engine)

    def post(i: int) -> None:
        posts.materialize(_step(services, f"x-{i}", "x", start), [{"text": f"post {i}", "images": []}])

    target = XFile(tmp_path / "x" / "posts.jsonl")
    limits = {"x": [Limit("x:15min", 3, 900.0), Limit("x:day", 2_400, 86_400.0)]}
    posters = [Poster(posts, services.outbox, targets={"x": target}, holder=holder, limits=limits,
                      rates=SqlRates(make_engine(database_url))) for holder in (A, B)]  # fmt: skip
    post(0), post(1)
    assert posters[0].run_due() == 2 and not posters[0].blocked_until
    post(2), post(3)
    assert posters[1].run_due() == 2  # one more within the limit, then every X post waits
    assert services.outbox.counts() == {"sent": 3, "deferred": 1}
    (deferred,) = services.outbox.events(event="deferred")
    assert "3 per 15 minutes" in deferred["detail"]["reason"] and "for every sender" in deferred["detail"]["reason"]
    assert "x" in posters[1].blocked_until and posters[1].run_due() == 0
    assert len(target.path.read_text().splitlines()) == 3
    for poster in posters:
        poster.rates.engine.dispose()  # type: ignore[union-attr]
    services.close()


@pytest.mark.slow
def test_a_sender_killed_mid_send_duplicates_only_handed_messages_labelled(tmp_path: Path, database_url: str) -> None:
    """``outreach run --until-idle`` at the default 50 messages a second, killed (SIGKILL)
    mid-way; another run sends the rest once the dead one's lease has expired."""
    services = _services(tmp_path, database_url, people=600)
    step = _step(services)
    assert services.outbox.materialize(step) == 600
    exe = str(Path(sys.executable).with_name("outreach"))
    recorder = Recorder(Faults(slow=0.02))
    with SmtpServer(recorder) as server:
        env = {**os.environ, **ENV, "OUTREACH_DATABASE_URL": database_url, "OUTREACH_SMTP_URL": server.url}
        env.pop("OUTREACH_RATE_PER_SECOND", None)
        command = [exe, "-w", str(services.settings.workspace), "run", "--until-idle", "--workers", "1"]
        first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_until(lambda: len(recorder.accepted) >= 150, 60, 0.01), "nothing was sent"
        first.send_signal(signal.SIGKILL)
        first.wait()
        with services.engine.connect() as conn:
            left = conn.execute(select(contacts.c.email, deliveries.c.handed)
                                .join(contacts, contacts.c.id == deliveries.c.contact_id)
                                .where(deliveries.c.status == "sending")).all()  # fmt: skip
        handed = {r.email for r in left if r.handed}
        assert left and len(handed) <= 10, len(handed)  # a window or two: 5 a window at 50/s
        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
    assert services.outbox.counts(step_id=step.id) == {"sent": 600}
    received = [r for r, _m, _raw in recorder.accepted]
    assert set(received) == {f"p{i}@org{i % 37}.example.org" for i in range(600)}
    twice = {r for r in received if received.count(r) > 1}
    assert twice <= handed and len(received) - 600 == len(twice) <= 10
    uncertain = {e["email"] for e in services.outbox.events(event="uncertain", limit=1000)}
    assert uncertain == handed  # each labelled; those never handed went back unmarked
    released = services.outbox.events(event="released", limit=1000)
    assert len(released) == len(left) - len(handed)
    services.close()
