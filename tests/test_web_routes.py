"""Route by route, from the application's own route table: an anonymous request gets
no data (the sign-in page, or 401) except on the few public routes named here, and an
anonymous or CSRF-less request that would change something changes nothing. A route
added later is in the table, so it is tested here without anyone remembering to."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import MetaData, select

from outreach.app import Services
from outreach.db.users import SqlUsers
from outreach.web import create_app
from tests.smtp_server import Faults, Recorder
from tests.test_web import Site, add_user, launch, make_workspace

# The routes anyone may use, and only these (path, method). A new public route must
# be added here on purpose, with a test of what it shows.
PUBLIC = {
    ("/u/{campaign}/{contact_id:int}/{token}", "GET"),
    ("/u/{campaign}/{contact_id:int}/{token}", "POST"),
    ("/v/{campaign}/{step}/{contact_id:int}/{token}", "GET"),
    ("/newsroom", "GET"),
    ("/newsroom/", "GET"),
    ("/newsroom/{name}", "GET"),
    ("/healthz", "GET"),
    ("/login", "GET"),
    ("/login", "POST"),
    ("/static", "GET"),
}


def database(services: Services) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (the job store's too), to see that nothing changed."""
    meta = MetaData()
    meta.reflect(services.engine)
    with services.engine.connect() as conn:
        return {name: sorted(map(tuple, conn.execute(select(table))), key=repr)
                for name, table in meta.tables.items()}  # fmt: skip


def routes(services: Services) -> list[tuple[str, str]]:
    """(path, method) of every route of the application, HEAD left out (it is GET's)."""
    out = []
    for route in create_app(services).routes:
        methods = getattr(route, "methods", None) or {"GET"}
        out += [(route.path, m) for m in sorted(methods) if m != "HEAD"]  # type: ignore[attr-defined]
    return out


def concrete(path: str, values: dict[str, str]) -> str:
    """A route's path with real values for its parameters."""
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values[m[1]], path)


def values_for(services: Services) -> dict[str, str]:
    """Real things for every path parameter: what a leak would show."""
    ana = services.contacts.get("ana.tuilagi@example.com")
    step = next(s for s in services.outbox.steps("cop-2014") if s.channel == "email" and s.status != "scheduled")
    delivery = services.outbox.events(event="failed", limit=1)[0]["delivery_id"]
    return {"campaign": "cop-2014", "contact_id": str(ana.id), "token": "forged0000000000000000",
            "step": step.key, "delivery": str(delivery), "address": ana.email, "name": "index.html",
            "path": "app.css"}  # fmt: skip


SECRETS = ("cop-2014", "Guidelines for Industry", "ana.tuilagi", "Tuilagi", "ben.okafor", "550", "554")


@pytest.fixture
def launched(tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    services, cli = make_workspace(tmp_path, database_url)
    launch(services, cli, Recorder(Faults(rejected={"ben.okafor@example.com"})))
    for name, role in (("vera", "viewer"), ("ada", "admin")):
        add_user(services, name, role)
    with Site(services) as site:
        yield site
    services.close()


def test_the_public_routes_named_here_are_in_the_table(launched: Site) -> None:
    table = set(routes(launched.services))
    assert table >= PUBLIC, f"a public route is gone: {PUBLIC - table}"
    assert len(table) > len(PUBLIC) + 10  # the staff pages are there to be tested


def test_anonymous_requests_get_no_data_and_change_nothing(launched: Site) -> None:
    services = launched.services
    values = values_for(services)
    before = database(services)
    checked = 0
    for path, method in routes(services):
        if (path, method) in PUBLIC:
            continue
        url = concrete(path, values)
        for client in (launched.browser(), launched.browser(accept_html=False)):
            answer = client.request(method, url, data={"post_id": "1", "csrf": "x"} if method == "POST" else None)
            if method == "GET" and client.headers.get("accept", "").startswith("text/html"):
                assert answer.status_code == 303, (method, url, answer.status_code)
                assert answer.headers["location"].startswith("/login?next="), (method, url)
            else:
                assert answer.status_code == 401, (method, url, answer.status_code)
            leaked = [s for s in SECRETS if s in answer.text]
            assert not leaked, (method, url, leaked)
            checked += 1
    assert checked >= 30
    assert database(services) == before


def _altered(token: str) -> str:
    """``token`` with its last character changed (whatever it was: never the same)."""
    return token[:-1] + ("1" if token.endswith("0") else "0")


def test_a_post_without_the_sessions_csrf_token_changes_nothing(launched: Site) -> None:
    services = launched.services
    values = values_for(services)
    admin, other = launched.browser(), launched.browser()
    admin.sign_in("ada")
    other.sign_in("vera")
    before = database(services)  # with both sessions
    posts = [(p, m) for p, m in routes(services) if m == "POST" and (p, m) not in PUBLIC]
    assert len(posts) >= 6
    for path, _method in posts:
        url = concrete(path, values)
        for form in ({"post_id": "1"}, {"post_id": "1", "csrf": ""}, {"post_id": "1", "csrf": other.csrf},
                     {"post_id": "1", "csrf": _altered(admin.csrf)}):  # fmt: skip
            answer = admin.post(url, data=form)
            assert answer.status_code == 403, (url, form, answer.status_code)
        header = admin.post(url, data={"post_id": "1"}, headers={"x-csrf-token": other.csrf})
        assert header.status_code == 403
    assert database(services) == before
    assert admin.get("/campaigns").status_code == 200  # still signed in: nothing was undone


def test_the_public_routes_show_nothing_for_a_forged_link(launched: Site) -> None:
    services = launched.services
    values = values_for(services)
    before = database(services)
    client = httpx.Client(base_url=launched.url)
    ana = values["contact_id"]
    for url in (f"/u/cop-2014/{ana}/forged0000000000000000", f"/v/cop-2014/{values['step']}/{ana}/forged00",
                f"/u/cop-2014/{int(ana) + 1}/forged0000000000000000", "/u/cop-2014/x/y"):  # fmt: skip
        for method in ("GET", "POST"):
            answer = client.request(method, url, data={"List-Unsubscribe": "One-Click"})
            assert answer.status_code in (404, 405), (method, url)
            assert not [s for s in SECRETS[2:] if s in answer.text], url
    assert database(services) == before
    assert SqlUsers(services.engine).get("ada") is not None
