"""``outreach log`` (filters, csv and json streamed, --limit 0) and ``outreach report``
(every format) on a real campaign sent to a real SMTP server on 127.0.0.1, on SQLite
and PostgreSQL: a plan with a launch wave (a press release, an X thread, an email to
partners) and a Pacific wave (an email to governments), and an ad hoc send into it.
Some recipients are refused (no such user, spam, a reply carrying markup), one is
unsubscribed after the send was queued (skipped at send time), two unsubscribe after
they got it. The log's keyset walk is checked on 30,000 events written in one go."""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import random
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, event, insert, make_url, select

from outreach import review
from outreach.app import Services, build
from outreach.config import load_settings
from outreach.db import log_pages
from outreach.db.consent import SqlConsent
from outreach.db.models import contacts, deliveries, delivery_events, steps
from outreach.domain.audience import parse
from tests.conftest import ROOT, Cli
from tests.smtp_server import Faults, Recorder, SmtpServer

LINKS = {"guidelines": "https://www.example.org/g", "press": "https://www.example.org/p",
         "checklist": "https://www.example.org/c", "pledge": "https://www.example.org/pl"}  # fmt: skip
SCRIPT_REPLY = '554 5.6.0 <script>alert("x")</script> content refused'


@dataclass
class Sent:
    """The campaign as it went out, and what the test knows about it."""

    cli: Cli
    services: Services
    recorder: Recorder
    partners: list[str]  # the launch wave's email audience
    governments: list[str]  # the Pacific wave's
    media: list[str]  # the ad hoc send's
    unknown: list[str] = field(default_factory=list)  # 550 5.1.1 at RCPT: bounced
    spam: str = ""  # 554 5.7.1 at DATA
    script: str = ""  # a reply with <script> in it
    skipped: str = ""  # unsubscribed after the send was queued
    left: list[str] = field(default_factory=list)  # unsubscribed after they got it

    def log(self, *args: str) -> str:
        return self.cli("log", *args).stdout

    def csv_rows(self, *args: str) -> list[dict[str, str]]:
        return list(csv.DictReader(io.StringIO(self.log("--format", "csv", *args))))


def _plan(ws: Path) -> Path:
    """Steps due a moment ago: launch wave (release, thread, partners), Pacific wave."""
    launch = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    at = f"{launch:%Y-%m-%d %H:%M} UTC"
    path = ws / "schedules" / "soon.yaml"
    path.write_text(yaml.safe_dump({
        "campaign": {"id": "soon", "name": "Soon <b>launch</b>", "from": "team@example.org"},
        "launch": at, "links": LINKS,
        "waves": [{"id": "pacific", "launch": at, "audience": "country:FJ,WS,TO"}],
        "steps": [
            {"id": "release", "channel": "press", "template": "cop-release", "at": "T-1m", "waves": ["launch"]},
            {"id": "thread", "channel": "x", "template": "cop-launch", "at": "T-1m", "waves": ["launch"]},
            {"id": "partners", "channel": "email", "template": "cop-partner", "audience": "kind:partner",
             "at": "T-1m", "waves": ["launch"]},
            {"id": "governments", "channel": "email", "template": "cop-partner", "audience": "kind:government",
             "at": "T-1m", "waves": ["pacific"]},
        ],
    }, sort_keys=False))  # fmt: skip
    return path


def _database(request: pytest.FixtureRequest, base: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{base / 'store.db'}"
    admin_url = request.getfixturevalue("postgres_server")
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")

    def drop() -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()

    request.addfinalizer(drop)
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def sent(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sent]:
    """The campaign, sent once per backend for every test of this module."""
    base = tmp_path_factory.mktemp("campaign")
    url = _database(request, base)
    ws = base / "ws"
    for folder in ("contacts", "templates", "schedules"):
        shutil.copytree(ROOT / folder, ws / folder)
    env = {"OUTREACH_DATABASE_URL": url, "OUTREACH_SECRET_KEY": "k"}
    services = build(load_settings(ws, env=env))
    cli = Cli(ws, env=env)
    cli("contacts", "import", *map(str, sorted((ws / "contacts").glob("*.csv"))))

    def emails(where: str) -> list[str]:
        return sorted(c.email for c in services.contacts.find(parse(f"({where}) status:active")))

    partners, media = emails("kind:partner"), emails("kind:media")
    governments = emails("kind:government country:FJ,WS,TO")
    s = Sent(cli, services, Recorder(), partners, governments, media,
             unknown=partners[:2], spam=partners[2], script=governments[0], skipped=media[0],
             left=partners[3:5])  # fmt: skip
    s.recorder.faults = Faults(no_such_user=set(s.unknown), rejected={s.spam},
                               data_replies={s.script: SCRIPT_REPLY})  # fmt: skip
    plan = _plan(ws)
    cli("schedule", str(plan))
    cli("approve", "soon", "--by", "T")
    at = datetime.now(UTC) + timedelta(seconds=2)
    cli("send", "cop-partner", "--where", "kind:media", "--campaign", "soon", "--at", at.isoformat(), "--yes")
    cli("contacts", "unsubscribe", s.skipped)  # queued, then unsubscribed: skipped at send time
    while datetime.now(UTC) < at + timedelta(seconds=0.5):
        time.sleep(0.1)
    with SmtpServer(s.recorder) as server:
        Cli(ws, env={**env, "OUTREACH_SMTP_URL": server.url})("run", "--until-idle")
    # after they got it: one unsubscribes with the link (an event on their delivery), one by command
    consent = SqlConsent(services.engine)
    consent.unsubscribe(services.contacts.get(s.left[0]).id, "soon", "one-click")
    cli("contacts", "unsubscribe", s.left[1])
    yield s
    services.close()


def _db_events(services: Services, campaign: str | None = None) -> list[int]:
    query = select(delivery_events.c.id).order_by(delivery_events.c.id)
    if campaign:
        query = query.join(steps, steps.c.id == delivery_events.c.step_id).where(steps.c.campaign == campaign)
    with services.engine.connect() as conn:
        return list(conn.execute(query).scalars())


# -- outreach log -------------------------------------------------------------------------


def test_csv_has_the_header_every_event_and_whole_addresses(sent: Sent) -> None:
    text = sent.log("--format", "csv", "--limit", "0")
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == review.LOG_COLUMNS
    records = [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    assert [int(r["id"]) for r in records] == _db_events(sent.services)  # all, oldest first
    delivered = {r["email"] for r in records if r["event"] == "sent" and r["channel"] == "email"}
    assert delivered == {rcpt for rcpt, _m, _raw in sent.recorder.accepted}  # addresses whole
    assert max(len(e) for e in delivered) > 40
    failed = {r["email"]: r for r in records if r["event"] == "failed"}
    assert failed[sent.script]["reply"] == SCRIPT_REPLY.split(" ", 1)[1]
    assert failed[sent.script]["code"] == "554" and failed[sent.script]["stage"] == "end of data"
    assert json.loads(failed[sent.unknown[0]]["detail"])["code"] == 550
    # the default is the latest 50, oldest first
    latest = sent.csv_rows()
    assert [int(r["id"]) for r in latest] == _db_events(sent.services)[-50:]


def test_json_is_one_object_per_line(sent: Sent) -> None:
    lines = sent.log("--format", "json", "--limit", "0").splitlines()
    objects = [json.loads(line) for line in lines]
    assert [o["id"] for o in objects] == _db_events(sent.services)
    assert all(tuple(o) == review.LOG_COLUMNS for o in objects)
    posts = [o for o in objects if o["channel"] == "x" and o["event"] == "sent"]
    assert len(posts) == 3 and all(o["detail"]["post_id"] == o["post_id"] for o in posts)
    assert [o["recipient"] for o in posts] == ["X post 1", "X post 2", "X post 3"]
    assert len(sent.log("--format", "json", "--limit", "7").splitlines()) == 7


def test_each_filter_narrows_the_log(sent: Sent) -> None:
    every = sent.csv_rows("--limit", "0")
    assert {r["campaign"] for r in every} == {"soon"}

    def only(*args: str) -> list[dict[str, str]]:
        rows = sent.csv_rows("--limit", "0", *args)
        assert rows and len(rows) < len(every), args
        return rows

    partners = only("--step", "partners")  # a plan step's id: all its firings
    assert {r["step"].split("@")[0] for r in partners} == {"partners"}
    key = partners[0]["step"]
    assert only("--step", key) == partners
    pacific = only("--wave", "pacific")
    assert {r["step"].split("@")[0] for r in pacific} == {"governments"} and {r["wave"] for r in pacific} == {"pacific"}
    launch = only("--wave", "launch")
    assert {r["step"].split("@")[0] for r in launch} == {"release", "thread", "partners"}
    assert {r["channel"] for r in only("--channel", "x")} == {"x"}
    assert {r["recipient"] for r in only("--channel", "press", "--event", "sent")} == {"newsroom"}
    failed = only("--event", "failed")
    assert sorted(r["email"] for r in failed) == sorted([*sent.unknown, sent.spam, sent.script])
    skipped = only("--event", "skipped")
    assert [r["email"] for r in skipped] == [sent.skipped]
    assert "unsubscribed" in skipped[0]["reason"]
    mine = only("--contact", sent.unknown[0].upper())  # case-insensitive, exact
    assert {r["email"] for r in mine} == {sent.unknown[0]}
    assert {r["event"] for r in mine} >= {"materialized", "sending", "failed"}
    assert sent.csv_rows("--campaign", "soon", "--limit", "0") == every
    assert sent.csv_rows("--campaign", "nope", "--limit", "0") == []
    assert only("--campaign", "soon", "--wave", "pacific", "--event", "failed")[0]["email"] == sent.script
    # since / until: inclusive instants; a date is the whole day (UTC)
    middle = every[len(every) // 2]
    since = only("--since", middle["at"])
    assert since == [r for r in every if r["at"] >= middle["at"]]
    until = only("--until", middle["at"])
    assert until == [r for r in every if r["at"] <= middle["at"]]
    local = datetime.fromisoformat(middle["at"]).astimezone(timezone(timedelta(hours=3))).isoformat()
    assert sent.csv_rows("--since", local, "--limit", "0") == since  # an offset is honoured
    today = datetime.now(UTC).date()
    assert sent.csv_rows("--since", f"{today}", "--until", f"{today}", "--limit", "0") == every
    assert sent.csv_rows("--until", f"{today - timedelta(days=1)}", "--limit", "0") == []


def test_a_bad_instant_or_limit_is_a_clear_error(sent: Sent) -> None:
    bad = sent.cli("log", "--since", "2014-13-05", ok=False).output
    assert "--since '2014-13-05' is not a date or a date and time" in bad
    assert "2014-09-05T10:00+03:00" in bad
    assert "--until 'tomorrow'" in sent.cli("log", "--until", "tomorrow", ok=False).output
    assert "--limit -1" in sent.cli("log", "--limit", "-1", ok=False).output


def test_the_table_keeps_its_shape(sent: Sent) -> None:
    out = sent.log("--event", "failed", "--wave", "pacific")
    assert "Steps" in out and "Events (latest 1)" in out
    assert "governments@" in out and "partners@" not in out
    assert "Events (all " in sent.log("--limit", "0", "--channel", "press")


def test_pages_walk_back_by_keyset(sent: Sent) -> None:
    flt = review.LogFilter(campaign="soon", channel="email", event="sent")
    seen: list[int] = []
    before = None
    while True:
        page, before = review.log_page(sent.services, flt, before=before, limit=7)
        assert len(page) <= 7
        seen += [e["id"] for e in page]
        if before is None:
            break
        assert before == page[-1]["id"]
    wanted = [int(r["id"]) for r in sent.csv_rows("--limit", "0", "--channel", "email", "--event", "sent")]
    assert seen == wanted[::-1]
    e = review.log_page(sent.services, flt, limit=1)[0][0]
    assert {"id", "at", "event", "campaign", "step", "wave", "channel", "delivery_id", "email", "part",
            "detail"} <= set(e)  # fmt: skip
    needle = sent.spam.split("@")[0][1:].upper()
    found = review.log_page(sent.services, review.LogFilter(search=needle), limit=10_000)[0]
    addresses = {r["email"] for r in sent.csv_rows("--limit", "0") if r["email"]}
    assert {x["email"] for x in found} == {a for a in addresses if needle.casefold() in a.casefold()} >= {sent.spam}
    assert review.log_page(sent.services, review.LogFilter(search="%"), limit=5) == ([], None)


# -- outreach report ---------------------------------------------------------------------


def _expected(sent: Sent) -> dict[str, dict[str, int]]:
    p, g, m = len(sent.partners), len(sent.governments), len(sent.media)
    return {
        "partners": {"planned": p, "sent": p - 3, "failed": 3, "skipped": 0, "unsubscribed": 2},
        "governments": {"planned": g, "sent": g - 1, "failed": 1, "skipped": 0, "unsubscribed": 0},
        "media": {"planned": m, "sent": m - 1, "failed": 0, "skipped": 1, "unsubscribed": 0},
        "release": {"planned": 1, "sent": 1, "failed": 0, "skipped": 0, "unsubscribed": 0},
        "thread": {"planned": 3, "sent": 3, "failed": 0, "skipped": 0, "unsubscribed": 0},
    }


def _name(step: str) -> str:
    return "media" if step.startswith("send-") else step.split("@")[0]


def test_the_report_counts_what_happened(sent: Sent) -> None:
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(sent.services.engine, "before_cursor_execute", count)
    report = review.campaign_report(sent.services, "soon")
    event.remove(sent.services.engine, "before_cursor_execute", count)
    assert len(statements) == 9, statements  # set-based: the same for 5 steps or 500
    got = {_name(r.step): {"planned": r.planned, "sent": r.n("sent"), "failed": r.n("failed"),
                           "skipped": r.n("skipped"), "unsubscribed": r.lost.get("unsubscribed", 0)}
           for r in report.steps}  # fmt: skip
    assert got == _expected(sent)
    waves = {_name(r.step): r.wave for r in report.steps}
    assert waves == {"partners": "launch", "governments": "pacific", "media": None, "release": "launch",
                     "thread": "launch"}  # fmt: skip
    for r in report.steps:
        assert r.first_sent is not None and r.first_sent <= r.last_sent  # type: ignore[operator]
        assert r.first_lag is not None and timedelta(0) < r.first_lag < timedelta(minutes=5)
    failures = {(f.code, f.reply): f for f in report.failures}
    unknown = failures[(550, "5.1.1 <<recipient>>: Recipient address rejected: User unknown")]
    assert (unknown.step, unknown.wave, unknown.count, unknown.stage) == ("partners", "launch", 2, "RCPT")
    assert failures[(554, "5.7.1 Message rejected as spam")].count == 1
    script = failures[(554, SCRIPT_REPLY.split(" ", 1)[1])]
    assert (script.step, script.wave, script.count) == ("governments", "pacific", 1)
    (skip,) = report.skips
    assert skip.count == 1 and "contact is unsubscribed" in skip.reason and _name(skip.step) == "media"
    assert sorted(p.channel for p in report.published) == ["press", "x", "x", "x"]
    (release,) = [p for p in report.published if p.channel == "press"]
    assert release.url and release.url.startswith(report.newsroom) and release.url.endswith(".html")
    posts = [p for p in report.published if p.channel == "x"]
    assert [(p.part, p.post_id) for p in posts] == [(i, f"local-{i + 1}") for i in range(3)]
    total = sum(n for _t, n in report.timeline)
    assert total == sum(r.n("sent") for r in report.steps) == report.totals["sent"]
    assert report.totals["planned"] == sum(e["planned"] for e in _expected(sent).values())


def test_the_report_in_every_format(sent: Sent, tmp_path: Path) -> None:
    expected = _expected(sent)
    text = sent.cli("report", "soon").stdout
    assert "Campaign soon: Soon <b>launch</b>" in text and "approved by T" in text
    cells = re.split(r"\s{2,}", next(x for x in text.splitlines() if x.startswith("governments ")))
    g = expected["governments"]
    assert cells[1:3] == ["pacific", "email"] and cells[4:9] == [str(g["planned"]), str(g["sent"]), "1", "0", "0"]
    assert "contact is unsubscribed (checked at send time)" in text
    md = sent.cli("report", "soon", "--format", "markdown").stdout
    p = expected["partners"]
    assert "| partners | launch | email |" in md
    assert f"| {p['planned']} | {p['sent']} | 3 | 0 | 0 | 0 | 0 | 2 | 0 | 0 |" in md
    assert "&lt;script&gt;" in md and "<script>" not in md and "&lt;b&gt;" in md
    rows = {_name(r["step"]): r for r in csv.DictReader(io.StringIO(sent.cli("report", "soon", "--format", "csv").stdout))}
    for name, numbers in expected.items():
        assert {k: int(rows[name][k]) for k in numbers} == numbers, name
    assert rows["partners"]["wave"] == "launch" and "2x 550 5.1.1" in rows["partners"]["failure_reasons"]
    assert rows["thread"]["post_ids"] == "local-1 local-2 local-3"
    data = json.loads(sent.cli("report", "soon", "--format", "json").stdout)
    assert {_name(s["step"]): s["planned"] for s in data["steps"]} == {k: v["planned"] for k, v in expected.items()}
    assert data["totals"]["failed"] == 4 and data["totals"]["unsubscribed"] == 2
    out = tmp_path / "report.html"
    sent.cli("report", "soon", "--format", "html", "--output", str(out))
    page = out.read_text("utf-8")
    assert page.count("<svg") == 2 and 'class="planned"' in page and 'class="bar"' in page
    assert "<script" not in page.lower() and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert "Soon &lt;b&gt;launch&lt;/b&gt;" in page
    report = review.campaign_report(sent.services, "soon")
    allowed = {report.newsroom, *(x.url for x in report.published if x.url)}
    linked = re.findall(r"""(?:src|href)\s*=\s*["']?([^"' >]+)""", page, re.IGNORECASE)
    assert linked and set(linked) <= allowed, set(linked) - allowed
    assert not re.search(r"@import|url\(", page)  # nothing fetched by the CSS either
    for fmt in ("table", "markdown", "csv", "json", "html"):
        assert review.render_report(report, fmt)


def test_hostile_values_are_escaped_in_every_format(sent: Sent) -> None:
    """What servers and stored facts say is shown as text: an address with markup in a
    reply, a link that is not http(s), a Markdown table breaker, a terminal escape."""
    report = review.campaign_report(sent.services, "soon")
    evil = '<script>alert(1)</script>@example.org | [x](javascript:alert(2)) \x1b[31m'
    hostile = dataclasses.replace(
        report,
        failures=[dataclasses.replace(report.failures[0], reply=f"5.1.1 <{evil}>: unknown")],
        published=[dataclasses.replace(report.published[0], url="javascript:alert(3)", post_id=evil)],
    )
    page = review.render_report(hostile, "html")
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;@example.org" in page
    assert 'href="javascript' not in page and "javascript:alert(3)" in page
    md = review.render_report(hostile, "markdown")
    assert "<script>" not in md and "\\|" in md and "\\[x\\]" in md and "\x1b" not in md
    text = review.render_report(hostile, "table")
    assert "\x1b" not in text and "\\x1b[31m" in text
    assert json.loads(review.render_report(hostile, "json"))["failures"][0]["reply"].startswith("5.1.1 <<script>")


def test_an_unknown_campaign_lists_the_known_ones(sent: Sent) -> None:
    out = sent.cli("report", "nope", ok=False).output
    assert "no campaign 'nope' is scheduled (scheduled: soon)" in out


# -- the keyset walk over many events ------------------------------------------------------


def test_iter_log_streams_every_event_in_order_a_chunk_at_a_time(tmp_path: Path, database_url: str) -> None:
    services = build(load_settings(tmp_path, env={"OUTREACH_DATABASE_URL": database_url}))
    try:
        step = services.outbox.ensure_step(campaign="big", key="bulk", channel="email", template="t",
                                           audience="kind:industry", send_at=datetime.now(UTC))  # fmt: skip
        other = services.outbox.ensure_step(campaign="other", key="bulk", channel="x", template="t",
                                            audience="", send_at=datetime.now(UTC))  # fmt: skip
        at = datetime(2014, 9, 5, 7, tzinfo=UTC)
        rows = [{"step_id": other.id if i % 10 == 9 else step.id, "delivery_id": None,
                 "at": at + timedelta(milliseconds=i), "event": "sent" if i % 3 else "deferred",
                 "detail": {"n": i}} for i in range(30_000)]  # fmt: skip
        with services.engine.begin() as conn:
            conn.execute(insert(delivery_events), rows)
        reads: list[str] = []

        def count(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
            if "FROM delivery_events" in statement:
                reads.append(statement)

        event.listen(services.engine, "before_cursor_execute", count)
        got = [e["detail"]["n"] for e in review.iter_log(services, review.LogFilter(campaign="big"), chunk=1000)]
        event.remove(services.engine, "before_cursor_execute", count)
        assert got == [i for i in range(30_000) if i % 10 != 9]
        assert len(reads) == 2 * 27 + 1  # 27,000 in chunks of 1,000 (ids, then rows), and the empty read that ends it
        sent_only = review.LogFilter(campaign="big", event="sent", since=at + timedelta(seconds=20))
        expected = [i for i in range(20_000, 30_000) if i % 10 != 9 and i % 3]
        assert [e["detail"]["n"] for e in review.iter_log(services, sent_only, chunk=777)] == expected
        latest = [e["detail"]["n"] for e in review.iter_log(services, sent_only, latest=5)]
        assert latest == expected[-5:]
        # a campaign of ad hoc sends only has a report too; its sends counted per span of time
        report = review.campaign_report(services, "big")
        assert report.status.startswith("ad hoc") and [r.step for r in report.steps] == ["bulk"]
        sends = [i for i in range(30_000) if i % 10 != 9 and i % 3]
        assert sum(n for _t, n in report.timeline) == len(sends)
        assert report.timeline[0][0] <= at and report.timeline[-1][0] >= at + timedelta(seconds=29 - report.bucket_seconds)
        assert report.steps[0].first_sent == at + timedelta(milliseconds=1)
    finally:
        services.close()


# -- every filter, against a plain reading of the whole log ------------------------------


@dataclass(frozen=True)
class Logged:
    """One event as the reference reads it: the plain join, filtered here."""

    id: int
    at: datetime
    event: str
    step_id: int
    email_key: str | None


PEOPLE = ("ana.tuilagi@ngo.example.org", "Ben.Okafor@Press.example.com", "sione_fifita@gov.example.to",
          "mia.kamau@isp.example.net", "pat.lee@mobile.example.com", "losa.tupou@gov.example.to",
          "omar.haddad@ngo.example.org", "ines.garcia@press.example.com", "kofi.mensah@isp.example.net",
          "lena.novak@mobile.example.com", "raj.patel@ngo.example.org", "100%.sure@odd.example.org")  # fmt: skip


def _mixed_log(services: Services, campaigns: int = 3, firings: int = 3) -> list[Logged]:
    """Campaigns of email steps (each plan step fired several times, in two waves), an
    X thread and a press release each; their events written in a shuffled order (the
    steps' ids interleave), at times that do not follow the ids; step events without a
    delivery. Returns every event as the reference reads it."""
    rng = random.Random(2014)
    now = datetime(2014, 9, 5, 7, tzinfo=UTC)
    with services.engine.begin() as conn:
        conn.execute(insert(contacts), [{"email": e, "email_key": e.casefold(), "kind": "other", "status": "active",
                                         "attrs": {}, "created_at": now, "updated_at": now} for e in PEOPLE])  # fmt: skip
        people = dict(conn.execute(select(contacts.c.email, contacts.c.id)).all())
    rows: list[dict] = []
    for c in range(campaigns):
        plan = [(f"mail-{p}", "email", ("launch", "pacific")[p % 2]) for p in range(2)] + [
            ("thread", "x", "launch"), ("release", "press", "launch")]  # fmt: skip
        for plan_step, channel, wave in plan:
            for f in range(firings if channel == "email" else 1):
                at = now + timedelta(days=30 * c, hours=3 * f)
                step = services.outbox.ensure_step(
                    campaign=f"c{c}", key=f"{plan_step}@{at:%Y%m%dT%H%MZ}", channel=channel, template="t",
                    audience="", send_at=at, settings={"plan_step": plan_step, "wave": wave})  # fmt: skip
                who = rng.sample(sorted(people.values()), 7) if channel == "email" else [None] * 3
                with services.engine.begin() as conn:
                    for part, person in enumerate(who):
                        conn.execute(insert(deliveries).values(
                            step_id=step.id, contact_id=person, part=None if person else part, status="sent",
                            due_at=at, updated_at=at))  # fmt: skip
                    ids = conn.execute(select(deliveries.c.id).where(deliveries.c.step_id == step.id)).scalars()
                    for d in ids:
                        final = rng.choice(("sent", "sent", "failed", "deferred"))
                        for n, name in enumerate(("materialized", "sending", final)):
                            rows.append({"step_id": step.id, "delivery_id": d, "event": name, "detail": {"n": n},
                                         "at": at + timedelta(minutes=rng.randint(0, 600))})  # fmt: skip
                rows.append({"step_id": step.id, "delivery_id": None, "event": "paused", "detail": {},
                             "at": at + timedelta(minutes=rng.randint(0, 600))})  # fmt: skip
    rng.shuffle(rows)
    with services.engine.begin() as conn:
        conn.execute(insert(delivery_events), rows)
        joined = (delivery_events.outerjoin(deliveries, deliveries.c.id == delivery_events.c.delivery_id)
                  .outerjoin(contacts, contacts.c.id == deliveries.c.contact_id))  # fmt: skip
        found = conn.execute(select(delivery_events.c.id, delivery_events.c.at, delivery_events.c.event,
                                    delivery_events.c.step_id, contacts.c.email_key)
                             .select_from(joined).order_by(delivery_events.c.id)).all()  # fmt: skip
    return [Logged(*r) for r in found]


def _reference(log: list[Logged], services: Services, flt: review.LogFilter) -> list[int]:
    """The ids of the events ``flt`` lets through, oldest first, read off the whole log."""
    steps_ = {s.id for s in services.outbox.steps() if flt.step_matches(s)}
    return [e.id for e in log if e.step_id in steps_
            and (flt.event is None or e.event == flt.event)
            and (flt.contact is None or e.email_key == flt.contact.casefold())
            and (flt.search is None or (e.email_key is not None and flt.search.casefold() in e.email_key))
            and (flt.since is None or e.at >= flt.since) and (flt.until is None or e.at <= flt.until)]  # fmt: skip


def _walk_pages(services: Services, flt: review.LogFilter, limit: int) -> list[int]:
    seen: list[int] = []
    before = None
    while True:
        page, before = review.log_page(services, flt, before=before, limit=limit)
        assert len(page) <= limit and (before is None or len(page) == limit)
        seen += [e["id"] for e in page]
        if before is None:
            return seen


@pytest.mark.parametrize("sizes", ["tiny", "as shipped"])
def test_every_filter_gives_the_reference_events(tmp_path: Path, database_url: str, sizes: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Each combination of step filters, event, recipient (an address, a part of one few
    or many contacts match, one with LIKE's own characters) and time window gives the
    events a plain reading of the whole log gives: the first page, a page from the
    middle, the whole stream and its latest few. "tiny": the limits that choose a way to
    read (UNION size, how many contacts make a search walk the log, IN lists, the walk's
    and the window's first reads) made small, so that a small log takes every way."""
    if sizes == "tiny":
        for name, value in (("BRANCHES", 2), ("MANY_CONTACTS", 2), ("IN_LIST", 3), ("NEAR", 2), ("WALK", 2)):
            monkeypatch.setattr(log_pages, name, value)
    services = build(load_settings(tmp_path, env={"OUTREACH_DATABASE_URL": database_url}))
    try:
        log = _mixed_log(services)
        ats = sorted(e.at for e in log)
        middle = (ats[len(ats) // 3], ats[2 * len(ats) // 3])
        by_steps = ({}, {"campaign": "c1"}, {"campaign": "c2", "step": "mail-0"}, {"channel": "email"},
                    {"wave": "pacific", "channel": "email"}, {"step": services.outbox.steps("c0")[0].key},
                    {"campaign": "nope"})  # fmt: skip
        by_who = ({}, {"contact": PEOPLE[1].upper()}, {"search": "TUILAGI"}, {"search": ".example."},
                  {"search": "gov.example"}, {"search": "_"}, {"search": "%"}, {"search": "nobody"})  # fmt: skip
        windows = ({}, {"since": middle[0], "until": middle[1]}, {"since": middle[1]}, {"until": middle[0]})
        checked = 0
        for steps_, event_, who, window in itertools.product(by_steps, (None, "sent", "paused"), by_who, windows):
            flt = review.LogFilter(**steps_, event=event_, **who, **window)  # type: ignore[arg-type]
            expected = _reference(log, services, flt)
            newest = expected[::-1]
            page, cursor = review.log_page(services, flt, limit=4)
            assert [e["id"] for e in page] == newest[:4], flt
            assert cursor == (newest[3] if len(newest) > 4 else None), flt
            if len(newest) > 6:
                older, _cursor = review.log_page(services, flt, before=newest[2], limit=4)
                assert [e["id"] for e in older] == newest[3:7], flt
            assert [e["id"] for e in review.iter_log(services, flt, chunk=60)] == expected, flt
            assert [e["id"] for e in review.iter_log(services, flt, latest=3)] == expected[-3:], flt
            checked += bool(expected)
        assert checked > 200  # a good part of the combinations find something (a paused step has no recipient)
        def who(search: str) -> set[str | None]:
            found = set(_reference(log, services, review.LogFilter(search=search)))
            return {e.email_key for e in log if e.id in found}

        assert who("%") == {PEOPLE[-1]} and who("_") == {PEOPLE[2]}  # LIKE's own characters, as text
        # the keyset pages and the stream, each event exactly once
        for flt in (review.LogFilter(), review.LogFilter(channel="email", search=".example."),
                    review.LogFilter(campaign="c0", since=middle[0]), review.LogFilter(search="tuilagi", event="sent")):  # fmt: skip
            expected = _reference(log, services, flt)
            assert _walk_pages(services, flt, limit=3) == expected[::-1]
            assert [e["id"] for e in review.iter_log(services, flt, chunk=4)] == expected
    finally:
        services.close()


def test_pages_and_streams_over_more_steps_than_one_statement_takes(tmp_path: Path, database_url: str) -> None:
    """A channel with more steps than one UNION takes (``BRANCHES``) and than an IN
    list holds (``IN_LIST``): every page and every chunk of the stream, each event once
    and in order, as the reference gives them; each page a handful of statements."""
    services = build(load_settings(tmp_path, env={"OUTREACH_DATABASE_URL": database_url}))
    try:
        count = log_pages.IN_LIST + 100
        at = datetime(2014, 9, 5, 7, tzinfo=UTC)
        with services.engine.begin() as conn:
            conn.execute(insert(steps), [{"campaign": f"c{i % 7}", "key": f"s{i}", "channel": "x" if i % 100 == 3 else "email",
                                          "template": "t", "audience": "", "send_at": at, "status": "active",
                                          "settings": {}, "created_at": at} for i in range(count)])  # fmt: skip
            ids = list(conn.execute(select(steps.c.id).order_by(steps.c.id)).scalars())
            rng = random.Random(5)
            conn.execute(insert(delivery_events), [
                {"step_id": rng.choice(ids), "delivery_id": None, "at": at + timedelta(seconds=rng.randint(0, 3600)),
                 "event": rng.choice(("active", "paused", "held")), "detail": {}} for _ in range(4 * count)])  # fmt: skip
            log = [Logged(*r, None) for r in conn.execute(select(
                delivery_events.c.id, delivery_events.c.at, delivery_events.c.event, delivery_events.c.step_id)
                .order_by(delivery_events.c.id))]  # fmt: skip
        flt = review.LogFilter(channel="email")
        expected = _reference(log, services, flt)
        assert len({e.step_id for e in log if e.id in set(expected)}) > log_pages.IN_LIST
        reads: list[str] = []

        def count_reads(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
            if "FROM delivery_events" in statement:
                reads.append(statement)

        event.listen(services.engine, "before_cursor_execute", count_reads)
        page, cursor = review.log_page(services, flt, limit=50)
        event.remove(services.engine, "before_cursor_execute", count_reads)
        assert [e["id"] for e in page] == expected[::-1][:50] and cursor == page[-1]["id"]
        branches = -(-len({e.step_id for e in log if e.id in set(expected)}) // log_pages.BRANCHES)
        assert len(reads) <= branches + 1  # a UNION per hundred steps, then the rows
        assert _walk_pages(services, flt, limit=300) == expected[::-1]
        assert [e["id"] for e in review.iter_log(services, flt, chunk=700)] == expected
        paused = review.LogFilter(channel="email", event="paused", since=at + timedelta(minutes=30))
        assert _walk_pages(services, paused, limit=200) == _reference(log, services, paused)[::-1]
    finally:
        services.close()
