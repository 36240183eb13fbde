"""The delivery log page: the CLI's filters and a search by recipient, newest first,
older pages by keyset (``?before=ID``) with nothing lost or repeated, and the filtered
view as CSV, streamed whole."""

from __future__ import annotations

import csv
import html
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest
from argon2 import PasswordHasher
from sqlalchemy import insert, select, update

from outreach import review
from outreach.db.models import deliveries, delivery_events, users
from outreach.db.users import SqlUsers
from outreach.domain.audience import parse
from outreach.imports import import_files
from tests.conftest import ROOT
from tests.test_web import PASSWORD, Site, add_user, make_workspace

ROW = re.compile(r'<tr class="event-(\w+)">\s*<td>(?:<a [^>]*>)?(\d+)<')


@pytest.fixture
def busy(tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    """The sample's 830 stakeholders, and a step queued for the industry members."""
    services, _cli = make_workspace(tmp_path, database_url)
    import_files(services.contacts, sorted((ROOT / "contacts").glob("*.csv")))
    step = services.outbox.ensure_step(campaign="cop-2014", key="adhoc-industry", channel="email",
                                       template="cop-industry", audience="kind:industry",
                                       send_at=datetime(2014, 9, 5, 7, tzinfo=UTC))  # fmt: skip
    services.outbox.materialize(step)
    add_user(services, "vera", "viewer")
    with Site(services) as site:
        browser = site.browser()
        browser.sign_in("vera")
        yield site, browser
    services.close()


def ids(page: str) -> list[int]:
    return [int(m[2]) for m in ROW.finditer(page)]


def test_pages_go_back_by_keyset_and_miss_nothing(busy) -> None:  # type: ignore[no-untyped-def]
    site, browser = busy
    everything = [e["id"] for e in review.iter_log(site.services, review.LogFilter(event="materialized"))]
    assert len(everything) > 500
    seen: list[int] = []
    link: str | None = "/log?event=materialized"
    pages = 0
    while link:
        page = browser.get(link.replace("&amp;", "&"))
        assert page.status_code == 200
        rows = ids(page.text)
        assert 0 < len(rows) <= 50
        seen += rows
        found = re.search(r'href="(/log\?[^"]*before=\d+[^"]*)">Older', page.text)
        link = found[1] if found else None
        pages += 1
    assert seen == sorted(everything, reverse=True)  # newest first, none twice, none left out
    assert pages == -(-len(everything) // 50)


def test_filters_and_the_search_by_recipient(busy) -> None:  # type: ignore[no-untyped-def]
    site, browser = busy
    someone = site.services.contacts.find(parse("kind:industry country:WS"), limit=1)[0]
    part = someone.email.split("@")[1][:12]
    found = browser.get(f"/log?q={part}").text
    assert someone.email in found and f'value="{part}"' in found
    exact = browser.get(f"/log?contact={someone.email}").text
    assert len(ids(exact)) == 1 and someone.email in exact
    assert ids(browser.get("/log?campaign=no-such-campaign").text) == []
    assert ids(browser.get("/log?event=sent").text) == []
    assert len(ids(browser.get("/log?channel=email&step=adhoc-industry").text)) == 50
    assert ids(browser.get("/log?until=2000-01-01").text) == []
    bad = browser.get("/log?since=yesterday-ish")
    assert bad.status_code == 400 and "not a date" in bad.text
    assert browser.get("/log?before=abc").status_code == 400


def test_the_csv_is_the_filtered_view_whole(busy) -> None:  # type: ignore[no-untyped-def]
    site, browser = busy
    with browser.stream("GET", "/log.csv?event=materialized&channel=email") as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/csv")
        assert "attachment" in answer.headers["content-disposition"]
        assert "content-length" not in answer.headers  # streamed, not built whole first
        text = "".join(answer.iter_text())
    rows = list(csv.DictReader(io.StringIO(text)))
    expected = [e["id"] for e in review.iter_log(site.services, review.LogFilter(event="materialized"))]
    assert [int(r["id"]) for r in rows] == expected  # all of them, oldest first
    assert set(rows[0]) == set(review.LOG_COLUMNS)
    assert {r["event"] for r in rows} == {"materialized"} and all(r["email"] for r in rows)
    searched = list(csv.DictReader(io.StringIO(browser.get("/log.csv?q=tonga").text)))
    assert searched and all("tonga" in r["email"] for r in searched)
    assert site.browser(accept_html=False).get("/log.csv").status_code == 401


def test_the_csv_writes_what_servers_said_as_text(busy) -> None:  # type: ignore[no-untyped-def]
    """A cell that a spreadsheet would run as a formula (= + - @) is written with a
    leading ', every column in the order of LOG_COLUMNS."""
    site, browser = busy
    engine = site.services.engine
    with engine.begin() as conn:
        delivery, step_id = conn.execute(select(deliveries.c.id, deliveries.c.step_id).limit(1)).one()
        conn.execute(insert(delivery_events).values(
            step_id=step_id, delivery_id=delivery, at=datetime.now(UTC), event="failed",
            detail={"code": 550, "reply": '=HYPERLINK("http://evil.example","x")', "stage": "-RCPT",
                    "reason": "@once"}))  # fmt: skip
    rows = list(csv.reader(io.StringIO(browser.get("/log.csv?event=failed").text)))
    assert tuple(rows[0]) == review.LOG_COLUMNS and len(rows) == 2
    row = dict(zip(rows[0], rows[1], strict=True))
    assert row["reply"] == '\'=HYPERLINK("http://evil.example","x")'
    assert (row["stage"], row["reason"], row["code"], row["event"]) == ("'-RCPT", "'@once", "550", "failed")
    assert json.loads(row["detail"])["reply"].startswith("=HYPERLINK")  # JSON: starts with {, left as it is


def _csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page)[1]  # type: ignore[index]


def test_signing_in_from_the_log_keeps_the_page_asked_for(busy) -> None:  # type: ignore[no-untyped-def]
    """Sent to sign in from a filtered log page, a person who mistypes the password (or
    whose form expired, or who is held back by the limit on failures) is still taken to
    that page once signed in: the form posts to /login, and carries where to go. A
    password hashed with argon2's former parameters (64 MiB) still lets its owner in,
    and is hashed again with the lighter ones on the way."""
    site, _vera = busy
    engine = site.services.engine
    SqlUsers(engine).add("olga", "viewer", PASSWORD)
    heavy = PasswordHasher().hash(PASSWORD)
    assert "m=65536" in heavy
    with engine.begin() as conn:
        conn.execute(update(users).where(users.c.name == "olga").values(password_hash=heavy))
    target = "/log?campaign=cop-2014&event=materialized"
    kept = f'name="next" value="{html.escape(target)}"'
    browser = site.browser()
    asked = browser.get(target)
    assert asked.status_code == 303 and asked.headers["location"] == f"/login?next={quote(target, safe='')}"
    form = browser.get(asked.headers["location"])
    assert kept in form.text
    wrong = browser.post("/login", data={"name": "olga", "password": "not the password", "csrf": _csrf(form.text),
                                         "next": target})  # fmt: skip
    assert wrong.status_code == 401 and kept in wrong.text
    expired = browser.post("/login", data={"name": "olga", "password": PASSWORD, "csrf": "stale", "next": target})
    assert expired.status_code == 403 and kept in expired.text
    right = browser.post("/login", data={"name": "olga", "password": PASSWORD, "csrf": _csrf(expired.text),
                                         "next": target})  # fmt: skip
    assert right.status_code == 303 and right.headers["location"] == target
    assert len(ids(browser.get(target).text)) == 50
    with engine.connect() as conn:
        stored = conn.execute(select(users.c.password_hash).where(users.c.name == "olga")).scalar_one()
    assert stored != heavy and "$argon2id$" in stored and "m=19456,t=2,p=1" in stored
    assert site.browser().sign_in("olga").status_code == 303  # the new hash lets her in as well
    held = site.browser()
    for _ in range(5):
        held.sign_in("otto", "guess guess guess", ok=False)
    form = held.get(f"/login?next={quote(target, safe='')}")
    limited = held.post("/login", data={"name": "otto", "password": "guess", "csrf": _csrf(form.text), "next": target})
    assert limited.status_code == 429 and kept in limited.text
