"""The links every email carries, end to end: a real email to a real SMTP server, its
List-Unsubscribe URL taken from the message as received; GET shows a page and changes
nothing, RFC 8058's one-click POST unsubscribes at once and the next step skips that
contact with the reason; the view-in-browser link shows what the recipient got. On
SQLite and PostgreSQL."""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from outreach.app import Services
from tests.smtp_server import Recorder, SmtpServer
from tests.test_web import SCRIPT, Site, add_user, fire_step, launch, make_workspace, send_all
from tests.test_web_routes import database


def received(recorder: Recorder, address: str) -> list[EmailMessage]:
    return [BytesParser(policy=policy.default).parsebytes(raw)  # type: ignore[misc]
            for rcpt, _mid, raw in recorder.accepted if rcpt == address]  # fmt: skip


def one_click_path(message: EmailMessage) -> str:
    """The path of the https/http target of the message's List-Unsubscribe header."""
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = re.search(r"<(https?://[^>]+)>", str(message["List-Unsubscribe"]))[1]  # type: ignore[index]
    return urlsplit(url).path


@pytest.fixture
def mailed(tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    services, cli = make_workspace(tmp_path, database_url)
    recorder = Recorder()
    launch(services, cli, recorder)
    add_user(services, "vera", "viewer")
    with Site(services) as site:
        yield site, recorder
    services.close()


def _status(services: Services, address: str) -> str:
    contact = services.contacts.get(address)
    assert contact is not None
    return contact.status


def test_one_click_unsubscribe_end_to_end(mailed: tuple[Site, Recorder]) -> None:
    site, recorder = mailed
    services = site.services
    [message] = received(recorder, "ana.tuilagi@example.com")
    path = one_click_path(message)
    assert "Unsubscribe: http" in message.get_body(("plain",)).get_content()  # and in the text
    queued = fire_step(services, "follow-up")  # the next step, queued before she leaves
    assert queued

    before = database(services)
    page = httpx.get(site.url + path)  # a mail scanner, or the person, opens the link
    assert page.status_code == 200 and "Unsubscribe?" in page.text and 'name="unsubscribe"' in page.text
    assert "ana.tuilagi@example.com" not in page.text and "a***@example.com" in page.text
    assert httpx.head(site.url + path).status_code == 200
    assert database(services) == before and _status(services, "ana.tuilagi@example.com") == "active"

    # RFC 8058: the mail provider posts this body, with no cookie and no CSRF token
    done = httpx.post(site.url + path, content=b"List-Unsubscribe=One-Click",
                      headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert done.status_code == 200 and "You are unsubscribed" in done.text
    assert _status(services, "ana.tuilagi@example.com") == "unsubscribed"
    [event] = services.outbox.events(event="unsubscribed", limit=10)
    sent = services.outbox.events(event="sent", email="ana.tuilagi@example.com")[-1]
    assert (event["email"], event["delivery_id"], event["step"]) == (sent["email"], sent["delivery_id"], sent["step"])
    assert event["detail"] == {"campaign": "cop-2014", "via": "one-click", "was": "active"}
    again = httpx.post(site.url + path, data={"List-Unsubscribe": "One-Click"})  # twice: harmless
    assert again.status_code == 200 and len(services.outbox.events(event="unsubscribed")) == 1

    with SmtpServer(recorder) as server:
        send_all(services, server.url)
    assert len(received(recorder, "ana.tuilagi@example.com")) == 1  # the follow-up did not go
    assert len(received(recorder, "ben.okafor@example.com")) == 2
    skipped = services.outbox.events(event="skipped", email="ana.tuilagi@example.com")
    assert len(skipped) == 1 and skipped[0]["step"] in queued
    assert "contact is unsubscribed" in skipped[0]["detail"]["reason"]

    viewer = site.browser()
    viewer.sign_in("vera")
    contact = viewer.get("/contacts/ana.tuilagi@example.com").text
    assert "active → unsubscribed" in contact and "one-click" in contact
    assert "unsubscribed" in viewer.get("/log?event=unsubscribed").text


def test_the_pages_button_unsubscribes_and_altered_links_do_nothing(mailed: tuple[Site, Recorder]) -> None:
    site, recorder = mailed
    services = site.services
    [message] = received(recorder, "ben.okafor@example.com")
    path = one_click_path(message)
    prefix, token = path.rsplit("/", 1)
    campaign_path, contact_id = prefix.rsplit("/", 1)
    other = services.contacts.get("ana.tuilagi@example.com")
    before = database(services)
    for forged in (f"{prefix}/{token[:-1]}{'A' if token[-1] != 'A' else 'B'}",  # one character changed
                   f"{campaign_path}/{other.id}/{token}",  # someone else's id with ben's token
                   f"/u/another-campaign/{contact_id}/{token}"):  # fmt: skip
        for answer in (httpx.get(site.url + forged),
                       httpx.post(site.url + forged, data={"List-Unsubscribe": "One-Click"}),
                       httpx.post(site.url + forged, data={"unsubscribe": "yes"})):  # fmt: skip
            assert answer.status_code == 404, forged
    assert httpx.post(site.url + path, data={"something": "else"}).status_code == 400
    assert database(services) == before
    done = httpx.post(site.url + path, data={"unsubscribe": "yes"})
    assert done.status_code == 200 and "You are unsubscribed" in done.text
    assert _status(services, "ben.okafor@example.com") == "unsubscribed"
    assert services.outbox.events(event="unsubscribed")[0]["detail"]["via"] == "page"
    page = httpx.get(site.url + path)
    assert "You are unsubscribed" in page.text and 'name="unsubscribe"' not in page.text


def test_view_in_browser_shows_what_the_recipient_got(mailed: tuple[Site, Recorder]) -> None:
    site, recorder = mailed
    [message] = received(recorder, "ana.tuilagi@example.com")
    text = message.get_body(("plain",)).get_content()
    url = re.search(r"View in your browser: (\S+)", text)[1]  # type: ignore[index]
    page = httpx.get(site.url + urlsplit(url).path)
    assert page.status_code == 200
    got = message.get_body(("html",)).get_content()
    assert page.text.replace("\r\n", "\n").strip() == got.replace("\r\n", "\n").strip()
    assert "&lt;script&gt;" in page.text and SCRIPT not in page.text  # her name, escaped as sent
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script" not in csp and "frame-ancestors 'none'" in csp
    path = urlsplit(url).path
    forged = path[:-2] + ("xx" if not path.endswith("xx") else "yy")  # never the real one
    assert httpx.get(site.url + forged).status_code == 404
