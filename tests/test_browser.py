"""The staff pages in a real browser: Debian's Chromium driven by Playwright, against
the real ``outreach serve`` (a process of its own on a free port of 127.0.0.1) on a
real SQLite store that a real SMTP server (aiosmtpd) took the campaign's mail for.

Signing in, a campaign's page (and its screenshot), the log filtered by event and by a
recipient search, its CSV export downloaded and read back, approval by an admin, and a
recipient who follows the unsubscribe link of the email they got and is skipped by the
campaign's next step.

One browser and one launched campaign serve every test of the module; each test opens
its own browser context (its own cookies), so none depends on another having run."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from outreach import control
from outreach.app import Services
from outreach.channels.maildir import free_port
from outreach.db.models import contacts, deliveries, delivery_events, steps
from tests.conftest import ROOT, Cli, missing_part
from tests.smtp_server import Faults, Recorder, SmtpServer
from tests.test_web import PASSWORD, PLAN, fire_step, make_workspace, send_all

try:
    from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
except ImportError:  # pragma: no cover - what CI must not lack
    sync_playwright = None  # type: ignore[assignment]

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip
SCREENSHOT_COPY = Path("/tmp/outreach-campaign.png")

# Industry members beside make_workspace's handful: a mobile operator's staff in London
# and an ISP's in New York (the industry email fires at 09:00 in each zone); the relay
# knows two of them as no such user and keeps answering one "try later".
MEMBERS = [
    *(f"member.{n:02d}@atlas-mobile.example.com" for n in range(1, 9)),
    *(f"member.{n:02d}@coral-net.example.net" for n in range(1, 9)),
]
ZONES = {"atlas-mobile.example.com": "GB,en,Europe/London", "coral-net.example.net": "US,en,America/New_York"}
UNKNOWN = {"member.03@coral-net.example.net", "member.06@coral-net.example.net"}
BUSY = "member.05@atlas-mobile.example.com"
LEAVER = "ben.okafor@example.com"  # unsubscribes from the industry email


def send(services: Services, smtp_url: str) -> None:
    """``send_all`` in a thread of its own: Playwright's sync API keeps an event loop
    running in this one, and the sender runs one with asyncio.run."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            send_all(services, smtp_url)
        except BaseException as exc:  # handed to the test
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the sender did not finish in 60 s"
    if failure:
        raise failure[0]


@dataclass
class Served:
    """The launched workspace, its services (this process's view of the store) and the
    ``outreach serve`` process in front of the same store."""

    services: Services
    cli: Cli
    recorder: Recorder
    smtp: SmtpServer
    url: str
    server: subprocess.Popen[bytes]

    def events(self, **where: Any) -> list[dict[str, Any]]:
        """The log's events straight from the tables (the page's own query is not used):
        id, event, email, step key; ``event``/``search``/``email``/``step`` filter."""
        query = (
            select(delivery_events.c.id, delivery_events.c.event, contacts.c.email, steps.c.key,
                   delivery_events.c.detail)
            .join(steps, steps.c.id == delivery_events.c.step_id)
            .outerjoin(deliveries, deliveries.c.id == delivery_events.c.delivery_id)
            .outerjoin(contacts, contacts.c.id == deliveries.c.contact_id)
            .order_by(delivery_events.c.id)
        )  # fmt: skip
        if "event" in where:
            query = query.where(delivery_events.c.event == where["event"])
        if "search" in where:
            query = query.where(func.lower(contacts.c.email).contains(where["search"].lower()))
        if "email" in where:
            query = query.where(contacts.c.email == where["email"])
        if "plan_step" in where:
            query = query.where(steps.c.key.startswith(where["plan_step"] + "@"))
        with self.services.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]


def _start_server(workspace: Path, env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "outreach", "-w", str(workspace), "serve", "--port", str(port)],
            env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, cwd=workspace,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            server.wait()
            raise AssertionError(f"outreach serve did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The sample plan scheduled by olga and approved; its embargoed media email and
    its industry email sent to a real SMTP server; a second campaign (the same plan
    under another id) scheduled and not approved; staff of each role; and ``outreach
    serve`` on a free port, its links in messages pointing at it."""
    base = tmp_path_factory.mktemp("browser")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    services, cli = make_workspace(base, OUTREACH_PUBLIC_URL=url)
    ws = cli.workspace
    members = "\n".join(f"{a},Member {a[7:9]},{a.split('@')[1]},industry,mobile operator,{ZONES[a.split('@')[1]]}"
                        for a in MEMBERS)  # fmt: skip
    (ws / "contacts" / "members.csv").write_text(
        "email,name,organization,kind,sector,country,language,timezone\n" + members + "\n", "utf-8")
    cli("contacts", "import", str(ws / "contacts" / "members.csv"))
    for name, role in (("vera", "viewer"), ("otto", "operator"), ("ada", "admin")):
        cli("users", "add", name, "--role", role, "--password-stdin", input=PASSWORD + "\n")
    cli("schedule", str(ws / PLAN), "--by", "olga")
    control.approve_campaign(services, "cop-2014", "sarah")
    second = (ROOT / PLAN).read_text("utf-8").replace("id: cop-2014", "id: cop-2015").replace(
        "name: Guidelines for Industry on Child Online Protection", "name: COP guidelines, second edition")
    (ws / "schedules" / "cop-2015.yaml").write_text(second, "utf-8")
    cli("schedule", str(ws / "schedules" / "cop-2015.yaml"), "--by", "olga")

    recorder = Recorder(Faults(no_such_user=UNKNOWN, replies={BUSY: "451 4.2.1 Mailbox busy, try later"}))
    smtp = SmtpServer(recorder).__enter__()
    fire_step(services, "embargoed-media")
    fire_step(services, "industry-email")
    send(services, smtp.url)
    env = {"OUTREACH_DATABASE_URL": "", "OUTREACH_SMTP_URL": "", "OUTREACH_SECRET_KEY": "test-key",
           "OUTREACH_PUBLIC_URL": url, "OUTREACH_WORKSPACE": str(ws)}  # fmt: skip
    server = _start_server(ws, env, port, base / "serve.log")
    try:
        yield Served(services, cli, recorder, smtp, url, server)
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        smtp.__exit__(None, None, None)
        services.close()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    if sync_playwright is None:
        missing_part("Playwright for Python is not installed (pip install 'outreach[test]')")
    if not CHROMIUM.exists():
        missing_part(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def context(chromium: Browser) -> Iterator[BrowserContext]:
    ctx = chromium.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(10_000)
    yield ctx
    ctx.close()


def sign_in(context: BrowserContext, served: Served, name: str, path: str = "/campaigns") -> Page:
    """Ask for ``path`` signed out, land on the sign-in form, sign in, land on ``path``."""
    page = context.new_page()
    page.goto(served.url + path)
    assert page.url.startswith(f"{served.url}/login?next="), page.url
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    assert page.url == served.url + path, page.url
    assert page.locator("header form.who span").inner_text().startswith(name)
    return page


def table_rows(page: Page) -> list[dict[str, str]]:
    """The log table of a page, one dict a row (header -> cell text)."""
    heads = [h.strip() for h in page.locator("table.events thead th").all_inner_texts()]
    rows = []
    for row in page.locator("table.events tbody tr").all():
        cells = [c.strip() for c in row.locator("td").all_inner_texts()]
        if len(cells) == len(heads):
            rows.append(dict(zip(heads, cells, strict=True)))
    return rows


def show(page: Page, **fields: str) -> None:
    """Fill the log's filter form (inputs and selects by name) and press Show."""
    for name, value in fields.items():
        field = page.locator(f"form.filters [name={name}]")
        if field.evaluate("e => e.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)
    with page.expect_navigation():
        page.get_by_role("button", name="Show").click()


# -- the tests ---------------------------------------------------------------------------------


def test_a_wrong_password_is_refused_and_the_right_one_signs_in(context: BrowserContext, served: Served) -> None:
    page = context.new_page()
    page.goto(served.url + "/log")
    page.get_by_label("Name").fill("vera")
    page.get_by_label("Password").fill("not the password at all")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "Wrong name or password."
    assert not [c for c in context.cookies() if c["name"] == "outreach_session"]
    page.get_by_label("Name").fill("vera")
    page.get_by_label("Password").fill(PASSWORD)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    assert page.url.startswith(served.url + "/")
    assert page.locator("h1").inner_text() in ("Campaigns", "Delivery log")
    cookie = next(c for c in context.cookies() if c["name"] == "outreach_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert page.evaluate("document.cookie") == ""  # no script of the page can read it
    assert page.locator("header form.who").inner_text().startswith("vera (viewer)")


def test_a_campaign_page_and_its_screenshot(context: BrowserContext, served: Served, tmp_path: Path) -> None:
    page = sign_in(context, served, "vera")
    with page.expect_navigation():
        page.get_by_role("link", name="Guidelines for Industry on Child Online Protection").click()
    assert page.url == f"{served.url}/campaigns/cop-2014"
    assert page.locator("h1").inner_text().startswith("Guidelines for Industry on Child Online Protection")
    assert "Approved by sarah" in page.locator("section.facts").inner_text()
    assert page.locator("section.actions").count() == 0  # a viewer gets no buttons
    # the timeline: each firing of the industry email, with what became of its deliveries
    timeline = page.locator("table").first
    industry = timeline.locator("tr", has_text="industry-email@")
    assert industry.count() >= 2  # a firing per recipients' zone (09:00 local)
    sent = served.events(event="sent", plan_step="industry-email")
    shown = sum(int(t.split()[1].replace(",", "")) for t in industry.locator(".count-sent").all_inner_texts())
    assert shown == len(sent)
    failures = page.locator("h2:text('Failures by reason') + table")
    assert failures.locator("tr", has_text="User unknown").count() >= 1
    shot = tmp_path / "campaign.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(shot.read_bytes()[16:20], "big"), int.from_bytes(shot.read_bytes()[20:24], "big")
    assert width == 1280 and height > 900  # the whole page, more than one screen of it
    shutil.copyfile(shot, SCREENSHOT_COPY)


def test_the_log_filtered_by_event_then_by_recipient_and_exported(context: BrowserContext, served: Served) -> None:
    page = sign_in(context, served, "vera", "/log")
    failed = served.events(event="failed")
    assert {e["email"] for e in failed} == UNKNOWN | {BUSY}  # what the relay refused, in the end
    show(page, event="failed")
    assert "event=failed" in page.url
    rows = table_rows(page)
    assert [int(r["Id"]) for r in rows] == sorted((e["id"] for e in failed), reverse=True)  # newest first
    assert {r["Event"] for r in rows} == {"failed"}
    assert any("User unknown" in r["Detail"] for r in rows)
    assert page.locator("form.filters select[name=event]").input_value() == "failed"  # the form remembers

    # the industry email's (a plan step's id: each of its firings) sent to part of an address, any case
    show(page, event="sent", q="ATLAS-mobile", step="industry-email")
    rows = table_rows(page)
    expected = served.events(event="sent", search="atlas-mobile", plan_step="industry-email")
    assert len(expected) == len(MEMBERS) // 2 - 1  # all but the one the relay kept busy
    assert [int(r["Id"]) for r in rows] == sorted((e["id"] for e in expected), reverse=True)
    assert all(r["Event"] == "sent" and "@atlas-mobile.example.com" in r["Recipient"] for r in rows)
    assert {r["Step"].split("@")[0] for r in rows} == {"industry-email"}

    with page.expect_download() as info:
        page.get_by_role("link", name="Download this view as CSV").click()
    download = info.value
    assert download.suggested_filename == "outreach-log.csv"
    with open(download.path(), newline="", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))
    assert [int(r["id"]) for r in records] == [e["id"] for e in expected]  # the same events, oldest first
    assert {r["event"] for r in records} == {"sent"}
    assert all(r["email"].endswith("@atlas-mobile.example.com") for r in records)
    by_id = {e["id"]: e for e in expected}
    for record in records:
        assert record["campaign"] == "cop-2014" and record["step"] == by_id[int(record["id"])]["key"]
        assert record["code"] == "250" and record["message_id"].startswith("<")

    with page.expect_navigation():
        page.get_by_role("link", name="Clear").click()
    assert len(table_rows(page)) == 50 and page.get_by_role("link", name="Older").count() == 1


def test_an_admin_approves_a_campaign(context: BrowserContext, served: Served) -> None:
    outbox = served.services.outbox
    assert outbox.campaign("cop-2015")["approved_by"] is None
    page = sign_in(context, served, "ada")
    row = page.locator("tr", has_text="cop-2015")
    assert "not approved" in row.inner_text().lower()
    with page.expect_navigation():
        row.get_by_role("link").click()
    assert page.url == f"{served.url}/campaigns/cop-2015"
    with page.expect_navigation():
        page.get_by_role("button", name="Approve").click()
    assert page.url == f"{served.url}/campaigns/cop-2015?done=approved"
    assert page.get_by_role("status").inner_text().startswith("Approved")
    assert "Approved by ada at" in page.locator("section.facts").inner_text()
    stored = outbox.campaign("cop-2015")
    assert stored["approved_by"] == "ada" and stored["approved_hash"] == stored["plan_hash"]
    assert outbox.campaign("cop-2014")["approved_by"] == "sarah"  # the other one untouched
    page.goto(served.url + "/campaigns")
    assert "approved by ada" in page.locator("tr", has_text="cop-2015").inner_text()


def test_an_operator_is_offered_no_approval(context: BrowserContext, served: Served) -> None:
    page = sign_in(context, served, "otto", "/campaigns/cop-2014")
    actions = page.locator("section.actions")
    assert actions.get_by_role("button", name="Pause").count() == 1
    assert actions.get_by_role("button", name="Approve").count() == 0
    assert actions.get_by_role("button", name="Cancel the campaign").count() == 0


def _email_to(recorder: Recorder, address: str, subject_has: str = "") -> EmailMessage:
    for rcpt, _mid, raw in recorder.accepted:
        message = BytesParser(policy=policy.default).parsebytes(raw)
        if rcpt == address and subject_has in str(message["Subject"]):
            assert isinstance(message, EmailMessage)
            return message
    raise AssertionError(f"no email to {address} was taken by the SMTP server")


def test_a_recipient_unsubscribes_from_the_email_and_the_next_step_skips_them(
    context: BrowserContext, served: Served
) -> None:
    services = served.services
    email = _email_to(served.recorder, LEAVER)
    html = email.get_body(("html",))
    assert html is not None
    header = str(email["List-Unsubscribe"])
    # the follow-up fires (its deliveries queued) before the recipient acts
    fired = fire_step(services, "follow-up")
    assert fired
    mails_to = lambda address: sum(r == address for r, _m, _raw in served.recorder.accepted)  # noqa: E731
    before = mails_to(LEAVER)

    page = context.new_page()
    page.set_content(html.get_content())  # the email as a mail client shows it
    link = page.get_by_role("link", name="Unsubscribe")
    target = link.get_attribute("href")
    assert target and target.startswith(f"{served.url}/u/cop-2014/") and f"<{target}>" in header
    with page.expect_navigation():
        link.click()
    assert page.url == target
    assert page.locator("h1").inner_text() == "Unsubscribe?"
    assert "b***@example.com" in page.locator("main").inner_text() and LEAVER not in page.content()
    assert services.contacts.get(LEAVER).status == "active"  # opening the link changes nothing
    with page.expect_navigation():
        page.get_by_role("button", name="Unsubscribe").click()
    assert page.locator("h1").inner_text() == "You are unsubscribed"
    assert services.contacts.get(LEAVER).status == "unsubscribed"

    send(services, served.smtp.url)
    with services.engine.connect() as conn:
        outcomes = dict(conn.execute(
            select(contacts.c.email, deliveries.c.status)
            .join(deliveries, deliveries.c.contact_id == contacts.c.id)
            .join(steps, steps.c.id == deliveries.c.step_id)
            .where(steps.c.key.startswith("follow-up@"), contacts.c.email.in_((LEAVER, "ana.tuilagi@example.com")))
        ).all())  # fmt: skip
    assert outcomes == {LEAVER: "skipped", "ana.tuilagi@example.com": "sent"}
    skipped = served.events(email=LEAVER, plan_step="follow-up", event="skipped")
    assert [e["detail"]["reason"] for e in skipped] == ["contact is unsubscribed (checked at send time)"]
    assert mails_to(LEAVER) == before  # nothing more reached them

    staff = sign_in(context, served, "vera", "/log")
    show(staff, contact=LEAVER)
    rows = table_rows(staff)
    events = [(r["Step"].split("@")[0], r["Event"]) for r in rows]
    assert events[0] == ("follow-up", "skipped")  # the newest
    assert "contact is unsubscribed" in rows[0]["Detail"]
    assert ("industry-email", "sent") in events
    assert "unsubscribed" in {e for _s, e in events}  # the unsubscribe is in the log too
    staff.goto(f"{served.url}/contacts/{LEAVER}")
    assert "unsubscribed" in staff.locator("main").inner_text()
