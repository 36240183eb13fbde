"""Scheduling a plan with APScheduler on a real SQLite job store: idempotent
scheduling, approval, local fan-out at firing time, requirements, restarts, misfires."""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from outreach.app import Services, build
from outreach.config import load_settings
from outreach.domain.audience import parse
from outreach.imports import import_files
from outreach.plans import load
from outreach.scheduling import (
    approval_problem,
    fire,
    job_id,
    make_scheduler,
    plan_hash,
    promote_waiting,
    release_held,
    schedule,
    start,
)
from tests.conftest import ROOT, Cli, wait_until

PLAN = "schedules/cop-guidelines-2014.yaml"


@pytest.fixture
def services(tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    ws = tmp_path / "ws"
    for folder in ("contacts", "templates", "schedules"):
        shutil.copytree(ROOT / folder, ws / folder)
    services = build(
        load_settings(ws, env={"OUTREACH_DATABASE_URL": database_url, "OUTREACH_SECRET_KEY": "k"})
    )
    import_files(services.contacts, sorted((ws / "contacts").glob("*.csv")))
    yield services
    services.close()


def _env(services: Services) -> dict[str, str]:
    return {"OUTREACH_SECRET_KEY": "k", "OUTREACH_DATABASE_URL": services.settings.database_url}


def jobs(services: Services) -> dict[str, datetime]:
    scheduler = make_scheduler(services)
    scheduler.start(paused=True)
    try:
        return {j.id: j.next_run_time for j in scheduler.get_jobs()}
    finally:
        scheduler.shutdown()


def approve(services: Services, campaign: str = "cop-2014") -> None:
    stored = services.outbox.campaign(campaign)
    path = Path(stored["plan_file"])
    services.outbox.approve(
        campaign, "Tester", plan_hash(services.settings.workspace, path, load(path))
    )


def test_scheduling_is_idempotent_and_tracks_changes(services: Services) -> None:
    path = services.settings.workspace / PLAN
    first = schedule(services, path)
    assert (first.added, first.kept) == (33, 0)
    registered = jobs(services)
    assert len(registered) == 33
    assert registered[job_id("cop-2014", "press-release@20140905T0700Z")] == datetime(
        2014, 9, 5, 7, tzinfo=UTC
    )
    again = schedule(services, path)
    assert (again.added, again.replaced, again.kept, again.cancelled) == (0, 0, 33, 0)
    data = yaml.safe_load(path.read_text())
    data["steps"] = [s for s in data["steps"] if s["id"] != "launch-thread"]
    next(s for s in data["steps"] if s["id"] == "embargoed-media")["audience"] = (
        "kind:media country:FJ,GB"
    )
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    changed = schedule(services, path)
    assert (changed.replaced, changed.cancelled, changed.kept) == (1, 1, 31)
    assert len(jobs(services)) == 32
    assert (
        services.outbox.step_by_key("cop-2014", "launch-thread@20140905T0705Z").status
        == "cancelled"
    )


def test_nothing_fires_unapproved_and_a_change_revokes_approval(services: Services) -> None:
    path = services.settings.workspace / PLAN
    schedule(services, path)
    assert "not approved" in approval_problem(services, "cop-2014")
    media = "embargoed-media@20140903T0600Z"
    when = datetime(2014, 9, 3, 6, 0, 30, tzinfo=UTC)
    assert fire(services, "cop-2014", media, when) == "held"
    assert services.outbox.counts(step_id=services.outbox.step_by_key("cop-2014", media).id) == {}
    approve(services)
    assert approval_problem(services, "cop-2014") is None
    assert release_held(services, "cop-2014", when) == (1, 0)
    assert services.outbox.counts(step_id=services.outbox.step_by_key("cop-2014", media).id) == {
        "queued": 60
    }
    template = services.settings.workspace / "templates" / "cop-partner.email.j2"
    template.write_text(template.read_text().replace("With thanks", "With many thanks"))
    # what was approved is what is sent: an edit changes nothing until scheduled again
    assert approval_problem(services, "cop-2014") is None
    again = schedule(services, services.settings.workspace / PLAN)
    assert again.changed == ["templates/cop-partner.email.j2"]
    assert "changed since Tester approved it" in approval_problem(services, "cop-2014")


def test_local_fan_out_is_decided_when_each_group_fires(services: Services) -> None:
    schedule(services, services.settings.workspace / PLAN)
    approve(services)
    # a contact in a zone the plan did not know when it was scheduled
    services.outbox  # noqa: B018
    from outreach.domain.normalizer import normalize_contact

    with services.contacts.writer() as writer:
        writer.write([normalize_contact({"email": "new@example.com", "kind": "industry", "country": "US",
                                         "timezone": "America/Chicago"})])  # fmt: skip
    industry = [
        s
        for s in services.outbox.steps("cop-2014")
        if s.settings.get("plan_step") == "industry-email"
    ]
    for step in industry:
        assert fire(services, "cop-2014", step.key, step.send_at) == "active"
    total = sum(services.outbox.counts(step_id=s.id).get("queued", 0) for s in industry)
    assert total == services.contacts.count(parse("kind:industry -country:FJ,WS,TO status:active"))
    chicago = services.contacts.get("new@example.com")
    where = [s for s in industry if services.outbox.events(step_key=s.key, email=chicago.email)]
    assert len(where) == 1  # 09:00 in Chicago is 14:00 UTC: the first group at or after it
    assert where[0].send_at == datetime(2014, 9, 5, 14, tzinfo=UTC)


def test_a_step_waits_for_the_steps_it_requires(services: Services) -> None:
    schedule(services, services.settings.workspace / PLAN)
    approve(services)
    partner, press = "partner-email@20140905T0730Z", "press-release@20140905T0700Z"
    assert fire(services, "cop-2014", partner, datetime(2014, 9, 5, 7, 30, tzinfo=UTC)) == "waiting"
    assert promote_waiting(services) == 0
    assert fire(services, "cop-2014", press, datetime(2014, 9, 5, 7, tzinfo=UTC)) == "active"
    assert promote_waiting(services) == 0  # fired, but not yet published
    assert services.poster().run_due() == 1
    assert promote_waiting(services) == 1
    assert services.outbox.step_by_key("cop-2014", partner).status == "active"
    newsroom = services.newsroom()
    assert [r["slug"] for r in newsroom.releases()] == ["cop-2014-press-release"]
    assert (newsroom.folder / "cop-2014-press-release.html").is_file()


def _soon_plan(path: Path, launch: datetime, misfire: str = "1h", more: tuple[dict, ...] = ()) -> None:
    """A plan "soon": the step "mail" to industry in Tonga at its launch, and ``more``."""
    path.write_text(yaml.safe_dump({
        "campaign": {"id": "soon", "name": "Soon", "from": "team@example.org"},
        "launch": f"{launch:%Y-%m-%d %H:%M} UTC",
        "links": {"guidelines": "https://example.org/g", "pledge": "https://example.org/p"},
        "steps": [{"id": "mail", "channel": "email", "template": "cop-industry",
                   "audience": "kind:industry country:TO", "at": "T+0", "misfire": misfire}, *more],
    }))  # fmt: skip


def test_jobs_survive_a_restart_and_fire_on_time(services: Services) -> None:
    path = services.settings.workspace / "schedules" / "soon.yaml"
    launch = (datetime.now(UTC) + timedelta(minutes=1)).replace(second=0, microsecond=0)
    _soon_plan(path, launch)
    schedule(services, path)
    approve(services, "soon")
    # a new process: the job is in the database, not in memory
    fresh = build(services.settings)
    scheduler = start(fresh)
    try:
        step = fresh.outbox.step_by_key("soon", f"mail@{launch:%Y%m%dT%H%MZ}")
        wait_until(lambda: fresh.outbox.step(step.id).status != "scheduled", 90, 0.2)
        assert fresh.outbox.step(step.id).status == "active"
        fired = fresh.outbox.events(step_key=step.key, event="active")[0]["at"]
        assert abs((fired - launch).total_seconds()) < 5
        assert fresh.outbox.counts(step_id=step.id) == {
            "queued": fresh.contacts.count(parse("kind:industry country:TO"))
        }
    finally:
        scheduler.shutdown(wait=True)
        fresh.close()


def test_a_job_missed_beyond_its_grace_is_logged_not_dropped(services: Services) -> None:
    path = services.settings.workspace / "schedules" / "soon.yaml"
    launch = (datetime.now(UTC) - timedelta(hours=3)).replace(second=0, microsecond=0)
    _soon_plan(path, launch, misfire="1h")
    schedule(services, path)
    approve(services, "soon")
    scheduler = start(services)
    try:
        step = services.outbox.step_by_key("soon", f"mail@{launch:%Y%m%dT%H%MZ}")
        wait_until(lambda: services.outbox.step(step.id).status != "scheduled", 10)
    finally:
        scheduler.shutdown(wait=True)
    assert services.outbox.step(step.id).status == "missed"
    reason = services.outbox.events(step_key=step.key, event="missed")[0]["detail"]["reason"]
    assert "the sender was not running" in reason and "misfire grace (1:00:00)" in reason
    assert services.outbox.counts(step_id=step.id) == {}


def test_schedule_approve_status_commands(services: Services) -> None:
    cli = Cli(services.settings.workspace, env=_env(services))
    out = cli("schedule", PLAN).stdout
    assert "33 firing(s) added" in out and "not approved" in out
    status = cli("status", "cop-2014").stdout
    assert (
        "not approved" in status
        and "press-release@20140905T0700Z" in status
        and "scheduled (overdue)" in status
    )
    approved = cli("approve", "cop-2014", "--by", "Sarah Taylor").stdout
    assert "cop-2014 approved by Sarah Taylor" in approved
    assert "approved by Sarah Taylor at" in cli("status").stdout


def test_pause_resume_and_cancel(services: Services) -> None:
    schedule(services, services.settings.workspace / PLAN)
    approve(services)
    media = "embargoed-media@20140903T0600Z"
    when = datetime(2014, 9, 3, 6, 0, 30, tzinfo=UTC)
    assert fire(services, "cop-2014", media, when) == "active"
    cli = Cli(services.settings.workspace, env=_env(services))
    assert "1 sending step(s) stopped" in cli("pause", "cop-2014").stdout
    assert services.outbox.step_by_key("cop-2014", media).status == "paused"
    assert "paused" in approval_problem(services, "cop-2014")
    assert fire(services, "cop-2014", "press-release@20140905T0700Z", when) == "held"
    assert "resumed 1 step(s) of cop-2014" in cli("resume", "cop-2014").stdout
    assert services.outbox.step_by_key("cop-2014", media).status == "active"
    out = cli("cancel", "cop-2014", "--yes").stdout
    assert "unsent delivery(ies) skipped" in out and "60 unsent" in out
    assert services.outbox.counts(step_id=services.outbox.step_by_key("cop-2014", media).id) == {
        "skipped": 60
    }
    assert jobs(services) == {}
    assert all(
        s.status in ("cancelled", "done", "missed") for s in services.outbox.steps("cop-2014")
    )


def test_reschedule_moves_every_step_not_yet_fired(services: Services) -> None:
    schedule(services, services.settings.workspace / PLAN)
    approve(services)
    media = "embargoed-media@20140903T0600Z"
    assert fire(services, "cop-2014", media, datetime(2014, 9, 3, 6, tzinfo=UTC)) == "active"
    cli = Cli(services.settings.workspace, env=_env(services))
    out = cli("reschedule", "cop-2014", "--launch", "2014-09-08 10:00").stdout
    assert "1 already fired" in out
    registered = jobs(services)
    assert (
        job_id("cop-2014", "press-release@20140908T0700Z") in registered
    )  # Istanbul 10:00 = 07:00 UTC
    assert job_id("cop-2014", "press-release@20140905T0700Z") not in registered
    assert (
        services.outbox.step_by_key("cop-2014", media).status == "active"
    )  # already fired: untouched
    assert services.campaign("cop-2014").launch == datetime(
        2014, 9, 8, 10, tzinfo=ZoneInfo("Europe/Istanbul")
    )
    # the Pacific wave keeps its own launch unless asked
    assert job_id("cop-2014", "pacific-rollout@pacific@20140911T2100Z") in registered
    cli("reschedule", "cop-2014", "--wave", "pacific", "--launch", "2014-09-19 10:00")
    assert job_id("cop-2014", "pacific-rollout@pacific@20140918T2100Z") in jobs(services)
    assert (
        "unknown time zone"
        in cli("reschedule", "cop-2014", "--launch", "2014-09-08 10:00 Mars/Base", ok=False).output
    )


def test_kill_9_of_outreach_run_loses_no_pending_job(services: Services) -> None:
    """The real long-running process, killed with SIGKILL before its jobs are due and
    started again after: the job within its grace fires, the one beyond is logged missed."""
    import os
    import signal
    import subprocess
    import sys

    ws = services.settings.workspace
    path = ws / "schedules" / "soon.yaml"
    launch = (datetime.now(UTC) + timedelta(days=1)).replace(second=0, microsecond=0)
    _soon_plan(path, launch, more=({"id": "strict", "channel": "email", "template": "cop-industry",
                                    "audience": "kind:industry country:WS", "at": "T+0", "misfire": "2s"},))  # fmt: skip
    schedule(services, path)
    approve(services, "soon")
    due = datetime.now(UTC) + timedelta(seconds=6)
    editor = make_scheduler(services)  # both jobs fall due in a few seconds, not tomorrow
    editor.start(paused=True)
    try:
        for key in ("mail", "strict"):
            step = services.outbox.step_by_key("soon", f"{key}@{launch:%Y%m%dT%H%MZ}")
            services.outbox.update_step(step.id, send_at=due)
            editor.modify_job(job_id("soon", step.key), next_run_time=due)
    finally:
        editor.shutdown()
    exe = Path(sys.executable).with_name("outreach")
    env = {**os.environ, "OUTREACH_DATABASE_URL": services.settings.database_url, "OUTREACH_SMTP_URL": "", "OUTREACH_SECRET_KEY": "k"}

    def start_run() -> subprocess.Popen:
        return subprocess.Popen([str(exe), "-w", str(ws), "run"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip

    first = start_run()
    assert "sending through" in first.stderr.readline()  # up, its scheduler holding the jobs
    time.sleep(0.5)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    while datetime.now(UTC) < due + timedelta(seconds=4):  # both due while nothing runs
        time.sleep(0.2)
    second = start_run()
    try:
        mail = services.outbox.step_by_key("soon", f"mail@{launch:%Y%m%dT%H%MZ}")
        strict = services.outbox.step_by_key("soon", f"strict@{launch:%Y%m%dT%H%MZ}")
        expected = services.contacts.count(parse("kind:industry country:TO"))
        wait_until(lambda: services.outbox.counts(step_id=mail.id).get("sent", 0) >= expected
                   and services.outbox.step(strict.id).status != "scheduled", 30, 0.2)  # fmt: skip
        assert services.outbox.counts(step_id=mail.id) == {"sent": expected}
        assert services.outbox.step(strict.id).status == "missed"
        reason = services.outbox.events(step_key=strict.key, event="missed")[0]["detail"]["reason"]
        assert "the sender was not running" in reason and "misfire grace (0:00:02)" in reason
        status = Cli(ws, env=_env(services))("status", "soon").stdout
        assert "missed" in status
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)


def test_the_real_scheduler_fires_the_sample_plan_at_its_2014_instants(services: Services) -> None:
    """Controlled time (time-machine): the clock is set to just before the launch in
    2014 and ticks on; APScheduler itself decides what is due, what is missed."""
    import time_machine

    schedule(services, services.settings.workspace / PLAN)
    approve(services)
    press = "press-release@20140905T0700Z"
    with time_machine.travel(datetime(2014, 9, 5, 6, 59, 57, tzinfo=UTC), tick=True):
        scheduler = start(services)
        try:
            launched = wait_until(lambda: services.outbox.step_by_key("cop-2014", press).status != "scheduled", 20)
            assert launched, "the launch job did not fire"
            # 07:05 is five minutes away on this clock: the thread's job waits
            assert services.outbox.step_by_key("cop-2014", "launch-thread@20140905T0705Z").status == "scheduled"
        finally:
            scheduler.shutdown(wait=True)
    fired = services.outbox.events(step_key=press, event="active")[0]["at"]
    assert datetime(2014, 9, 5, 7, tzinfo=UTC) <= fired < datetime(2014, 9, 5, 7, 0, 5, tzinfo=UTC)
    industry = services.outbox.step_by_key("cop-2014", "industry-email@20140905T0700Z")
    assert industry.status == "active"  # the clamped groups fire with the embargo
    # the embargoed media email was due two days before: beyond its grace, logged missed
    media = services.outbox.step_by_key("cop-2014", "embargoed-media@20140903T0600Z")
    assert media.status == "missed"


@pytest.mark.parametrize("plan_step", ["embargoed-media", "launch-thread"])
def test_two_firings_of_one_step_at_once_move_it_and_log_it_once(services: Services, plan_step: str) -> None:
    """Two schedulers for a moment (one lost its leadership and does not know it yet):
    both fire the same step; one moves it, the other finds it moved, and the step is
    logged active once, its deliveries (emails, or the posts of a thread) made once."""
    from outreach.firing import _fire

    schedule(services, services.settings.workspace / PLAN)
    approve(services)
    (stale,) = [s for s in services.outbox.steps("cop-2014") if s.key.startswith(f"{plan_step}@")]
    when = stale.send_at + timedelta(seconds=30)
    other = build(load_settings(services.settings.workspace, env=_env(services)))
    try:
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda s: fire(s, "cop-2014", stale.key, when), [services, other]))
        assert results == ["active", "active"]
        assert _fire(other, stale, when) == "active"  # read before, moved since: nothing logged
    finally:
        other.close()
    assert len(services.outbox.events(step_key=stale.key, event="active")) == 1
    made = services.outbox.events(step_key=stale.key, event="materialized", limit=1000)
    assert len(made) == len({e["delivery_id"] for e in made}) == sum(services.outbox.counts(step_id=stale.id).values())
    if plan_step == "embargoed-media":
        assert services.outbox.counts(step_id=stale.id) == {"queued": 60}
    else:  # each post of the thread once
        assert len(made) >= 2 and sorted(e["part"] for e in made) == list(range(len(made)))


def test_settling_never_overrides_what_a_person_did_meanwhile(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step paused by a person after the leader read it as active and finished stays
    paused: settling changes a step only from the status it read."""
    from outreach.firing import finish_steps

    schedule(services, services.settings.workspace / PLAN)
    approve(services)
    press = "press-release@20140905T0700Z"
    assert fire(services, "cop-2014", press, datetime(2014, 9, 5, 7, tzinfo=UTC)) == "active"
    assert services.poster().run_due() == 1  # published: nothing left to send
    step = services.outbox.step_by_key("cop-2014", press)
    read = services.outbox.steps

    def read_then_paused(*args, **kwargs):  # type: ignore[no-untyped-def]
        listed = read(*args, **kwargs)
        services.outbox.set_step_status(step.id, "paused", "paused by Ana")  # meanwhile
        return listed

    monkeypatch.setattr(services.outbox, "steps", read_then_paused)
    assert finish_steps(services) == 0
    monkeypatch.undo()
    assert services.outbox.step(step.id).status == "paused"
    assert not services.outbox.events(step_key=press, event="done")


def test_a_firing_under_way_when_its_campaign_is_cancelled_leaves_nothing_queued(services: Services) -> None:
    """Cancelling marks each step cancelled before skipping what it holds: a firing that
    passed its checks just before makes nothing more once the step is cancelled (its
    batch holds the step's row), and what it made before is skipped."""
    from outreach.control import cancel_campaign

    schedule(services, services.settings.workspace / PLAN)
    approve(services)
    (media,) = [s for s in services.outbox.steps("cop-2014") if s.key.startswith("embargoed-media@")]
    (thread,) = [s for s in services.outbox.steps("cop-2014") if s.key.startswith("launch-thread@")]
    assert services.outbox.materialize(media, batch=30) == 60  # made before the cancel
    cancel_campaign(services, "cop-2014")
    assert services.outbox.counts(step_id=media.id) == {"skipped": 60}
    # firings that had passed their checks go on after it: nothing more is made
    (industry,) = [s for s in services.outbox.steps("cop-2014") if s.key.startswith("industry-email@")][:1]
    assert services.outbox.materialize(media) == services.outbox.materialize(industry) == 0
    assert services.posts.materialize(thread, [{"text": "one"}, {"text": "two"}]) == 0
    assert services.outbox.counts(step_id=media.id) == {"skipped": 60}
    assert services.outbox.counts(step_id=industry.id) == services.outbox.counts(step_id=thread.id) == {}
