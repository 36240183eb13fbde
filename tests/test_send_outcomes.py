"""What ``send`` and ``run --until-idle`` say and exit with: queued and sent, or
refused with nothing queued; handed to a running sender; mail left waiting."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from outreach.app import build
from outreach.config import load_settings
from outreach.ports import ProcessInfo
from tests.conftest import Cli
from tests.smtp_server import Faults, Recorder, SmtpServer

WHERE = "kind:industry country:SB"


@pytest.fixture
def ws(sample_ws: Cli) -> Path:
    """A copy of the sample workspace with its contacts imported."""
    return sample_ws.workspace


def _counts(ws: Path) -> dict[str, int]:
    services = build(load_settings(ws, env={"OUTREACH_DATABASE_URL": ""}))
    try:
        return services.outbox.counts()
    finally:
        services.close()


def test_send_with_a_sender_running_hands_it_over_and_says_so(ws: Path) -> None:
    cli = Cli(ws)
    services = build(load_settings(ws, env={"OUTREACH_DATABASE_URL": ""}))
    now = datetime.now(UTC)  # a sender on another machine, beating as 'outreach run' does
    services.processes.register(ProcessInfo(id="elsewhere:4242:1", host="elsewhere", pid=4242, role="sender",
                                            started_at=now, heartbeat_at=now, state={"every": 60}))  # fmt: skip
    out = cli("send", "cop-industry", "--where", WHERE, "--yes").output
    assert "queued" in out and "a sender is running for this database on elsewhere (pid 4242)" in out
    assert "error" not in out
    queued = _counts(ws)
    assert set(queued) == {"queued"}
    services.processes.remove("elsewhere:4242:1")
    services.close()
    cli("run", "--until-idle")  # the running sender's part
    assert _counts(ws) == {"sent": queued["queued"]}


def test_send_through_a_relay_that_is_down_exits_75_saying_what_waits(ws: Path) -> None:
    cli = Cli(ws, env={"OUTREACH_SMTP_URL": "smtp://127.0.0.1:9?timeout=1&pool=1"})
    result = cli("send", "cop-industry", "--where", WHERE, "--yes", ok=False)
    assert result.exit_code == 75
    assert "wait for a retry or their time" in result.output and "keep 'outreach run' going" in result.output
    assert set(_counts(ws)) == {"deferred"}
    again = cli("run", "--until-idle", ok=False)
    assert again.exit_code == 75 and "wait for a retry" in again.output


def test_send_with_failures_exits_1_and_a_clean_send_0(ws: Path) -> None:
    services = build(load_settings(ws, env={"OUTREACH_DATABASE_URL": ""}))
    from outreach.domain.audience import parse

    someone = services.contacts.find(parse(WHERE), limit=1)[0].email
    services.close()
    with SmtpServer(Recorder(Faults(no_such_user={someone}))) as server:
        cli = Cli(ws, env={"OUTREACH_SMTP_URL": server.url})
        result = cli("send", "cop-industry", "--where", WHERE, "--yes", ok=False)
        assert result.exit_code == 1 and "1 failed" in result.output and "--event failed" in result.output
        assert cli("send", "cop-industry", "--where", "kind:industry country:TO", "--yes").exit_code == 0


def test_a_bad_relay_url_is_refused_before_anything_is_queued(ws: Path) -> None:
    cli = Cli(ws, env={"OUTREACH_SMTP_URL": "smtp://127.0.0.1:notaport"})
    cli("send", "cop-industry", "--where", WHERE, "--yes", ok=False)
    assert _counts(ws) == {}


def test_the_same_send_again_sends_nobody_anything_twice(ws: Path) -> None:
    cli = Cli(ws)
    cli("send", "cop-industry", "--where", WHERE, "--yes")
    sent = _counts(ws)
    again = cli("send", "cop-industry", "--where", WHERE, "--yes").output
    assert "nobody gets it twice" in again and "queued 0" in again
    assert _counts(ws) == sent


def test_a_relay_password_with_at_slash_and_hash_is_parsed_whole_and_never_shown() -> None:
    from outreach.channels.smtp import parse_smtp_url
    from outreach.links import _host

    url = "smtp://user:Zq9@Kx7/Wm3#Tp5:Rr4@relay.example.org:587"
    target = parse_smtp_url(url)
    assert (target.host, target.port, target.password) == ("relay.example.org", 587, "Zq9@Kx7/Wm3#Tp5:Rr4")
    assert "Zq9" not in target.safe_url and "Kx7" not in target.safe_url
    assert _host(url) == "relay.example.org"


def test_the_log_names_the_command_for_a_paused_step(ws: Path) -> None:
    with SmtpServer(Recorder(Faults(temporary=1.0))) as server:
        cli = Cli(ws, env={"OUTREACH_SMTP_URL": server.url, "OUTREACH_SECRET_KEY": "k"})
        services = build(load_settings(ws, env={"OUTREACH_DATABASE_URL": ""}))
        step = services.outbox.ensure_step(campaign="cop-2014", key="k", channel="email", template="cop-partner",
                                           audience="kind:industry", send_at=__import__("datetime").datetime.now(
                                               __import__("datetime").UTC))  # fmt: skip
        services.outbox.materialize(step)
        services.close()
        cli("run", "--until-idle", ok=False)
    log = " ".join(cli("log", "--event", "paused").stdout.split())
    assert "continue with: outreach resume cop-2014" in log
