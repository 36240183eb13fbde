"""The delivery engine against a real SMTP server on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from outreach.app import Services, build
from outreach.channels.smtp import SmtpPool, parse_smtp_url
from outreach.config import load_settings
from outreach.domain.audience import parse
from outreach.imports import import_files
from outreach.policy import SendPolicy
from tests.conftest import ROOT, Cli, is_alive, proc_stat, wait_until
from tests.smtp_server import Faults, Recorder, SmtpServer


def workspace(tmp_path: Path, database_url: str | None = None) -> Services:
    ws = tmp_path / "ws"
    for folder in ("contacts", "templates", "schedules"):
        shutil.copytree(ROOT / folder, ws / folder)
    env = {"OUTREACH_DATABASE_URL": database_url or "", "OUTREACH_SECRET_KEY": "test-key"}
    services = build(load_settings(ws, env=env))
    import_files(services.contacts, sorted((ws / "contacts").glob("*.csv")))
    return services


def drain(services: Services, url: str, policy: SendPolicy, timeout: float = 60) -> None:
    """Send until nothing is queued or deferred (retries come due quickly here)."""

    async def main() -> None:
        channel = SmtpPool(parse_smtp_url(url))
        dispatcher = services.dispatcher(channel)
        dispatcher.policy = policy
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                await dispatcher.run(until_idle=True)
                counts = services.outbox.counts()
                if not counts.get("queued") and not counts.get("deferred"):
                    return
                if any(s.status == "paused" for s in services.outbox.steps()):
                    return
                await asyncio.sleep(0.02)
            raise AssertionError(f"not done in {timeout}s: {services.outbox.counts()}")
        finally:
            await channel.close()

    asyncio.run(main())


def step_for(services: Services, where: str, template: str = "cop-industry"):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    step = services.outbox.ensure_step(
        campaign="cop-2014", key=f"test-{template}", channel="email", template=template,
        audience=where, send_at=datetime.now(UTC),
    )  # fmt: skip
    return step


FAST = SendPolicy(
    backoff_base=0.01, backoff_cap=0.05, max_attempts=8, error_budget=1000, per_second=10_000
)


def test_materialise_once_per_contact_on_every_backend(tmp_path: Path, database_url: str) -> None:
    services = workspace(tmp_path, database_url)
    step = step_for(services, "kind:industry country:FJ,WS")
    expected = services.contacts.count(parse("kind:industry country:FJ,WS status:active"))
    assert services.outbox.materialize(step, batch=50) == expected > 0
    assert services.outbox.materialize(step, batch=50) == 0
    assert services.outbox.counts(step_id=step.id) == {"queued": expected}
    assert len(services.outbox.events(event="materialized", limit=10_000)) == expected
    again = step_for(services, "kind:industry country:FJ,WS")
    assert again.id == step.id
    services.close()


def test_every_message_arrives_correct_and_logged(tmp_path: Path, database_url: str) -> None:
    services = workspace(tmp_path, database_url)
    recorder = Recorder()
    with SmtpServer(recorder) as server:
        step = step_for(services, "kind:industry country:TO")
        n = services.outbox.materialize(step)
        drain(services, server.url, FAST)
    assert services.outbox.counts(step_id=step.id) == {"sent": n}
    assert len(recorder.accepted) == n
    rcpt, _mid, raw = recorder.accepted[0]
    m = BytesParser(policy=policy.default).parsebytes(raw)
    contact = services.contacts.get(rcpt)
    assert m["To"].addresses[0].addr_spec == contact.email
    assert m["From"].addresses[0].addr_spec == "cop@example.org"
    assert m["Reply-To"] == "press@example.org"
    assert m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert f"/u/cop-2014/{contact.id}/" in m["List-Unsubscribe"]
    assert m["Subject"] == "New ITU–UNICEF Guidelines for Industry on Child Online Protection"
    assert "style=" in m.get_body(("html",)).get_content()
    sent = services.outbox.events(event="sent", limit=1000)
    assert {e["detail"]["message_id"] for e in sent} == set(recorder.message_ids())
    assert all(e["detail"]["code"] == 250 and e["detail"]["duration_ms"] >= 0 for e in sent)
    services.close()


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-command-at-a-time"])
def test_faults_end_in_the_right_state(tmp_path: Path, pipelining: bool) -> None:
    services = workspace(tmp_path)
    audience = [c.email for c in services.contacts.find(parse("kind:industry country:WS,TO,VU"))]
    unknown, spam = set(audience[:2]), {audience[2]}
    recorder = Recorder(
        Faults(temporary=0.25, drop=0.1, slow=0.01, no_such_user=unknown, rejected=spam),
        pipelining=pipelining,
    )
    with SmtpServer(recorder) as server:
        step = step_for(services, "kind:industry country:WS,TO,VU")
        services.outbox.materialize(step)
        # 35% of attempts fail for a while: 8 in a row would happen in one run of ~70
        drain(services, server.url, dataclasses.replace(FAST, max_attempts=40))
    counts = services.outbox.counts(step_id=step.id)
    good = set(audience) - unknown - spam
    assert counts == {"sent": len(good), "failed": 3}
    assert {r for r, _m, _raw in recorder.accepted} == good
    for email in unknown:
        contact = services.contacts.get(email)
        assert contact.status == "bounced"
        failed = services.outbox.events(email=email, event="failed")
        assert failed[0]["detail"]["code"] == 550 and "bounce" in failed[0]["detail"]
    assert services.contacts.get(next(iter(spam))).status == "active"
    deferred = services.outbox.events(event="deferred", limit=10_000)
    assert deferred, "temporary failures are retried"
    assert all("next_attempt" in e["detail"] for e in deferred)
    # every temporary failure was retried: the server saw more attempts than messages
    assert sum(recorder.attempts.values()) > len(good)
    # the recipient that was bounced is skipped by a later step
    later = services.outbox.ensure_step(campaign="cop-2014", key="later", channel="email",
                                        template="cop-followup", audience="kind:industry country:WS,TO,VU",
                                        send_at=step.send_at)  # fmt: skip
    assert services.outbox.materialize(later) == len(audience) - 2
    assert (recorder.pipelined_commands > 0) == pipelining  # MAIL, RCPT, DATA in one write
    services.close()


def test_unsubscribed_after_planning_is_skipped_at_send_time(tmp_path: Path) -> None:
    services = workspace(tmp_path)
    recorder = Recorder()
    with SmtpServer(recorder) as server:
        step = step_for(services, "kind:industry country:NU,TV")
        n = services.outbox.materialize(step)
        leaver = services.contacts.find(parse("kind:industry country:NU,TV"), limit=1)[0]
        services.contacts.set_status(parse(f"email:{leaver.email}"), "unsubscribed")
        drain(services, server.url, FAST)
    assert services.outbox.counts(step_id=step.id) == {"sent": n - 1, "skipped": 1}
    assert leaver.email not in {r for r, _m, _raw in recorder.accepted}
    skipped = services.outbox.events(event="skipped")
    assert "unsubscribed" in skipped[0]["detail"]["reason"]
    services.close()


def test_a_relay_that_looks_down_pauses_the_step_until_resumed(tmp_path: Path) -> None:
    services = workspace(tmp_path)
    recorder = Recorder(Faults(temporary=1.0))
    policy_ = dataclasses.replace(FAST, error_budget=5, batch=3)
    with SmtpServer(recorder) as server:
        step = step_for(services, "kind:industry country:FJ")
        n = services.outbox.materialize(step)
        drain(services, server.url, policy_)
        assert services.outbox.step(step.id).status == "paused"
        paused = services.outbox.events(event="paused")
        assert "temporary failures in a row" in paused[0]["detail"]["reason"]
        assert paused[0]["detail"]["action"] == "resume"  # the CLI says: outreach resume cop-2014
        recorder.faults.temporary = 0.0
        cli = Cli(services.settings.workspace, env={"OUTREACH_SECRET_KEY": "test-key"})
        assert "resumed 1 step(s)" in cli("resume", "cop-2014").stdout
        drain(services, server.url, policy_)
    assert services.outbox.counts(step_id=step.id) == {"sent": n}
    services.close()


def test_a_crash_mid_batch_resends_and_marks_uncertain(tmp_path: Path, database_url: str) -> None:
    services = workspace(tmp_path, database_url)
    recorder = Recorder()
    with SmtpServer(recorder) as server:
        step = step_for(services, "kind:industry country:CK")
        n = services.outbox.materialize(step)
        claimed = services.outbox.claim(channel="email", limit=3)  # then the process "dies"
        assert all("cop-2014" in c.contact.tags for c in claimed)  # as templates see them
        assert services.outbox.counts(step_id=step.id) == {"sending": 3, "queued": n - 3}
        drain(services, server.url, FAST)
    assert services.outbox.counts(step_id=step.id) == {"sent": n}
    uncertain = services.outbox.events(event="uncertain")
    assert sorted(e["email"] for e in uncertain) == sorted(c.contact.email for c in claimed)
    assert "may get it twice" in uncertain[0]["detail"]["reason"]
    resent = [
        e for e in services.outbox.events(event="sent", limit=100) if e["detail"].get("uncertain")
    ]
    assert len(resent) == 3
    services.close()


def test_send_command_end_to_end_with_the_local_maildir(tmp_path: Path) -> None:
    services = workspace(tmp_path)
    services.close()
    cli = Cli(tmp_path / "ws", env={"OUTREACH_SECRET_KEY": "test-key"})
    out = cli("send", "cop-industry", "--where", "kind:industry country:SB", "--yes").stdout
    n = int(cli("contacts", "count", "--where", "kind:industry country:SB").stdout)
    assert f"to {n} contact(s)" in out and f"delivery log: sent {n}" in out
    assert len(list((tmp_path / "ws" / ".outreach" / "outbox" / "new").iterdir())) == n
    log = cli("log", "--event", "sent", "--limit", "3").stdout
    assert "sent" in log and "code=250" in log
    refused = cli("send", "cop-industry", "--where", "country:AQ", "--yes", ok=False)
    assert "nobody active matches" in refused.output
    asked = cli(
        "send", "cop-industry", "--where", "kind:industry country:SB", input="n\n", ok=False
    )
    assert "Send to" in asked.output


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_and_logs_every_duplicate(tmp_path: Path) -> None:
    """A 5,000-message step sent by a process killed (SIGKILL) several times at random
    moments, restarted until done."""
    import os
    import random
    import signal
    import subprocess
    import sys

    ws = tmp_path / "ws"
    for folder in ("templates", "schedules"):
        shutil.copytree(ROOT / folder, ws / folder)
    rows = "".join(f"p{i}@org{i % 97}.example.org,Person {i},industry,FJ\n" for i in range(5000))
    (ws / "contacts").mkdir()
    (ws / "contacts" / "many.csv").write_text("email,name,kind,country\n" + rows)
    env = {
        "OUTREACH_DATABASE_URL": "",
        "OUTREACH_SECRET_KEY": "test-key",
        "OUTREACH_RATE_PER_SECOND": "100000",
    }
    services = build(load_settings(ws, env=env))
    import_files(services.contacts, [ws / "contacts" / "many.csv"])
    step = step_for(services, "kind:industry")
    assert services.outbox.materialize(step) == 5000
    exe = str(Path(sys.executable).with_name("outreach"))
    recorder = Recorder(Faults(slow=0.002))
    rng = random.Random(2014)
    in_flight_at_kills: list[int] = []
    with SmtpServer(recorder) as server:
        child_env = {**os.environ, **env, "OUTREACH_SMTP_URL": server.url}
        for _round in range(30):
            proc = subprocess.Popen([exe, "-w", str(ws), "run", "--until-idle"], env=child_env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
            try:
                proc.wait(timeout=rng.uniform(0.5, 1.5) if len(in_flight_at_kills) < 4 else 120)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                in_flight_at_kills.append(services.outbox.counts(step_id=step.id).get("sending", 0))
                continue
            assert proc.returncode == 0, proc.stderr.read().decode()  # type: ignore[union-attr]
            if services.outbox.counts(step_id=step.id) == {"sent": 5000}:
                break
    assert len(in_flight_at_kills) >= 3, "the sender was killed several times"
    assert services.outbox.counts(step_id=step.id) == {"sent": 5000}
    received = [r for r, _m, _raw in recorder.accepted]
    assert set(received) == {f"p{i}@org{i % 97}.example.org" for i in range(5000)}
    duplicates = len(received) - len(set(received))
    assert duplicates <= sum(in_flight_at_kills)
    counts: dict[str, int] = {}
    for r in received:
        counts[r] = counts.get(r, 0) + 1
    uncertain = {e["email"] for e in services.outbox.events(event="uncertain", limit=100_000)}
    assert {r for r, n in counts.items() if n > 1} <= uncertain
    services.close()


def test_sigterm_finishes_the_messages_in_flight_then_exits(tmp_path: Path) -> None:
    import signal
    import subprocess

    services = workspace(tmp_path)
    step = step_for(services, "status:active")
    services.outbox.materialize(step)
    recorder = Recorder(Faults(slow=0.05))
    with SmtpServer(recorder) as server:
        proc = _sender(services, server, stderr=subprocess.PIPE)
        wait_until(lambda: services.outbox.counts(step_id=step.id).get("sent"), 30, 0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, proc.stderr.read().decode()  # type: ignore[union-attr]
    counts = services.outbox.counts(step_id=step.id)
    assert "sending" not in counts and 0 < counts["sent"] < 830  # two processes stopped mid-step
    assert counts["sent"] == len(recorder.accepted)
    services.close()


def test_no_secret_reaches_the_log(tmp_path: Path) -> None:
    services = workspace(tmp_path)
    step = step_for(services, "kind:industry country:NU")
    services.outbox.materialize(step)
    closed = "smtp://mailer:s3cret-Passw0rd@127.0.0.1:1?timeout=1&pool=1"
    drain(services, closed, dataclasses.replace(FAST, max_attempts=2))
    events = services.outbox.events(limit=10_000)
    assert any(e["event"] == "failed" for e in events)
    assert "s3cret-Passw0rd" not in repr(events)
    assert "s3cret-Passw0rd" not in repr(parse_smtp_url(closed))
    services.close()


def test_a_step_can_be_slower_than_the_channel(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    services = workspace(tmp_path)
    recorder = Recorder()
    with SmtpServer(recorder) as server:
        step = services.outbox.ensure_step(
            campaign="cop-2014", key="gentle", channel="email", template="cop-partner",
            audience="kind:government country:FJ,WS,TO,VU,SB,PG", send_at=datetime.now(UTC),
            settings={"per_second": 4},
        )  # fmt: skip
        n = services.outbox.materialize(step)
        started = time.monotonic()
        drain(services, server.url, FAST)
        elapsed = time.monotonic() - started
    assert services.outbox.counts(step_id=step.id) == {"sent": n} and n == 6
    assert elapsed >= (n - 4) / 4 * 0.9  # a burst of 4, then 4 per second
    services.close()


def test_worker_senders_go_when_the_parent_is_killed(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess

    services = workspace(tmp_path)
    step = step_for(services, "status:active")
    services.outbox.materialize(step)
    recorder = Recorder(Faults(slow=0.05))
    with SmtpServer(recorder) as server:
        proc = _sender(services, server, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        children: list[int] = []
        while not children and time.monotonic() < deadline:
            children = [
                int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == proc.pid
            ]
            time.sleep(0.1)
        assert children, "the sender started a worker process"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(1)
        alive = [c for c in children if is_alive(c)]
        assert alive == []
    services.close()


def _parent(pid: int) -> int | None:
    fields = proc_stat(pid)
    return int(fields[1]) if len(fields) > 1 else None


def _sender(services: Services, server: SmtpServer, *, stderr: int):  # type: ignore[no-untyped-def]
    """``outreach run --workers 2`` as its own process, sending to ``server``."""
    import os
    import subprocess
    import sys

    exe = str(Path(sys.executable).with_name("outreach"))
    env = {**os.environ, "OUTREACH_DATABASE_URL": "", "OUTREACH_SECRET_KEY": "test-key",
           "OUTREACH_SMTP_URL": server.url, "OUTREACH_RATE_PER_SECOND": "100000"}  # fmt: skip
    return subprocess.Popen([exe, "-w", str(services.settings.workspace), "run", "--workers", "2"],
                            env=env, stdout=subprocess.DEVNULL, stderr=stderr)  # fmt: skip
