"""Mail that comes back, end to end: a step sent to a real SMTP server (aiosmtpd) with
VERP return paths, bounces, a complaint and an auto-reply about its deliveries (made
from the corpus in tests/bounces/ with the real return paths, Message-IDs and
addresses) mailed into a real Dovecot and read by the real CLI (``bounces fetch``),
from a Maildir and from standard input (``bounces ingest``), and by ``outreach run``
beside the sender; on SQLite and PostgreSQL where the SQL differs."""

from __future__ import annotations

import mailbox
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
import yaml
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select, text

from outreach import bounces
from outreach.app import Services, build
from outreach.config import load_settings
from outreach.db.models import contacts, deliveries, delivery_events, metadata
from outreach.domain.errors import ConfigError
from outreach.inbound import InboundMessage, verp_address
from outreach.review import campaign_report
from tests.conftest import ROOT, Cli, wait_until, write_csv
from tests.smtp_server import Recorder, SmtpServer
from tests.test_inbound import EXPECTED, required_dovecot
from tools.dovecot import DovecotServer, dovecot_server

CORPUS = ROOT / "tests" / "bounces"
RETURN_PATH, KEY = "bounces@example.org", "bounce-test-key"
PASSWORD = "Imap-S3cret/pw#" + uuid.uuid4().hex[:8]  # the bounce mailbox's: must show nowhere
OUTREACH = Path(sys.executable).with_name("outreach")
LINKS = {"guidelines": "https://www.example.org/g", "press": "https://www.example.org/p",
         "checklist": "https://www.example.org/c", "pledge": "https://www.example.org/pl"}  # fmt: skip
PEOPLE = ("hard", "complainer", "auto", "soft", "by-id", "by-address", "fine", "also-fine")


def address(who: str) -> str:
    return f"{who}@partners.example.net"


@dataclass
class Sent:
    """A campaign whose first step went out, and what the test knows about it."""

    cli: Cli
    services: Services
    recorder: Recorder
    env: dict[str, str]
    delivery: dict[str, int] = field(default_factory=dict)  # address -> its delivery of the step
    message_id: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> bytes:
        return KEY.encode()

    def verp(self, who: str) -> str:
        return verp_address(RETURN_PATH, self.delivery[address(who)], self.key)

    def status(self, who: str) -> str:
        found = self.services.contacts.get(address(who))
        assert found is not None
        return found.status

    def events(self, *names: str) -> list[dict]:
        """Events of the returned-mail kinds (or ``names``) on email deliveries."""
        wanted = names or ("bounced", "soft_bounce", "complained", "auto_reply")
        query = (select(delivery_events.c.event, delivery_events.c.delivery_id, delivery_events.c.detail,
                        contacts.c.email)
                 .join(deliveries, deliveries.c.id == delivery_events.c.delivery_id)
                 .join(contacts, contacts.c.id == deliveries.c.contact_id)
                 .where(delivery_events.c.event.in_(wanted)).order_by(delivery_events.c.id))  # fmt: skip
        with self.services.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]


def _plan(ws: Path) -> Path:
    launch = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    path = ws / "schedules" / "rtn.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({
        "campaign": {"id": "rtn", "name": "Returned mail", "from": "team@example.org"},
        "launch": f"{launch:%Y-%m-%d %H:%M} UTC", "links": LINKS,
        "steps": [{"id": "first", "channel": "email", "template": "cop-partner", "audience": "tag:rtn",
                   "at": "T-1m"}],
    }, sort_keys=False))  # fmt: skip
    return path


def send_first_step(base: Path, database_url: str, extra_env: dict[str, str] | None = None) -> Sent:
    ws = base / "ws"
    shutil.copytree(ROOT / "templates", ws / "templates")
    rows = "\n".join(f"{address(p)},{p.title()} Person,Partner Org,partner,FJ,en,rtn" for p in PEOPLE)
    write_csv(ws / "contacts" / "rtn.csv", "email,name,organization,kind,country,language,tags\n" + rows + "\n")
    env = {"OUTREACH_DATABASE_URL": database_url, "OUTREACH_SECRET_KEY": KEY,
           "OUTREACH_RETURN_PATH": RETURN_PATH, "OUTREACH_VERP": "true", **(extra_env or {})}  # fmt: skip
    cli = Cli(ws, env=env)
    cli("contacts", "import", str(ws / "contacts" / "rtn.csv"))
    cli("schedule", str(_plan(ws)))
    cli("approve", "rtn", "--by", "T")
    recorder = Recorder()
    with SmtpServer(recorder) as server:
        Cli(ws, env={**env, "OUTREACH_SMTP_URL": server.url})("run", "--until-idle")
    services = build(load_settings(ws, env=env))
    sent = Sent(cli, services, recorder, env)
    with services.engine.connect() as conn:
        for email, delivery_id, message_id in conn.execute(
            select(contacts.c.email, deliveries.c.id, deliveries.c.message_id)
            .join(contacts, contacts.c.id == deliveries.c.contact_id)
        ):  # fmt: skip
            sent.delivery[email], sent.message_id[email] = delivery_id, message_id
    assert len(sent.delivery) == len(PEOPLE) and all(sent.message_id.values())
    return sent


def returned(name: str, who: str, sent: Sent, *, verp: bool = True, message_id: bool = True,
             date: datetime | None = None) -> bytes:  # fmt: skip
    """A corpus message made about ``who``'s delivery: its VERP return path (or the
    plain one), its Message-ID (or one nobody sent), its address, dated now."""
    want = EXPECTED[name]
    raw = (CORPUS / name).read_bytes()
    if want["delivery"] is not None:
        old = verp_address(RETURN_PATH, want["delivery"], b"corpus-key").encode()
        raw = raw.replace(old, (sent.verp(who) if verp and who in PEOPLE else RETURN_PATH).encode())
    if want["original_message_id"]:
        real = sent.message_id.get(address(who)) if message_id else None
        raw = raw.replace(want["original_message_id"].encode(), (real or f"<never-{uuid.uuid4().hex}@example.org>").encode())
    if want["recipients"]:
        raw = raw.replace(want["recipients"][0]["address"].encode(), address(who).encode())
    head, sep, body = raw.partition(b"\n\n")
    lines = head.split(b"\n")
    for i, line in enumerate(lines):
        if line.lower().startswith(b"date:"):
            lines[i] = b"Date: " + format_datetime(date or datetime.now(UTC)).encode()
            break
    return b"\n".join(lines) + sep + body


def _append(server: DovecotServer, messages: list[bytes]) -> None:
    from imap_tools import MailBoxUnencrypted

    with MailBoxUnencrypted(server.host, server.port).login(server.user, server.password) as box:
        for raw in messages:
            box.append(raw, "INBOX")


def _database_text(services: Services) -> str:
    """Every value of every table, as text."""
    out = []
    with services.engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                out.append(repr(tuple(row)))
    return "\n".join(out)


@pytest.fixture
def imap() -> Iterator[DovecotServer]:
    with dovecot_server(required_dovecot(), password=PASSWORD) as server:
        yield server


@pytest.fixture
def sent(database_url: str, tmp_path: Path) -> Iterator[Sent]:
    s = send_first_step(tmp_path, database_url)
    yield s
    s.services.close()


@pytest.fixture
def sent_sqlite(tmp_path: Path) -> Iterator[Sent]:
    s = send_first_step(tmp_path, f"sqlite:///{tmp_path / 'store.db'}")
    yield s
    s.services.close()


# -- end to end: IMAP ---------------------------------------------------------------------


def test_fetch_suppresses_exactly_whom_the_returned_mail_says_and_only_once(sent: Sent, imap: DovecotServer) -> None:
    # the envelope sender of each delivery was its own signed return path
    for mail_from, _options, rcpt in sent.recorder.envelopes:
        assert mail_from == verp_address(RETURN_PATH, sent.delivery[rcpt], sent.key)
    # the next step is queued before anything comes back: its deliveries exist already
    due = datetime.now(UTC) + timedelta(seconds=4)
    sent.cli("send", "cop-partner", "--where", "tag:rtn country:FJ", "--campaign", "rtn", "--at", due.isoformat(), "--yes")
    messages = [
        returned("rfc3464-hard-5.1.1.eml", "hard", sent),
        returned("rfc5965-arf.eml", "complainer", sent),
        returned("rfc3834-auto-reply.eml", "auto", sent),
        returned("rfc3464-delayed.eml", "soft", sent),
        returned("gmail-dsn.eml", "by-id", sent, verp=False),  # the Message-ID only
        returned("microsoft365-ndr.eml", "by-address", sent, verp=False, message_id=False),  # address and time
        returned("qmail.eml", "stranger", sent, verp=False, message_id=False),  # nobody we sent to
        returned("unparseable-truncated.eml", "nobody", sent, verp=False),
    ]
    _append(imap, messages)
    env = {**sent.env, "OUTREACH_BOUNCE_IMAP_URL": imap.url, "OUTREACH_BOUNCE_IMAP_PASSWORD": PASSWORD}
    fetching = Cli(sent.cli.workspace, env=env)
    first = fetching("bounces", "fetch")
    assert "read 8 message(s): 4 hard, 1 soft, 1 complaint, 1 auto reply, 1 unparseable" in first.output
    assert "3 contact(s) now bounced" in first.output and "1 contact(s) now complained" in first.output
    assert imap.count("INBOX") == 0 and imap.count("Processed") == 8

    assert {p: sent.status(p) for p in PEOPLE} == {
        "hard": "bounced", "complainer": "complained", "auto": "active", "soft": "active",
        "by-id": "bounced", "by-address": "bounced", "fine": "active", "also-fine": "active"}  # fmt: skip
    events = sent.events()
    got = {(e["email"], e["event"], e["detail"]["matched_by"]) for e in events}
    assert got == {
        (address("hard"), "bounced", "verp"), (address("complainer"), "complained", "verp"),
        (address("auto"), "auto_reply", "verp"), (address("soft"), "soft_bounce", "verp"),
        (address("by-id"), "bounced", "message_id"), (address("by-address"), "bounced", "recipient")}  # fmt: skip
    assert all(e["delivery_id"] == sent.delivery[e["email"]] for e in events)
    hard = next(e["detail"] for e in events if e["email"] == address("hard"))
    assert hard["kind"] == "hard" and hard["status"] == "5.1.1" and "User unknown" in hard["reply"]
    assert hard["contact"] == "active -> bounced"
    soft = next(e["detail"] for e in events if e["email"] == address("soft"))
    assert soft["status"] == "4.4.1" and "1 of 3 within 15 days" in soft["reason"]

    # the unmatched and the unparseable are kept and listed, with why
    listed = fetching("bounces", "list").output
    assert "hard 4, soft 1, complaint 1, auto reply 1, unparseable 1, not a bounce 0; unmatched 1" in listed
    unmatched = fetching("bounces", "list", "--unmatched").output
    assert address("stranger") in unmatched and "no delivery matches" in unmatched
    assert address("hard") not in unmatched
    unparseable = fetching("bounces", "list", "--kind", "unparseable").output
    assert "truncated" in unparseable and "set aside" in unparseable
    # the log and the contact show them
    log = sent.cli("log", "--campaign", "rtn", "--limit", "0").output
    assert "complained" in log and "soft_bounce" in log and "hard bounce (5.1.1)" in log
    shown = sent.cli("contacts", "show", address("complainer")).output
    assert "complaint -> complained on delivery" in shown and re.search(r"status\s+complained", shown)

    # fetched again (the same messages mailed again): nothing changes
    _append(imap, messages)
    again = fetching("bounces", "fetch")
    assert "read 8 message(s)" in again.output and "8 read before, nothing done again" in again.output
    assert sent.events() == events
    assert "hard 4, soft 1" in fetching("bounces", "list").output

    # the next step skips exactly the suppressed ones
    assert wait_until(lambda: datetime.now(UTC) > due + timedelta(seconds=0.5), 30)
    recorder = Recorder()
    with SmtpServer(recorder) as server:
        Cli(sent.cli.workspace, env={**sent.env, "OUTREACH_SMTP_URL": server.url})("run", "--until-idle")
    assert sorted(r for r, _m, _raw in recorder.accepted) == sorted(address(p) for p in ("auto", "soft", "fine", "also-fine"))
    skipped = {e["email"]: e["detail"]["reason"] for e in sent.events("skipped")}
    assert set(skipped) == {address(p) for p in ("hard", "complainer", "by-id", "by-address")}
    assert skipped[address("complainer")] == "contact is complained (checked at send time)"
    with sent.services.engine.connect() as conn:  # the new deliveries' own return paths
        latest = dict(conn.execute(select(contacts.c.email, func.max(deliveries.c.id))
                                   .join(contacts, contacts.c.id == deliveries.c.contact_id).group_by(contacts.c.email)).all())  # fmt: skip
    for mail_from, _options, rcpt in recorder.envelopes:
        assert mail_from == verp_address(RETURN_PATH, latest[rcpt], sent.key) != sent.verp(rcpt.split("@")[0])

    # the report counts them as lost since the first step (a soft bounce or an auto-reply is not)
    report = campaign_report(sent.services, "rtn")
    first_step = next(row for row in report.steps if row.step == "first")
    assert first_step.lost == {"bounced": 3, "complained": 1}
    # the password is nowhere: outputs, the log, the database
    outputs = first.output + again.output + listed + unmatched + log + shown
    assert PASSWORD not in outputs and PASSWORD not in _database_text(sent.services)
    assert PASSWORD not in fetching("config").output and "bounce_imap_password" in fetching("config").output


def test_a_wrong_imap_password_is_an_error_that_never_shows_it(sent_sqlite: Sent, imap: DovecotServer) -> None:
    wrong = "Wr0ng/" + PASSWORD
    env = {**sent_sqlite.env, "OUTREACH_BOUNCE_IMAP_URL": imap.url, "OUTREACH_BOUNCE_IMAP_PASSWORD": wrong}
    failed = Cli(sent_sqlite.cli.workspace, env=env)("bounces", "fetch", ok=False)
    assert "refuses the login of bounces" in failed.output and "OUTREACH_BOUNCE_IMAP_PASSWORD" in failed.output
    assert wrong not in failed.output and PASSWORD not in failed.output
    unset = Cli(sent_sqlite.cli.workspace, env=sent_sqlite.env)("bounces", "fetch", ok=False)
    assert "no bounce mailbox is set" in unset.output and "OUTREACH_BOUNCE_IMAP_URL" in unset.output
    no_password = {**sent_sqlite.env, "OUTREACH_BOUNCE_IMAP_URL": imap.url}
    assert "OUTREACH_BOUNCE_IMAP_PASSWORD" in Cli(sent_sqlite.cli.workspace, env=no_password)(
        "bounces", "fetch", "--check", ok=False).output  # fmt: skip
    checked = Cli(sent_sqlite.cli.workspace, env=env)("bounces", "fetch", "--check").output
    assert "as bounces at 127.0.0.1" in checked and wrong not in checked
    assert wrong not in _database_text(sent_sqlite.services)


def test_outreach_run_reads_the_bounce_mailbox_beside_the_sender(sent_sqlite: Sent, imap: DovecotServer) -> None:
    """A running sender fetches at start and every bounce_fetch_minutes; a mailbox it
    cannot read is a warning, and sending goes on."""
    ws = sent_sqlite.cli.workspace
    env = {**os.environ, **sent_sqlite.env, "OUTREACH_BOUNCE_IMAP_URL": imap.url,
           "OUTREACH_BOUNCE_IMAP_PASSWORD": PASSWORD, "OUTREACH_BOUNCE_FETCH_MINUTES": "0.02"}  # fmt: skip
    runner = subprocess.Popen([str(OUTREACH), "-w", str(ws), "run", "--workers", "1"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        imap.deliver(returned("rfc3464-hard-5.1.1.eml", "hard", sent_sqlite))
        assert wait_until(lambda: sent_sqlite.status("hard") == "bounced", 60)
        imap.deliver(returned("rfc5965-arf.eml", "complainer", sent_sqlite))  # a later round reads it
        assert wait_until(lambda: sent_sqlite.status("complainer") == "complained", 60)
    finally:
        runner.send_signal(signal.SIGTERM)
        output = runner.communicate(timeout=60)[0].decode()
    assert runner.returncode == 0, output
    assert "bounce mailbox: read 1 message(s)" in output and PASSWORD not in output

    wrong = {**env, "OUTREACH_BOUNCE_IMAP_PASSWORD": "not-" + PASSWORD}
    due = datetime.now(UTC) + timedelta(seconds=1)
    sent_sqlite.cli("send", "cop-partner", "--where", "tag:rtn", "--campaign", "rtn", "--at", due.isoformat(), "--yes")
    recorder = Recorder()
    said = ws.parent / "run.out"
    with SmtpServer(recorder) as server, said.open("wb") as out:
        runner = subprocess.Popen([str(OUTREACH), "-w", str(ws), "run", "--workers", "1"],
                                  env={**wrong, "OUTREACH_SMTP_URL": server.url}, stdout=out, stderr=out)  # fmt: skip
        try:
            assert wait_until(lambda: len(recorder.accepted) == len(PEOPLE) - 2, 60)  # sent all the same
            assert wait_until(lambda: b"cannot read the bounce mailbox" in said.read_bytes(), 60)
        finally:
            runner.send_signal(signal.SIGTERM)
            runner.wait(60)
    output = said.read_text()
    assert runner.returncode == 0, output
    assert "refuses the login of bounces" in output and "trying again in 0.02 min" in output
    assert "not-" + PASSWORD not in output and PASSWORD not in output


# -- files and standard input ---------------------------------------------------------------


def test_ingest_reads_a_maildir_and_standard_input(sent_sqlite: Sent, tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "bounces", create=True)
    box.add(returned("postfix-plain.eml", "hard", sent_sqlite))
    box.add(returned("exchange-automatic-reply.eml", "auto", sent_sqlite))
    box.add(returned("not-a-bounce.eml", "nobody", sent_sqlite))
    out = sent_sqlite.cli("bounces", "ingest", str(tmp_path / "bounces")).output
    assert "read 3 message(s): 1 hard, 1 auto reply, 1 not a bounce" in out
    assert sent_sqlite.status("hard") == "bounced" and sent_sqlite.status("auto") == "active"
    assert len(os.listdir(tmp_path / "bounces" / ".Processed" / "cur")) == 3
    assert "no message to read" in sent_sqlite.cli("bounces", "ingest", str(tmp_path / "bounces")).output

    arf = returned("rfc5965-arf.eml", "complainer", sent_sqlite)
    piped = sent_sqlite.cli("bounces", "ingest", "-", input=arf.decode())
    assert "1 complaint" in piped.output and sent_sqlite.status("complainer") == "complained"
    again = sent_sqlite.cli("bounces", "ingest", "-", input=arf.decode())  # the MTA delivered it twice
    assert "1 read before" in again.output and len(sent_sqlite.events("complained")) == 1
    junk = sent_sqlite.cli("bounces", "ingest", "-", input="\x00\x01 not mail at all\n")
    assert "1 unparseable" in junk.output
    listed = sent_sqlite.cli("bounces", "list", "--kind", "unparseable").output
    assert "not a mail message" in listed and "stdin" in listed
    row = sent_sqlite.services.inbound.messages(kind="unparseable")[0]
    raw = sent_sqlite.cli("bounces", "show", str(row["id"]), "--raw").stdout_bytes
    assert raw == b"\x00\x01 not mail at all\n"
    matched = sent_sqlite.services.inbound.messages(kind="complaint")[0]
    refused = sent_sqlite.cli("bounces", "show", str(matched["id"]), "--raw", ok=False).output
    assert "was not kept" in refused
    assert "no returned message 999" in sent_sqlite.cli("bounces", "show", "999", ok=False).output
    missing = sent_sqlite.cli("bounces", "ingest", str(tmp_path / "nowhere"), ok=False).output
    assert "no such file or folder" in missing


def test_a_message_read_by_two_processes_at_once_acts_once(sent: Sent) -> None:
    raw = returned("rfc3464-hard-5.1.1.eml", "hard", sent)
    start = threading.Barrier(4)
    results: list[bounces.Tally] = []

    def read() -> None:
        start.wait()
        services = build(sent.services.settings)
        try:
            results.append(bounces.ingest(services, [InboundMessage("stdin", raw)]))
        finally:
            services.close()

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(t.again for t in results) == [0, 1, 1, 1]
    assert len(sent.events("bounced")) == 1 and sent.status("hard") == "bounced"
    with sent.services.engine.connect() as conn:
        history = conn.execute(text("SELECT count(*) FROM consent_events WHERE status_to = 'bounced'")).scalar()
    assert history == 1


# -- what it means -----------------------------------------------------------------------------


def test_soft_bounces_reaching_the_limit_become_hard(sent: Sent) -> None:
    services = sent.services
    # two more deliveries to the same contact, in later steps of the campaign
    for n in (2, 3):
        due = datetime.now(UTC) - timedelta(seconds=1)
        sent.cli("send", "cop-partner", "--where", f"tag:rtn country:FJ lang:en -tag:x{n}", "--campaign", "rtn",
                 "--at", due.isoformat(), "--yes")  # fmt: skip
    with services.engine.connect() as conn:
        ids = list(conn.execute(select(deliveries.c.id, deliveries.c.message_id)
                                .join(contacts, contacts.c.id == deliveries.c.contact_id)
                                .where(contacts.c.email == address("soft")).order_by(deliveries.c.id)))  # fmt: skip
    assert len(ids) == 3
    # delays of one message twice count once; then a second and a third message
    for number, (delivery_id, message_id) in enumerate([ids[0], ids[0], ids[1], ids[2]]):
        sent.delivery[address("soft")], sent.message_id[address("soft")] = delivery_id, message_id
        raw = returned("rfc3464-delayed.eml", "soft", sent).replace(b"4.4.1", f"4.4.{number + 1}".encode())
        bounces.ingest(services, [InboundMessage(f"test {number}", raw)])
        want = "bounced" if number == 3 else "active"
        assert sent.status("soft") == want, number
    events = sent.events()
    assert [e["event"] for e in events] == ["soft_bounce", "soft_bounce", "soft_bounce", "bounced"]
    last = events[-1]["detail"]
    assert last["kind"] == "soft" and "3 soft-bounced messages within 15 days" in last["reason"]
    # reactivated, the count starts again
    sent.cli("contacts", "reactivate", address("soft"), "--reason", "the mailbox is fixed")
    raw = returned("rfc3464-delayed.eml", "soft", sent).replace(b"4.4.1", b"4.3.2")
    bounces.ingest(services, [InboundMessage("after", raw)])
    assert sent.status("soft") == "active" and sent.events()[-1]["event"] == "soft_bounce"


def test_old_soft_bounces_do_not_count_and_an_old_delivery_is_not_guessed(sent_sqlite: Sent) -> None:
    services = sent_sqlite.services
    long_ago = datetime.now(UTC) - timedelta(days=40)
    raw = returned("microsoft365-ndr.eml", "by-address", sent_sqlite, verp=False, message_id=False, date=long_ago)
    tally = bounces.ingest(services, [InboundMessage("old", raw)])
    assert tally.unmatched == 1 and sent_sqlite.status("by-address") == "active"
    listed = sent_sqlite.cli("bounces", "list", "--unmatched").output
    assert address("by-address") in listed


def test_an_import_never_resubscribes_a_complained_or_bounced_contact(sent_sqlite: Sent, tmp_path: Path) -> None:
    bounces.ingest(sent_sqlite.services, [InboundMessage("a", returned("rfc5965-arf.eml", "complainer", sent_sqlite)),
                                          InboundMessage("b", returned("gmail-dsn.eml", "hard", sent_sqlite))])  # fmt: skip
    assert (sent_sqlite.status("complainer"), sent_sqlite.status("hard")) == ("complained", "bounced")
    csv = write_csv(tmp_path / "again.csv", "email,name,kind,status\n"
                    f"{address('complainer')},Complainer Again,partner,active\n"
                    f"{address('hard')},Hard Again,partner,\n")  # fmt: skip
    sent_sqlite.cli("contacts", "import", str(csv))
    assert (sent_sqlite.status("complainer"), sent_sqlite.status("hard")) == ("complained", "bounced")
    assert sent_sqlite.services.contacts.get(address("complainer")).name == "Complainer Again"  # type: ignore[union-attr]
    # nor does a file that calls them bounced (which reactivate would then undo)
    csv = write_csv(tmp_path / "bounced.csv", f"email,status\n{address('complainer')},bounced\n")
    sent_sqlite.cli("contacts", "import", str(csv))
    assert sent_sqlite.status("complainer") == "complained"
    # reactivate undoes a wrong bounce, never a complaint
    refused = sent_sqlite.cli("contacts", "reactivate", address("complainer"), "--reason", "x", ok=False).output
    assert "complained, not bounced" in refused and sent_sqlite.status("complainer") == "complained"


def test_a_complaint_after_an_unsubscribe_is_kept_and_an_auto_reply_changes_nobody(sent_sqlite: Sent) -> None:
    sent_sqlite.cli("contacts", "unsubscribe", address("complainer"))
    bounces.ingest(sent_sqlite.services, [
        InboundMessage("a", returned("rfc5965-arf.eml", "complainer", sent_sqlite)),
        InboundMessage("b", returned("abwesenheit-encoded-subject.eml", "auto", sent_sqlite)),
        InboundMessage("c", returned("rfc3834-auto-reply.eml", "complainer", sent_sqlite)),
    ])  # fmt: skip
    assert sent_sqlite.status("complainer") == "complained" and sent_sqlite.status("auto") == "active"
    counts = sent_sqlite.services.inbound.counts()
    assert counts["auto_reply"] == 2 and counts["complaint"] == 1


# -- settings ---------------------------------------------------------------------------------


def test_the_settings_of_returned_mail(tmp_path: Path) -> None:
    base = {"OUTREACH_SECRET_KEY": "k"}
    settings = load_settings(tmp_path, env={**base, "OUTREACH_RETURN_PATH": RETURN_PATH})
    envelope = bounces.envelope_for(settings)
    assert envelope is not None and envelope(42) == RETURN_PATH
    verp = bounces.envelope_for(load_settings(tmp_path, env={**base, "OUTREACH_RETURN_PATH": RETURN_PATH,
                                                             "OUTREACH_VERP": "yes"}))  # fmt: skip
    assert verp is not None and verp(42) == verp_address(RETURN_PATH, 42, b"k")
    assert bounces.envelope_for(load_settings(tmp_path, env=base)) is None
    with pytest.raises(ConfigError, match="no return path is set"):
        load_settings(tmp_path, env={"OUTREACH_VERP": "true"})
    with pytest.raises(ConfigError, match="not a bare address"):
        load_settings(tmp_path, env={"OUTREACH_RETURN_PATH": "Bounces <bounces@example.org>"})
    with pytest.raises(ConfigError, match="holds a password") as caught:
        load_settings(tmp_path, env={"OUTREACH_BOUNCE_IMAP_URL": f"imaps://b:{PASSWORD}@h/INBOX"})
    assert PASSWORD not in str(caught.value)
    (tmp_path / "outreach.toml").write_text(f'[bounces]\nimap_password = "{PASSWORD}"\n')
    with pytest.raises(ConfigError, match="holds a secret") as in_file:
        load_settings(tmp_path, env={})
    assert PASSWORD not in str(in_file.value)
    (tmp_path / "outreach.toml").write_text('[email]\nreturn_path = "bounces+x@example.org"\nverp = true\n'
                                            "[bounces]\nsoft_limit = 2\nsoft_days = 7\nfetch_minutes = 0.5\n")  # fmt: skip
    settings = load_settings(tmp_path, env=base)
    assert (settings.soft_limit, settings.soft_days, settings.bounce_fetch_minutes) == (2, 7, 0.5)
    with pytest.raises(ConfigError, match="cannot take VERP"):
        bounces.envelope_for(settings)
    (tmp_path / "outreach.toml").write_text("[bounces]\nsoft_limit = 0\n")
    with pytest.raises(ConfigError, match="not a whole number above 0"):
        load_settings(tmp_path, env=base)
    assert load_settings(tmp_path.parent, env={**base, "OUTREACH_BOUNCE_IMAP_URL": "imaps://b@h/INBOX",
                                               "OUTREACH_BOUNCE_IMAP_PASSWORD": PASSWORD}).rehearsal().bounce_imap_url is None  # fmt: skip


def test_migration_0007_makes_what_the_models_declare(database_url: str) -> None:
    from outreach.db.engine import open_database

    engine = open_database(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    mine = ("inbound_messages", "inbound_recipients", "ix_deliveries_message_id", "ix_deliveries_contact_id")
    ours = [d for d in diff if any(name in repr(d) for name in mine)]
    assert not ours, ours


def test_help_of_every_bounces_command_has_an_example(tmp_path: Path) -> None:
    for command in ("ingest", "fetch", "list", "show"):
        assert "Example: " in Cli(tmp_path)("bounces", command, "--help").output
