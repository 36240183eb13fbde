"""A plan step with ``channel: report`` mails the campaign's report to staff: made when
it is sent (what happened until then), the HTML report inline with a short text
version, through the same outbox, log and approval as every other step."""

from __future__ import annotations

import html
import mailbox
import re
import shutil
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
import time_machine
import yaml

from outreach.app import Services, build
from outreach.config import load_settings
from outreach.firing import fire
from tests.conftest import ROOT, Cli
from tests.smtp_server import Faults, Recorder, SmtpServer

LAUNCH = datetime(2030, 3, 5, 7, 0, tzinfo=UTC)  # 10:00 in Istanbul
STAFF = ["director@example.org", "board@example.org"]
ENV = {"OUTREACH_SECRET_KEY": "k", "OUTREACH_RATE_PER_SECOND": "100000"}


def _plan(report: dict[str, Any] | None = None, **email: Any) -> dict[str, Any]:
    return {
        "campaign": {"id": "cop-digest", "name": "COP Guidelines",
                     "from": '"COP team" <cop@example.org>'},
        "launch": "2030-03-05 10:00 Europe/Istanbul",
        "links": {"guidelines": "https://example.org/g", "press": "https://example.org/n"},
        "steps": [
            {"id": "partner-email", "channel": "email", "template": "cop-partner",
             "audience": "kind:un-agency", "at": "T+0", **email},
            {"id": "digest", "channel": "report", "to": STAFF, "at": "T+1d 08:00", **(report or {})},
        ],
    }  # fmt: skip


def _workspace(tmp_path: Path, plan: dict[str, Any], env: dict[str, str] | None = None) -> tuple[Cli, Path]:
    ws = tmp_path / "ws"
    shutil.copytree(ROOT / "templates", ws / "templates")
    (ws / "contacts").mkdir()
    shutil.copy(ROOT / "contacts" / "partners.csv", ws / "contacts")
    path = ws / "schedules" / "digest.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(plan, sort_keys=False, allow_unicode=True))
    cli = Cli(ws, env={**ENV, **(env or {})})
    cli("contacts", "import", str(ws / "contacts" / "partners.csv"))
    return cli, path


def _services(cli: Cli) -> Services:
    return build(load_settings(cli.workspace, env={"OUTREACH_DATABASE_URL": "", **cli.env}))


def _parse(raw: bytes) -> EmailMessage:
    return BytesParser(policy=policy.default).parsebytes(raw)  # type: ignore[return-value]


def _row(page: str, step: str) -> list[str]:
    """The cells of the steps table's row for ``step``, as text."""
    for row in re.findall(r"<tr>(.*?)</tr>", page, re.DOTALL):
        cells = [html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
                 for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL)]  # fmt: skip
        if cells and cells[0] == step:
            return cells
    raise AssertionError(f"no row for {step}")


def test_the_report_is_mailed_to_staff_the_morning_after_with_what_happened(tmp_path: Path) -> None:
    recorder = Recorder(Faults(no_such_user={"chiara.bianchi@unicri.example.org"}))
    with SmtpServer(recorder) as server:
        cli, plan = _workspace(tmp_path, _plan(), {"OUTREACH_SMTP_URL": server.url})
        assert "0 error(s)" in cli("plan", "check", str(plan)).stdout
        cli("schedule", str(plan))
        cli("approve", "cop-digest", "--by", "Ana")
        with time_machine.travel(LAUNCH + timedelta(minutes=1), tick=True):
            cli("run", "--until-idle", "--workers", "1")
        emailed = {to for to, _id, _raw in recorder.accepted}
        assert emailed and not emailed & set(STAFF)  # the day after has not come: no report yet
        with time_machine.travel(datetime(2030, 3, 6, 5, 1, tzinfo=UTC), tick=True):  # 08:01 in Istanbul
            cli("run", "--until-idle", "--workers", "1")
    reports = [(to, _parse(raw)) for to, _id, raw in recorder.accepted if to in STAFF]
    assert sorted(to for to, _m in reports) == sorted(STAFF)  # one message each
    (_to, first), (_to2, second) = reports
    assert first["Message-ID"] == second["Message-ID"]  # one report, to each address in turn
    assert str(first["Subject"]) == "Report: COP Guidelines — 2030-03-06"
    assert first["From"].addresses[0].addr_spec == "cop@example.org"
    services = _services(cli)
    try:
        (email_step, report_step) = services.outbox.steps("cop-digest")
        counts = services.outbox.counts(step_id=email_step.id)
        assert counts["sent"] == len(emailed) and counts["failed"] == 1  # the unknown mailbox
        page = first.get_body(("html",)).get_content()
        assert page.lstrip().startswith("<!doctype html>") and "<svg" in page  # the whole report, inline
        cells = _row(page, "partner-email")
        # step, wave, channel, planned at, planned, sent, failed, deferred, skipped, ...
        assert cells[1:3] == ["launch", "email"]
        assert cells[4:7] == [str(sum(counts.values())), str(counts["sent"]), "1"]
        text = first.get_body(("plain",)).get_content()
        assert f"partner-email (launch), email: planned {sum(counts.values())}, sent {counts['sent']}, failed 1" in text
        (sent,) = services.outbox.events(step_key=report_step.key, event="sent")
        assert sent["detail"]["to"] == STAFF and sent["detail"]["reply"] == f"sent to {', '.join(STAFF)}"
        assert services.outbox.step(report_step.id).status == "done"
    finally:
        services.close()
    shown = " ".join(cli("log", "--channel", "report").stdout.replace("│", " ").split())
    assert "digest@20300306T0500Z" in shown and " sent code=250" in shown  # the log shows it sent


def test_an_unapproved_campaigns_report_step_is_held_and_mails_nothing(tmp_path: Path) -> None:
    recorder = Recorder()
    with SmtpServer(recorder) as server:
        cli, plan = _workspace(tmp_path, _plan(), {"OUTREACH_SMTP_URL": server.url})
        cli("schedule", str(plan))
        with time_machine.travel(datetime(2030, 3, 6, 5, 1, tzinfo=UTC), tick=True):
            cli("run", "--until-idle", "--workers", "1")
    assert recorder.accepted == []
    services = _services(cli)
    try:
        report = next(s for s in services.outbox.steps("cop-digest") if s.channel == "report")
        assert report.status == "held" and services.outbox.counts(step_id=report.id) == {}
        (held,) = services.outbox.events(step_key=report.key, event="held")
        assert "approv" in held["detail"]["reason"]
    finally:
        services.close()


def test_a_report_sent_again_after_a_crash_and_an_address_refused_are_in_the_log(
    tmp_path: Path, database_url: str
) -> None:
    recorder = Recorder(Faults(no_such_user={"board@example.org"}))
    with SmtpServer(recorder) as server:
        cli, plan = _workspace(tmp_path, _plan(), {"OUTREACH_SMTP_URL": server.url,
                                                   "OUTREACH_DATABASE_URL": database_url})  # fmt: skip
        cli("schedule", str(plan))
        cli("approve", "cop-digest", "--by", "Ana")
        services = _services(cli)
        try:
            report = next(s for s in services.outbox.steps("cop-digest") if s.channel == "report")
            assert fire(services, "cop-digest", report.key, report.send_at) == "active"
            assert services.outbox.counts(step_id=report.id) == {"queued": 1}
            # a sender stops with the report in hand: mailing it again is harmless
            assert services.posts.claim(channels=["report"], now=report.send_at) is not None
            assert services.outbox.recover() == 1
            assert services.poster().run_due() == 1
            assert services.outbox.counts(step_id=report.id) == {"sent": 1}
            (uncertain,) = services.outbox.events(step_key=report.key, event="uncertain")
            assert "mailing it again" in uncertain["detail"]["reason"]
            (sent,) = services.outbox.events(step_key=report.key, event="sent")
        finally:
            services.close()
    assert [to for to, _id, _raw in recorder.accepted] == ["director@example.org"]
    reply = sent["detail"]["reply"]
    assert reply.startswith("sent to director@example.org; not to board@example.org: 550 at RCPT")
    assert "User unknown" in reply


@pytest.mark.parametrize(("reply", "status"), [
    ("450 4.2.1 Mailbox busy, try later", "deferred"),  # may pass: the report goes again later
    ("550 5.1.1 User unknown", "failed"),  # every address refused for good
])  # fmt: skip
def test_a_report_no_address_took_is_retried_or_failed(tmp_path: Path, reply: str, status: str) -> None:
    recorder = Recorder(Faults(replies=dict.fromkeys(STAFF, reply)))
    with SmtpServer(recorder) as server:
        cli, plan = _workspace(tmp_path, _plan(), {"OUTREACH_SMTP_URL": server.url})
        cli("schedule", str(plan))
        cli("approve", "cop-digest", "--by", "Ana")
        services = _services(cli)
        try:
            report = next(s for s in services.outbox.steps("cop-digest") if s.channel == "report")
            with time_machine.travel(report.send_at, tick=True):
                fire(services, "cop-digest", report.key)
                assert services.poster().run_due() == 1
            assert services.outbox.counts(step_id=report.id) == {status: 1}
            (event,) = services.outbox.events(step_key=report.key, event=status)
        finally:
            services.close()
    assert recorder.accepted == []
    assert event["detail"]["reply"] == "; ".join(f"not to {to}: {reply[:3]} at RCPT {reply[4:]}" for to in STAFF)


def test_a_rehearsal_mails_the_report_to_the_local_maildir(tmp_path: Path) -> None:
    cli, plan = _workspace(tmp_path, _plan())
    out = cli("rehearse", str(plan), "--speed", "1d=2s").stdout
    assert "Not finished" not in out
    box = mailbox.Maildir(cli.workspace / ".outreach" / "rehearsal" / "outbox", create=False)
    messages = [_parse(box.get_bytes(k)) for k in box.iterkeys()]
    reports = [m for m in messages if str(m["Subject"]).startswith("Report: ")]
    assert sorted(str(m["To"]) for m in reports) == sorted(STAFF)
    assert _row(reports[0].get_body(("html",)).get_content(), "partner-email")[5] == "7"  # every un-agency


@pytest.mark.parametrize(("change", "message"), [
    ({"to": ["director@example", *STAFF]}, "steps[digest].to: 'director@example' is not an email address"),
    ({"to": []}, "steps[digest].to: a report step needs the staff addresses it is mailed to"),
    ({"template": "cop-partner"}, "steps[digest].template: a report step has no template"),
    ({"audience": "kind:partner"}, "steps[digest].audience: a report step is mailed to its 'to' addresses"),
    ({"at": "T+1d 08:00 local"}, "steps[digest].at: a report step goes to staff"),
])  # fmt: skip
def test_a_report_step_that_cannot_be_mailed_is_a_plan_check_error_naming_it(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    cli, plan = _workspace(tmp_path, _plan(change))
    checked = cli("plan", "check", str(plan), ok=False)
    assert message in " ".join(checked.output.split())
    cli("schedule", str(plan), ok=False)  # refused: nothing is stored


def test_only_a_report_step_has_staff_addresses(tmp_path: Path) -> None:
    cli, plan = _workspace(tmp_path, _plan(to=["director@example.org"]))
    out = " ".join(cli("plan", "check", str(plan), ok=False).output.split())
    assert "steps[partner-email].to: only a report step has 'to'" in out
