"""A relay that misbehaves, driven through the real ``outreach send`` against a real
SMTP server on 127.0.0.1 (tests/smtp_server.py): refusals are attributed to what
they refuse, replies lost after the final dot are logged ``uncertain``, and
international addresses go as the server can take them."""

from __future__ import annotations

import shutil
import sqlite3
from email import policy
from email.parser import BytesParser, Parser
from pathlib import Path

import pytest

from outreach.app import Services, build
from outreach.cli import app
from outreach.config import load_settings
from tests.conftest import ROOT, Cli
from tests.smtp_server import Faults, Recorder, Refuser, SmtpServer

PEOPLE = [f"person{i}@org{i % 3}.example.org" for i in range(12)]
KEY = {"OUTREACH_SECRET_KEY": "test-key"}


def make_ws(tmp_path: Path, rows: list[tuple[str, str]]) -> Path:
    ws = tmp_path / "ws"
    for folder in ("templates", "schedules"):
        shutil.copytree(ROOT / folder, ws / folder)
    (ws / "contacts").mkdir()
    lines = "".join(f"{email},{name},industry,FJ\n" for email, name in rows)
    (ws / "contacts" / "people.csv").write_text("email,name,kind,country\n" + lines, encoding="utf-8")
    Cli(ws)("contacts", "import", str(ws / "contacts" / "people.csv"))
    return ws


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return make_ws(tmp_path, [(e, f"Person {i}") for i, e in enumerate(PEOPLE)])


def look(ws: Path) -> Services:
    """The workspace's store, to look at (the caller closes it)."""
    return build(load_settings(ws, env={"OUTREACH_DATABASE_URL": "", **KEY}))


def outreach(ws: Path, url: str, *args: str):  # type: ignore[no-untyped-def]
    """The real CLI with mail to the relay at ``url``; exit 0, 1 (some failed) or 75
    (mail waits: a retry, or a paused step)."""
    env = {"OUTREACH_DATABASE_URL": "", "OUTREACH_SMTP_URL": url, **KEY}
    result = Cli(ws).runner.invoke(app, ["-w", str(ws), *args], env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code in (0, 1, 75), result.output
    return result


def send(ws: Path, url: str, where: str = "kind:industry"):  # type: ignore[no-untyped-def]
    return outreach(ws, url, "send", "cop-industry", "--where", where, "--yes")


def run(ws: Path, url: str):  # type: ignore[no-untyped-def]
    return outreach(ws, url, "run", "--until-idle")


def make_due(ws: Path) -> None:
    """Time passes: every retry waiting falls due now."""
    with sqlite3.connect(ws / ".outreach" / "outreach.db") as db:
        db.execute("UPDATE deliveries SET due_at = '2000-01-01 00:00:00.000000' "
                   "WHERE status IN ('deferred', 'queued')")  # fmt: skip


# -- 1. a refusal counts against what it refuses ---------------------------------------

REFUSALS = {
    "relay-denied-at-rcpt": (Faults(rcpt_reply="550 Relay access denied"), "550 Relay access denied"),
    "postfix-relay-denied": (Faults(rcpt_reply="554 5.7.1 <x@y>: Relay access denied"), "554 5.7.1"),
    "sender-rejected-at-mail": (Faults(mail_reply="553 Sender address rejected"), "553 Sender address rejected"),
    "refused-at-ehlo": (Faults(ehlo_reply="554 5.7.1 Access denied"), "554 5.7.1 Access denied"),
    "same-reply-for-everyone": (Faults(data_reply="554 5.7.1 Message refused by policy"), "554 5.7.1 Message refused"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(REFUSALS))
def test_a_relay_that_refuses_us_pauses_the_step_and_fails_nobody(ws: Path, name: str) -> None:
    faults, words = REFUSALS[name]
    recorder = Recorder(faults)
    with SmtpServer(recorder) as server:
        result = send(ws, server.url)
        services = look(ws)
        assert result.exit_code == 75, result.output  # mail waits in a paused step
        counts = services.outbox.counts()
        assert "failed" not in counts and set(counts) <= {"queued", "deferred"}, counts
        assert all(services.contacts.get(e).status == "active" for e in PEOPLE)
        (step,) = services.outbox.steps()
        assert step.status == "paused"
        paused = services.outbox.events(event="paused")
        assert "the relay refuses us" in paused[-1]["detail"]["reason"] and words in paused[-1]["detail"]["reason"]
        assert paused[-1]["detail"]["action"] == "resume"
        held = [e for e in services.outbox.events(event="deferred", limit=1000)]
        assert held and all(e["detail"].get("counts_as_attempt") is False for e in held)
        services.close()
        # the relay is mended; the step continues where it stopped
        recorder.faults = Faults()
        campaign = step.campaign
        assert "resumed 1 step" in Cli(ws, env=KEY)("resume", campaign).stdout
        run(ws, server.url)
    services = look(ws)
    assert services.outbox.counts() == {"sent": len(PEOPLE)}
    sent = services.outbox.events(event="sent", limit=1000)
    assert {e["detail"]["attempt"] for e in sent} == {1}, "a held delivery spent no attempt"
    assert sorted(r for r, _m, _raw in recorder.accepted) == sorted(PEOPLE)
    services.close()


def test_a_relay_that_refuses_us_when_we_connect_pauses_the_step(ws: Path) -> None:
    with Refuser("554 5.7.1 No SMTP service for you") as url:
        assert send(ws, url).exit_code == 75
    services = look(ws)
    assert "failed" not in services.outbox.counts()
    reason = services.outbox.events(event="paused")[-1]["detail"]["reason"]
    assert "the relay refuses us: 554 5.7.1 No SMTP service for you (when we connect)" in reason
    (step,) = services.outbox.steps()
    services.close()
    Cli(ws, env=KEY)("resume", step.campaign)
    with SmtpServer(Recorder()) as server:
        assert run(ws, server.url).exit_code == 0
    services = look(ws)
    assert services.outbox.counts() == {"sent": len(PEOPLE)}
    services.close()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_a_wrong_password_pauses_the_step_and_fails_nobody(ws: Path) -> None:
    recorder = Recorder()
    with SmtpServer(recorder, login=("mailer", "right")) as server:
        result = send(ws, server.url_with(user="mailer", password="wrong"))
        assert result.exit_code == 75, result.output
        services = look(ws)
        assert "failed" not in services.outbox.counts()
        reason = services.outbox.events(event="paused")[-1]["detail"]["reason"]
        assert "the relay refuses us: 535 5.7.8" in reason and "AUTH" in reason and "wrong" not in reason
        assert all(services.contacts.get(e).status == "active" for e in PEOPLE)
        (step,) = services.outbox.steps()
        services.close()
        Cli(ws, env=KEY)("resume", step.campaign)
        run(ws, server.url_with(user="mailer", password="right"))
    services = look(ws)
    assert services.outbox.counts() == {"sent": len(PEOPLE)}
    services.close()


def test_only_a_recipient_specific_answer_to_rcpt_bounces(ws: Path) -> None:
    gone, unknown, full, mailbox, content = PEOPLE[:5]
    replies = {
        gone: "550 5.1.1 <gone>: Recipient address rejected: User unknown in local recipient table",
        unknown: "550 No such user here",  # no enhanced code, names the mailbox
        mailbox: "550 Requested action not taken: mailbox unavailable",
        full: "552 5.2.2 Mailbox full",  # permanent, but the address exists
    }
    # a 550 without an enhanced code after the message refuses the message, not the address
    faults = Faults(replies=replies, data_replies={content: "550 Message content rejected"})
    with SmtpServer(Recorder(faults)) as server:
        result = send(ws, server.url)
    assert result.exit_code == 1, result.output
    services = look(ws)
    assert services.outbox.counts() == {"sent": len(PEOPLE) - 5, "failed": 5}
    assert {e for e in PEOPLE if services.contacts.get(e).status == "bounced"} == {gone, unknown, mailbox}
    assert services.outbox.steps()[0].status != "paused"
    services.close()


def test_the_error_budget_counts_permanent_failures(tmp_path: Path) -> None:
    """Different permanent replies, each for one recipient: nothing in them is the
    relay's, yet 25 failures in a row (the budget) pause the step."""
    people = [f"p{i}@org.example.org" for i in range(40)]
    ws = make_ws(tmp_path, [(e, "P") for e in people])
    replies = {e: f"552 5.2.2 Mailbox full ({i} of 40)" for i, e in enumerate(people)}
    with SmtpServer(Recorder(Faults(replies=replies))) as server:
        send(ws, server.url)
    services = look(ws)
    (step,) = services.outbox.steps()
    assert step.status == "paused"
    assert "failures (25 permanent) in a row" in services.outbox.events(event="paused")[-1]["detail"]["reason"]
    assert all(services.contacts.get(e).status == "active" for e in people)
    services.close()


def test_reactivate_undoes_a_wrong_bounce(ws: Path) -> None:
    with SmtpServer(Recorder(Faults(replies={PEOPLE[0]: "550 User unknown"}))) as server:
        send(ws, server.url)
    cli = Cli(ws, env=KEY)
    assert cli("contacts", "show", PEOPLE[0]).stdout.count("bounced") == 1
    out = cli("contacts", "reactivate", PEOPLE[0], "--reason", "the relay was misconfigured", "--by", "ana").stdout
    assert "reactivated" in out
    services = look(ws)
    contact = services.contacts.get(PEOPLE[0])
    services.close()
    assert contact.status == "active"
    assert contact.attrs["reactivated_reason"] == "the relay was misconfigured"
    assert contact.attrs["reactivated_by"] == "ana" and contact.attrs["reactivated_from"] == "bounced"
    assert contact.attrs["reactivated_at"].endswith("Z")
    shown = cli("contacts", "show", PEOPLE[0]).stdout
    assert "the relay was misconfigured" in shown
    # only a bounced contact: an unsubscribed one stays unsubscribed
    cli("contacts", "unsubscribe", PEOPLE[1])
    refused = cli("contacts", "reactivate", PEOPLE[1], "--reason", "x", ok=False)
    assert "unsubscribed" in refused.output
    assert cli("contacts", "reactivate", "nobody@example.org", "--reason", "x", ok=False).exit_code != 0


# -- 2. a reply lost after the final dot: uncertain, and the retry labelled -----------


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-command-at-a-time"])
@pytest.mark.parametrize("fault", ["connection-dropped-after-dot", "reply-after-timeout"])
def test_a_reply_lost_after_the_dot_is_uncertain_and_the_retry_labelled(ws: Path, pipelining: bool,
                                                                       fault: str) -> None:  # fmt: skip
    target = PEOPLE[5]
    faults = Faults(lose_reply={target}) if fault.startswith("connection") else Faults(late_reply={target}, late_by=2.5)
    recorder = Recorder(faults, pipelining=pipelining)
    with SmtpServer(recorder) as server:
        url = server.url_with(timeout=1)
        result = send(ws, url)
        assert result.exit_code == 75, result.output  # the retry waits
        services = look(ws)
        uncertain = services.outbox.events(event="uncertain", email=target)
        assert len(uncertain) == 1 and "may have" in uncertain[0]["detail"]["reason"]
        assert not services.outbox.events(event="deferred", email=target)
        assert services.outbox.counts() == {"sent": len(PEOPLE) - 1, "deferred": 1}
        services.close()
        make_due(ws)
        run(ws, url)
    services = look(ws)
    assert services.outbox.counts() == {"sent": len(PEOPLE)}
    assert [r for r, _m, _raw in recorder.accepted].count(target) == 2  # the server has it twice...
    (sent,) = services.outbox.events(event="sent", email=target)
    assert sent["detail"]["uncertain"] is True  # ...and the log says it may
    assert sent["detail"]["attempt"] == 2
    others = [e for e in services.outbox.events(event="sent", limit=100) if e["email"] != target]
    assert not any(e["detail"].get("uncertain") for e in others)
    assert (recorder.pipelined_commands > 0) == pipelining
    services.close()


# -- 3. international addresses -------------------------------------------------------

IDN = "user@bücher.example"
UTF8_LOCAL = "üser@example.org"


def received(recorder: Recorder, rcpt: str):  # type: ignore[no-untyped-def]
    (raw,) = [raw for r, _m, raw in recorder.accepted if r == rcpt]
    ((mail_from, options, _r),) = [env for env in recorder.envelopes if env[2] == rcpt]
    return raw, mail_from, options


def test_without_smtputf8_domains_go_in_idna_and_a_utf8_local_part_fails(tmp_path: Path) -> None:
    ws = make_ws(tmp_path, [(IDN, "Jürgen Groß"), (UTF8_LOCAL, "Ünal"), ("plain@example.org", "Plain")])
    recorder = Recorder()
    with SmtpServer(recorder, smtputf8=False) as server:
        result = send(ws, server.url)
    assert result.exit_code == 1, result.output  # one failed
    raw, mail_from, options = received(recorder, "user@xn--bcher-kva.example")
    assert "SMTPUTF8" not in options and mail_from == "cop@example.org"
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    assert b"<user@xn--bcher-kva.example>" in head and b"=3Cuser" not in head
    m = BytesParser(policy=policy.default).parsebytes(raw)
    assert m["To"].addresses[0].addr_spec == "user@xn--bcher-kva.example"
    assert m["To"].addresses[0].display_name == "Jürgen Groß"
    services = look(ws)
    (failed,) = services.outbox.events(event="failed")
    assert failed["email"] == UTF8_LOCAL and "SMTPUTF8" in failed["detail"]["reply"]
    assert services.contacts.get(UTF8_LOCAL).status == "active"  # failed, not bounced
    assert services.outbox.counts() == {"sent": 2, "failed": 1}
    services.close()


def test_with_smtputf8_addresses_go_as_they_are(tmp_path: Path) -> None:
    ws = make_ws(tmp_path, [(IDN, "Jürgen Groß"), (UTF8_LOCAL, "Ünal"), ("plain@example.org", "Plain")])
    recorder = Recorder()
    with SmtpServer(recorder, smtputf8=True) as server:
        assert send(ws, server.url).exit_code == 0
    for rcpt in (IDN, UTF8_LOCAL):
        raw, _mail_from, options = received(recorder, rcpt)
        assert "SMTPUTF8" in options
        m = Parser(policy=policy.default).parsestr(raw.decode("utf-8"))  # RFC 6532: UTF-8 headers
        assert m["To"].addresses[0].addr_spec == rcpt
        assert f"<{rcpt}>".encode() in raw.split(b"\r\n\r\n", 1)[0]
    assert m["To"].addresses[0].display_name == "Ünal"
    _raw, _f, options = received(recorder, "plain@example.org")
    assert "SMTPUTF8" not in options  # only where an address needs it
