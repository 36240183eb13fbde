"""The delivery log page: the CLI's filters and a search by recipient, newest first,
older pages by keyset (``?before=ID``) with nothing lost or repeated, and the filtered
view as CSV, streamed whole."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from outreach import review
from outreach.domain.audience import parse
from outreach.imports import import_files
from tests.conftest import ROOT
from tests.test_web import Site, add_user, make_workspace

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
