"""The web pages over real HTTP: uvicorn on 127.0.0.1 in a thread, httpx as the
browser, a real database (SQLite, and PostgreSQL for the important ones). Signing in
and out, expiry, the limit on failed sign-ins, the headers, escaping.

The helpers here (``Site``, ``Browser``, ``make_workspace``) serve the other
``test_web_*`` files too."""

from __future__ import annotations

import asyncio
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from outreach import control
from outreach.app import Services, build
from outreach.channels.maildir import free_port
from outreach.channels.smtp import SmtpPool, parse_smtp_url
from outreach.config import load_settings
from outreach.db.users import SqlUsers
from outreach.imports import import_files
from outreach.policy import SendPolicy
from outreach.scheduling import fire
from outreach.web import create_app
from tests.conftest import ROOT, Cli
from tests.smtp_server import Recorder, SmtpServer

PLAN = "schedules/cop-guidelines-2014.yaml"
PASSWORD = "correct horse battery"
SCRIPT = "<script>alert(1)</script>"
# A few stakeholders of every kind the sample plan writes to; one with markup in its name.
CONTACTS = f"""\
email,name,organization,kind,sector,country,language,timezone,tags
ana.tuilagi@example.com,Ana {SCRIPT} Tuilagi,Blue Telecom,industry,mobile operator,GB,en,Europe/London,cop-2014
ben.okafor@example.com,Ben Okafor,Lagos Links,industry,isp,NG,en,Africa/Lagos,cop-2014
mia.kamau@example.net,Mia Kamau,Kenya Post,media,,KE,en,Africa/Nairobi,
pat.lee@example.org,Pat Lee,UNICEF,partner,,US,en,America/New_York,partner
sione.fifita@example.to,Sione Fifita,Tonga Comms,government,,TO,en,Pacific/Tongatapu,
losa.tupou@example.to,Losa Tupou,Tonga Telecom,industry,mobile operator,TO,en,Pacific/Tongatapu,
"""


def make_workspace(tmp_path: Path, database_url: str | None = None, **env: str) -> tuple[Services, Cli]:
    """The sample's templates and plan, a handful of contacts, and the services and
    CLI on its database."""
    ws = tmp_path / "ws"
    for folder in ("templates", "schedules"):
        shutil.copytree(ROOT / folder, ws / folder)
    (ws / "contacts").mkdir()
    (ws / "contacts" / "people.csv").write_text(CONTACTS, "utf-8")
    environment = {"OUTREACH_DATABASE_URL": database_url or "", "OUTREACH_SECRET_KEY": "test-key", **env}
    services = build(load_settings(ws, env=environment))
    import_files(services.contacts, [ws / "contacts" / "people.csv"])
    return services, Cli(ws, env=environment)


class Site:
    """The application served by uvicorn on a free port of 127.0.0.1, in a thread."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(services), host="127.0.0.1", port=self.port,
                                log_level="warning", lifespan="off")  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Site:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def browser(self, accept_html: bool = True) -> Browser:
        return Browser(self.url, accept_html)


class Browser(httpx.Client):
    """A client that keeps cookies, as a browser does; signs in through the form."""

    def __init__(self, url: str, accept_html: bool = True) -> None:
        headers = {"accept": "text/html,application/xhtml+xml"} if accept_html else {}
        super().__init__(base_url=url, headers=headers, follow_redirects=False, timeout=30)
        self.csrf = ""

    def sign_in(self, name: str, password: str = PASSWORD, *, ok: bool = True) -> httpx.Response:
        form = self.get("/login")
        assert form.status_code == 200
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)[1]  # type: ignore[index]
        answer = self.post("/login", data={"name": name, "password": password, "csrf": token, "next": "/"})
        if ok:
            assert answer.status_code == 303, answer.text
            self.csrf = self.token("/campaigns")
        return answer

    def token(self, page: str) -> str:
        """The CSRF token the forms of a page carry."""
        html = self.get(page).text
        found = re.search(r'name="csrf" value="([^"]+)"', html)
        assert found, f"no form on {page}"
        return found[1]

    def act(self, path: str, **fields: str) -> httpx.Response:
        return self.post(path, data={"csrf": self.csrf, **fields})


def add_user(services: Services, name: str, role: str) -> None:
    SqlUsers(services.engine).add(name, role, PASSWORD)


FAST = SendPolicy(backoff_base=0.01, backoff_cap=0.05, max_attempts=3, error_budget=1000, per_second=10_000)


def fire_step(services: Services, plan_step: str, campaign: str = "cop-2014") -> list[str]:
    """Every firing of a plan step, each at its planned instant; their keys."""
    keys = []
    for step in services.outbox.steps(campaign):
        if step.settings.get("plan_step") == plan_step and step.status in ("scheduled", "held"):
            fire(services, campaign, step.key, step.send_at)
            keys.append(step.key)
    return keys


def send_all(services: Services, smtp_url: str) -> None:
    """Send what is due to a real SMTP server, until nothing is left to send."""

    async def main() -> None:
        channel = SmtpPool(parse_smtp_url(smtp_url))
        dispatcher = services.dispatcher(channel)
        dispatcher.policy = FAST
        try:
            for _ in range(200):
                await dispatcher.run(until_idle=True)
                counts = services.outbox.counts()
                if not counts.get("queued") and not counts.get("deferred"):
                    return
                await asyncio.sleep(0.02)
        finally:
            await channel.close()

    asyncio.run(main())


def launch(services: Services, cli: Cli, recorder: Recorder, *, by: str = "olga") -> None:
    """The sample plan scheduled (by ``by``) and approved, and its embargoed media
    email and industry email fired and sent to a real SMTP server."""
    cli("schedule", PLAN, "--by", by)
    control.approve_campaign(services, "cop-2014", "approver")
    with SmtpServer(recorder) as server:
        fire_step(services, "embargoed-media")
        fire_step(services, "industry-email")
        send_all(services, server.url)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    services, _cli = make_workspace(tmp_path)
    for name, role in (("vera", "viewer"), ("otto", "operator"), ("ada", "admin")):
        add_user(services, name, role)
    with Site(services) as running:
        yield running
    services.close()


# -- signing in and out ----------------------------------------------------------------------


def test_sign_in_then_out_and_the_cookie_is_guarded(site: Site) -> None:
    browser = site.browser()
    assert browser.get("/campaigns").headers["location"].startswith("/login?next=%2Fcampaigns")
    answer = browser.sign_in("Vera")  # names are not case-sensitive
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # public_url is http here; see the https test
    assert PASSWORD not in cookie
    page = browser.get("/campaigns")
    assert page.status_code == 200 and "vera" in page.text and "Campaigns" in page.text
    assert browser.post("/logout", data={"csrf": browser.csrf}).status_code == 303
    assert browser.get("/campaigns").status_code == 303  # signed out: back to the sign-in
    assert site.browser(accept_html=False).get("/campaigns").status_code == 401


def test_a_stolen_cookie_is_dead_after_sign_out(site: Site) -> None:
    browser = site.browser()
    browser.sign_in("vera")
    stolen = dict(browser.cookies)
    browser.post("/logout", data={"csrf": browser.csrf})
    thief = site.browser(accept_html=False)
    thief.cookies.update(stolen)
    assert thief.get("/campaigns").status_code == 401


def test_wrong_passwords_and_unknown_names_are_refused_alike(site: Site) -> None:
    browser = site.browser()
    wrong = browser.sign_in("vera", "not the password", ok=False)
    unknown = browser.sign_in("nobody", PASSWORD, ok=False)
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong name or password" in wrong.text and "Wrong name or password" in unknown.text
    assert "outreach_session" not in wrong.headers.get("set-cookie", "")


def test_a_sign_in_without_the_forms_token_is_refused(site: Site) -> None:
    browser = site.browser()
    answer = browser.post("/login", data={"name": "vera", "password": PASSWORD})
    assert answer.status_code == 403 and "outreach_session" not in answer.headers.get("set-cookie", "")


def test_failed_sign_ins_are_limited(site: Site) -> None:
    browser = site.browser()
    for _ in range(5):
        assert browser.sign_in("otto", "guess guess guess", ok=False).status_code == 401
    blocked = browser.sign_in("otto", PASSWORD, ok=False)  # even the right password, for now
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
    assert "outreach_session" not in blocked.headers.get("set-cookie", "")
    assert site.browser().sign_in("otto", PASSWORD, ok=False).status_code == 429  # per name too
    site.browser().sign_in("vera")  # others sign in as before


def test_sessions_expire(tmp_path: Path) -> None:
    services, _cli = make_workspace(tmp_path, OUTREACH_SESSION_LIFETIME="2s")
    add_user(services, "vera", "viewer")
    with Site(services) as running:
        browser = running.browser()
        browser.sign_in("vera")
        assert browser.get("/campaigns").status_code == 200
        time.sleep(3)
        assert browser.get("/campaigns").status_code == 303
    services.close()


def test_a_password_change_or_removal_ends_sessions(site: Site) -> None:
    browser, other = site.browser(), site.browser()
    browser.sign_in("vera")
    other.sign_in("otto")
    users = SqlUsers(site.services.engine)
    users.set_password("vera", "another good password")
    users.remove("otto")
    assert browser.get("/campaigns").status_code == 303
    assert other.get("/campaigns").status_code == 303
    assert site.browser().sign_in("vera", "another good password").status_code == 303


def test_next_goes_nowhere_but_this_site(site: Site) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "/log?event=failed"):
        browser = site.browser()
        form = browser.get(f"/login?next={target}")
        assert 'name="next" value="/"' in form.text or target.startswith("/log")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)[1]  # type: ignore[index]
        answer = browser.post("/login", data={"name": "vera", "password": PASSWORD, "csrf": token, "next": target})
        assert answer.headers["location"] == (target if target.startswith("/log") else "/")


def test_cookies_are_secure_when_the_site_is_https(tmp_path: Path) -> None:
    services, _cli = make_workspace(tmp_path, OUTREACH_PUBLIC_URL="https://outreach.example.org")
    add_user(services, "vera", "viewer")
    with Site(services) as running:
        browser = running.browser()
        form = browser.get("/login")
        assert "secure" in form.headers["set-cookie"].lower()
        assert form.headers["strict-transport-security"].startswith("max-age=")
    services.close()


# -- what every response carries --------------------------------------------------------------


def test_security_headers_on_every_kind_of_response(site: Site) -> None:
    browser = site.browser()
    browser.sign_in("vera")
    for path in ("/login", "/campaigns", "/healthz", "/no-such-page", "/static/app.css", "/u/x/1/forged"):
        answer = browser.get(path)
        csp = answer.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp, path
        assert "script-src 'self'" in csp or "default-src 'none'" in csp, path
        assert answer.headers["x-content-type-options"] == "nosniff", path
        assert answer.headers["referrer-policy"] == "no-referrer", path
    page = browser.get("/campaigns").text
    assert "<script>" not in page.replace('<script src="/static/app.js" defer></script>', "")
    assert "style=" not in page  # CSP allows no inline style on outreach's own pages


def test_markup_in_a_contact_is_shown_as_text(site: Site) -> None:
    browser = site.browser()
    browser.sign_in("vera")
    page = browser.get("/contacts/ana.tuilagi@example.com")
    assert page.status_code == 200
    assert SCRIPT not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


def test_health_check(site: Site) -> None:
    answer = httpx.get(f"{site.url}/healthz")
    assert answer.status_code == 200 and answer.text == "ok"


def test_health_check_says_when_the_database_is_gone(tmp_path: Path) -> None:
    services, _cli = make_workspace(tmp_path)
    database = Path(services.settings.database_url.removeprefix("sqlite:///"))
    with Site(services) as running:
        assert httpx.get(f"{running.url}/healthz").status_code == 200
        services.engine.dispose()
        for path in database.parent.glob(database.name + "*"):
            path.unlink()
        database.parent.chmod(0o500)  # nor can it be made again
        try:
            answer = httpx.get(f"{running.url}/healthz")
        finally:
            database.parent.chmod(0o700)
        assert answer.status_code == 503 and "database" not in answer.text.split()[1:]
    services.close()


def test_the_newsroom_is_served_as_published(site: Site) -> None:
    folder, _url = site.services.settings.newsroom
    assert httpx.get(f"{site.url}/newsroom/").status_code == 404  # nothing published yet
    newsroom = site.services.newsroom()
    from datetime import UTC, datetime

    newsroom.publish({"slug": "cop-2014", "headline": "New guidelines", "dateline": "ISTANBUL",
                      "html": "<html><body><h1>New guidelines</h1></body></html>"},
                     datetime(2014, 9, 5, 7, tzinfo=UTC))  # fmt: skip
    index = httpx.get(f"{site.url}/newsroom/")
    assert index.status_code == 200 and "cop-2014.html" in index.text
    assert httpx.get(f"{site.url}/newsroom").headers["location"] == "/newsroom/"
    page = httpx.get(f"{site.url}/newsroom/cop-2014.html")
    assert page.status_code == 200 and "New guidelines" in page.text
    feed = httpx.get(f"{site.url}/newsroom/feed.atom")
    assert feed.headers["content-type"].startswith("application/atom+xml") and "New guidelines" in feed.text
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none'
    (folder.parent / "secret.html").write_text("not for the public")
    for path in ("releases.json", "..%2Fsecret.html", "%2E%2E/secret.html", "../secret.html"):
        assert httpx.get(f"{site.url}/newsroom/{path}").status_code == 404, path


def test_settings_are_read_and_checked(tmp_path: Path) -> None:
    services, _cli = make_workspace(tmp_path, OUTREACH_FOUR_EYES="yes", OUTREACH_SESSION_LIFETIME="30m",
                                    OUTREACH_LOGIN_ATTEMPTS="3")  # fmt: skip
    settings = services.settings
    assert (settings.four_eyes, settings.session_lifetime, settings.login_attempts) == (True, 1800.0, 3)
    services.close()
    from outreach.domain.errors import ConfigError

    for name, value in (("OUTREACH_FOUR_EYES", "maybe"), ("OUTREACH_SESSION_LIFETIME", "soon"),
                        ("OUTREACH_LOGIN_ATTEMPTS", "0")):  # fmt: skip
        with pytest.raises(ConfigError):
            load_settings(tmp_path / "ws", env={name: value})
    (tmp_path / "ws" / "outreach.toml").write_text('[approval]\nfour_eyes = true\n[web]\nsession_lifetime = "1h"\n')
    loaded = load_settings(tmp_path / "ws", env={})
    assert loaded.four_eyes is True and loaded.session_lifetime == 3600.0


def test_a_body_too_large_is_refused_unread(site: Site) -> None:
    huge = b"name=" + b"a" * (300 * 1024)
    answer = httpx.post(f"{site.url}/login", content=huge, headers={"content-type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 413 and answer.headers["x-content-type-options"] == "nosniff"

    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(100):
            yield b"a" * 10_000

    chunked = httpx.post(f"{site.url}/login", content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"})
    assert chunked.status_code == 413  # cut off where the limit is
    assert "outreach_session" not in chunked.headers.get("set-cookie", "")
