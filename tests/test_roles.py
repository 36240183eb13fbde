"""Processes around one database: ``outreach run --role scheduler|sender|all`` as real
processes of the CLI. Exactly one scheduler leads; killed with SIGKILL, a standby takes
over within seconds and a job that falls due after the kill fires once; a firing run
again materialises nothing new; every process is in the processes table and in
``outreach status``, a dead one shows silent and is pruned; two senders in one
workspace both run, and ``send`` leaves its deliveries to them. SQLite and
PostgreSQL."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from outreach.app import Services, build
from outreach.config import load_settings
from outreach.domain.audience import parse
from outreach.ports import ProcessInfo
from outreach.scheduling import job_id, make_scheduler
from tests.conftest import ROOT, Cli, is_alive, wait_until

OUTREACH = Path(sys.executable).with_name("outreach")
HEARTBEAT = 0.3
TIMING = {"OUTREACH_HEARTBEAT_SECONDS": str(HEARTBEAT), "OUTREACH_STANDBY_SECONDS": "0.3",
          "OUTREACH_GONE_SECONDS": "3"}  # fmt: skip
AUDIENCE = "kind:industry country:TO"


@dataclass
class Deployment:
    """Workspace folders (copies of one another) around one database, the processes
    started in them, and services of the test's own on that database."""

    env: dict[str, str]
    services: Services
    folders: list[Path]
    started: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def cli(self, folder: int = 0) -> Cli:
        return Cli(self.folders[folder], env=self.env)

    def start(self, *args: str, folder: int = 0) -> subprocess.Popen[bytes]:
        said = self.folders[folder].parent / f"run-{len(self.started)}.out"
        with said.open("wb") as out:
            process = subprocess.Popen([str(OUTREACH), "-w", str(self.folders[folder]), "run", *args],
                                       env={**os.environ, **self.env}, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        self.started.append((process, said))
        return process

    def said(self, process: subprocess.Popen[bytes]) -> str:
        return next(path for p, path in self.started if p is process).read_text()

    def listed(self) -> dict[int, ProcessInfo]:
        return {p.pid: p for p in self.services.processes.listed()}

    def leaders(self) -> list[int]:
        now = datetime.now(UTC)
        return [p.pid for p in self.listed().values() if p.leader and p.live(now)]


def _plan(path: Path, launch: datetime) -> None:
    path.write_text(yaml.safe_dump({
        "campaign": {"id": "soon", "name": "Soon", "from": "team@example.org"},
        "launch": f"{launch:%Y-%m-%d %H:%M} UTC",
        "links": {"guidelines": "https://example.org/g", "pledge": "https://example.org/p"},
        "steps": [{"id": "mail", "channel": "email", "template": "cop-industry", "audience": AUDIENCE,
                   "at": "T+0", "misfire": "1h"}],
    }))  # fmt: skip


@pytest.fixture
def deployment(tmp_path: Path, database_url: str) -> Iterator[Deployment]:
    """Workspace a with the sample's contacts and the plan "soon" (launch tomorrow)
    scheduled and approved; b is a copy of its files (another machine's)."""
    first = tmp_path / "a" / "ws"
    for folder in ("contacts", "templates", "schedules"):
        shutil.copytree(ROOT / folder, first / folder)
    env = {"OUTREACH_DATABASE_URL": database_url, "OUTREACH_SECRET_KEY": "k", "OUTREACH_SMTP_URL": "", **TIMING}
    cli = Cli(first, env=env)
    cli("contacts", "import", *map(str, sorted((first / "contacts").glob("*.csv"))))
    _plan(first / "schedules" / "soon.yaml", (datetime.now(UTC) + timedelta(days=1)).replace(second=0, microsecond=0))
    cli("schedule", str(first / "schedules" / "soon.yaml"))
    cli("approve", "soon", "--by", "Ana")
    second = tmp_path / "b" / "ws"
    shutil.copytree(first, second, ignore=shutil.ignore_patterns(".outreach"))
    services = build(load_settings(first, env=env))
    deployment = Deployment(env, services, [first, second])
    try:
        yield deployment
    finally:
        for process, _said in deployment.started:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        services.close()


def _step(services: Services):  # type: ignore[no-untyped-def]
    (step,) = [s for s in services.outbox.steps("soon") if s.key.startswith("mail@")]
    return step


def _due_at(d: Deployment, due: datetime, *, again: bool = False) -> None:
    """The step's job falls due at ``due`` (``again``: it is put back in the store, as a
    leader that died having fired it, before APScheduler took it out, would leave it)."""
    services = d.services
    step = _step(services)
    editor = make_scheduler(services)
    editor.start(paused=True)
    try:
        if again:
            editor.add_job("outreach.jobs:fire_step", "date", run_date=due, id=job_id("soon", step.key),
                           args=[str(d.folders[0]), "soon", step.key], misfire_grace_time=3600)  # fmt: skip
        else:
            services.outbox.update_step(step.id, send_at=due)
            editor.modify_job(job_id("soon", step.key), next_run_time=due)
    finally:
        editor.shutdown()


def _job_left(services: Services) -> bool:
    editor = make_scheduler(services)
    editor.start(paused=True)
    try:
        return bool(editor.get_jobs())
    finally:
        editor.shutdown()


def _status_line(d: Deployment, pid: int) -> str:
    out = d.cli()("status").stdout
    return next((line for line in out.splitlines() if f" {pid} " in line), "")


def test_one_scheduler_leads_a_standby_takes_over_from_a_killed_leader_and_a_job_fires_once(
    deployment: Deployment,
) -> None:
    d = deployment
    services = d.services
    first = d.start("--role", "scheduler")
    second = d.start("--role", "scheduler", folder=1)
    assert wait_until(lambda: len(d.listed()) == 2 and len(d.leaders()) == 1, 20), d.listed()
    assert {p.role for p in d.listed().values()} == {"scheduler"}
    (leader,) = d.leaders()
    standby = next(pid for pid in d.listed() if pid != leader)
    status = d.cli()("status").stdout
    assert "processes: 2 live of 2" in status and f"the scheduler leading is {d.listed()[leader].host} pid {leader}" in status
    assert "leader" in _status_line(d, leader) and "standby" in _status_line(d, standby)
    assert "scheduler" in _status_line(d, standby) and "live" in _status_line(d, standby)
    time.sleep(1)  # a standby stays one: never two leaders
    assert d.leaders() == [leader]

    dying, surviving = (first, second) if first.pid == leader else (second, first)
    os.kill(leader, signal.SIGKILL)
    dying.wait(10)
    killed = time.monotonic()
    _due_at(d, datetime.now(UTC) + timedelta(seconds=1.5))  # falls due after the kill
    assert wait_until(lambda: d.leaders() == [standby], 10), d.listed()
    took = time.monotonic() - killed
    assert took < 10
    assert wait_until(lambda: "silent" in _status_line(d, leader) or "gone" in _status_line(d, leader), 5)

    step = _step(services)
    expected = services.contacts.count(parse(AUDIENCE))
    assert wait_until(lambda: services.outbox.step(step.id).status == "active", 15), services.outbox.step(step.id)
    assert services.outbox.counts(step_id=step.id) == {"queued": expected}
    assert len(services.outbox.events(step_key=step.key, event="active")) == 1  # fired once
    assert not _job_left(services)

    # the same firing again (its job put back): nothing new
    _due_at(d, datetime.now(UTC), again=True)
    assert wait_until(lambda: not _job_left(services), 10)
    time.sleep(0.5)
    assert services.outbox.counts(step_id=step.id) == {"queued": expected}
    assert len(services.outbox.events(step_key=step.key, event="active")) == 1
    # ...and with the step still scheduled (a leader killed between materialising and
    # marking its step): it fires, and materialises nothing new
    services.outbox.set_step_status(step.id, "scheduled", "as a leader killed while firing leaves it")
    _due_at(d, datetime.now(UTC), again=True)
    assert wait_until(lambda: services.outbox.step(step.id).status == "active", 10)
    assert services.outbox.counts(step_id=step.id) == {"queued": expected}
    assert services.outbox.events(step_key=step.key, event="active", limit=1)[0]["detail"]["reason"].startswith(
        "fired: 0 deliveries")  # fmt: skip

    # the dead one is pruned; the survivor stops cleanly and leaves the table
    assert wait_until(lambda: leader not in d.listed(), 10), d.listed()
    assert list(d.listed()) == [standby] and is_alive(standby)
    surviving.send_signal(signal.SIGTERM)
    assert surviving.wait(20) == 0, d.said(surviving)
    assert d.listed() == {}
    said = d.said(surviving)
    assert "scheduler: standing by" in said and "took over the leadership from" in said, said
    print(f"take-over {took:.2f} s after the kill")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_two_runs_in_one_workspace_both_run_and_send_leaves_its_mail_to_them(deployment: Deployment) -> None:
    d = deployment
    services = d.services
    one = d.start("--workers", "1")
    assert wait_until(lambda: "sending through" in d.said(one), 20), d.said(one)
    two = d.start("--workers", "1")
    assert wait_until(lambda: len(d.listed()) == 2 and len(d.leaders()) == 1, 20), d.listed()
    assert {p.role for p in d.listed().values()} == {"all"}
    time.sleep(1)
    assert one.poll() is None and two.poll() is None  # no "another sender" refusal

    out = d.cli()("send", "cop-industry", "--where", "kind:industry country:SB", "--campaign", "soon", "--yes").stdout
    assert "a sender is running for this database" in out and f"pid {one.pid}" in out, out
    (step,) = [s for s in services.outbox.steps("soon") if s.key.startswith("send-")]
    count = services.contacts.count(parse("kind:industry country:SB"))
    assert wait_until(lambda: services.outbox.counts(step_id=step.id) == {"sent": count}, 20)
    assert wait_until(lambda: sum(p.state.get("sent", 0) for p in d.listed().values()) == count, 5)

    # with a scheduler leading, a run until idle that would schedule refuses, and says why
    refused = d.cli()("run", "--until-idle", ok=False)
    assert "another scheduler leads for this database" in refused.output
    assert "outreach run --role sender --until-idle" in refused.output
    d.cli()("run", "--role", "sender", "--until-idle")
    assert "--workers is for the sender roles" in d.cli()("run", "--role", "scheduler", "--workers", "2",
                                                           ok=False).output  # fmt: skip

    for process in (one, two):
        process.send_signal(signal.SIGTERM)
    assert one.wait(20) == 0 and two.wait(20) == 0, d.said(one) + d.said(two)
    assert d.listed() == {}

    # nothing runs: a scheduler's round until idle fires what is due and sends nothing
    _due_at(d, datetime.now(UTC) - timedelta(seconds=1))
    said = d.cli()("run", "--role", "scheduler", "--until-idle").output
    assert "sending through" not in said
    soon = _step(services)
    assert services.outbox.step(soon.id).status == "active"
    assert services.outbox.counts(step_id=soon.id) == {"queued": services.contacts.count(parse(AUDIENCE))}
    assert d.listed() == {}


def test_timing_settings_are_checked(workspace: Path) -> None:
    cli = Cli(workspace, env={"OUTREACH_HEARTBEAT_SECONDS": "soon"})
    assert "OUTREACH_HEARTBEAT_SECONDS is 'soon'" in cli("run", "--until-idle", ok=False).output
    short = Cli(workspace, env={"OUTREACH_HEARTBEAT_SECONDS": "30", "OUTREACH_GONE_SECONDS": "60"})
    assert "less than three heartbeats" in short("run", "--until-idle", ok=False).output
    brief = Cli(workspace, env={"OUTREACH_LEASE_SECONDS": "0.5"})
    assert "OUTREACH_LEASE_SECONDS (0.5) is under a second" in brief("run", "--until-idle", ok=False).output
