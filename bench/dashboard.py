"""The web dashboard over a large delivery log: ``outreach serve`` answering the log
page (unfiltered, by each filter, deep in its pages), a contact's page and the whole
log as CSV, against the bare SQL of the same page run directly, in the same run.

The store is made with outreach's own migrations (``open_database``) and filled in
bulk (the DB-API's executemany on SQLite, COPY on PostgreSQL): about 100,000 contacts
of every kind, five campaigns (each with its waves, emails fired per recipients' zone,
an X thread and a press release) and ``--rows`` deliveries (default 1,000,000) with
their events: materialized, sending, then sent, deferred and sent on a retry, failed
(5xx, or after three deferrals), skipped, uncertain and sent again; step events
(active, paused, held) and unsubscribes with their consent history too.

Each page is asked for ``--requests`` times (default 200; each time another campaign,
step, event, address, window or search word) by a signed-in client, one request at a
time; p50 and p95 of the wall time of each, and the same for the bare query of that
page (same filters, same limit, one connection: sqlite3 or psycopg), so the ratio is
what the application adds. ``/log.csv`` of every row is timed on a fresh server with
its peak RSS (VmHWM), and so is ``outreach log --format csv --limit 0``.

Run: .venv/bin/python bench/dashboard.py [--rows N] [--requests N] [--backend sqlite|postgres|both]
SQLite is run as outreach leaves it (outreach runs no ANALYZE); --analyze runs one.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from outreach.channels.maildir import free_port  # noqa: E402
from outreach.db.engine import open_database  # noqa: E402
from outreach.db.users import SqlUsers  # noqa: E402
from tools.pgtemp import pg_bin, postgres_server  # noqa: E402

PASSWORD = "bench bench bench"
PAGE = 50  # outreach.web.log.PAGE: the page reads one more to know whether there is an older one
TARGET_P95 = 0.150
TARGET_RSS = 150 * 2**20

# -- what the store holds --------------------------------------------------------------

FIRST = ("ana", "ben", "mia", "pat", "sione", "losa", "yuki", "omar", "ines", "kofi", "lena", "raj",
         "sara", "tomas", "amina", "chen", "marta", "ivan", "nadia", "leo", "fatima", "jon", "elif", "noa")  # fmt: skip
LAST = ("tuilagi", "okafor", "kamau", "lee", "fifita", "tupou", "tanaka", "haddad", "garcia", "mensah",
        "novak", "patel", "silva", "berg", "diallo", "wang", "rossi", "petrov", "karim", "martin")  # fmt: skip
COUNTRIES = (("GB", "Europe/London"), ("FR", "Europe/Paris"), ("DE", "Europe/Berlin"), ("TR", "Europe/Istanbul"),
             ("NG", "Africa/Lagos"), ("KE", "Africa/Nairobi"), ("ZA", "Africa/Johannesburg"),
             ("US", "America/New_York"), ("BR", "America/Sao_Paulo"), ("IN", "Asia/Kolkata"),
             ("JP", "Asia/Tokyo"), ("FJ", "Pacific/Fiji"), ("WS", "Pacific/Apia"), ("TO", "Pacific/Tongatapu"),
             ("AU", "Australia/Sydney"), ("CH", "Europe/Zurich"))  # fmt: skip
KINDS = (("industry", 70), ("partner", 10), ("media", 8), ("government", 7), ("civil-society", 5))
CAMPAIGNS = (("cop-2014", "Guidelines for Industry on Child Online Protection", datetime(2014, 9, 5, 7, tzinfo=UTC)),
             ("wsis-2015", "WSIS Forum 2015", datetime(2015, 5, 25, 8, tzinfo=UTC)),
             ("telecom-2016", "ITU Telecom World 2016", datetime(2016, 11, 14, 2, tzinfo=UTC)),
             ("cop-2017", "Child Online Protection, second edition", datetime(2017, 6, 12, 7, tzinfo=UTC)),
             ("giga-2019", "Giga: connecting every school", datetime(2019, 9, 25, 13, tzinfo=UTC)))  # fmt: skip
# plan step: (channel, wave, weight: how much of the contacts it reaches, firings)
PLAN = (("embargoed-media", "email", "launch", 8, 1), ("press-release", "press", "launch", 0, 1),
        ("launch-thread", "x", "launch", 0, 1), ("industry-email", "email", "launch", 55, 4),
        ("partner-email", "email", "launch", 12, 1), ("regional-rollout", "email", "regional", 15, 2),
        ("follow-up", "email", "launch", 45, 4))  # fmt: skip
# what became of a delivery, and how often (out of 1000)
OUTCOMES = (("sent", 850), ("deferred-sent", 60), ("failed", 30), ("deferred-failed", 10), ("skipped", 35),
            ("uncertain-sent", 15))  # fmt: skip
SEARCHES = ("tuilagi", "okafor", "kamau", "telecom", "ana.t", "mobile-7", "isp-12", "ministry", ".example.net",
            "press-3", "fifita", "garcia")  # fmt: skip


def ts(t: datetime) -> str:
    """A time as outreach's UTCDateTime stores it on SQLite."""
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


@dataclass
class Step:
    id: int
    campaign: str
    key: str
    plan_step: str
    channel: str
    wave: str
    send_at: datetime


@dataclass
class Fill:
    """What was made, for the requests to ask about."""

    contacts: int = 0
    deliveries: int = 0
    events: int = 0
    steps: list[Step] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)  # addresses of contacts with deliveries
    seconds: float = 0.0


def contact_rows(n: int, rng: random.Random, now: str) -> Iterator[tuple[Any, ...]]:
    weights = [w for _k, w in KINDS]
    for i in range(1, n + 1):
        kind = rng.choices([k for k, _w in KINDS], weights)[0]
        country, zone = COUNTRIES[i % len(COUNTRIES)]
        first, last = FIRST[i % len(FIRST)], LAST[(i // len(FIRST)) % len(LAST)]
        org = {"industry": f"mobile-{i % 900}", "partner": f"ngo-{i % 60}", "media": f"press-{i % 120}",
               "government": f"ministry-{i % 80}", "civil-society": f"isp-{i % 40}"}[kind]  # fmt: skip
        email = f"{first}.{last}.{i}@{org}.example.{('org', 'com', 'net')[i % 3]}"
        status = "active" if i % 97 else ("unsubscribed", "bounced")[i % 2]
        yield (i, email, email, f"{first.title()} {last.title()}", org.replace("-", " ").title(), kind,
               "mobile operator" if kind == "industry" else None, country, "en", zone, status,
               '{"membership": "itu-sector"}' if i % 5 == 0 else "{}", now, now)  # fmt: skip


def plan_steps(deliveries: int, contacts: int) -> list[tuple[Step, int]]:
    """Every firing of every campaign, with how many deliveries it has (email: its
    audience; an X thread: 4 posts; a press release: 1)."""
    firings: list[tuple[Step, int]] = []
    sid = 0
    units = sum(w for *_x, w, _f in PLAN) * len(CAMPAIGNS)
    posts = len(CAMPAIGNS) * 5
    per_unit = max(deliveries - posts, 0) / units
    for campaign, _name, launch in CAMPAIGNS:
        for plan_step, channel, wave, weight, count in PLAN:
            for f in range(count):
                sid += 1
                offset = {"embargoed-media": -timedelta(days=2), "follow-up": timedelta(days=14),
                          "regional-rollout": timedelta(days=7)}.get(plan_step, timedelta())  # fmt: skip
                at = launch + offset + timedelta(hours=3 * f)
                wave_id = "launch" if wave == "launch" else ("pacific", "africa")[f % 2]
                key = f"{plan_step}@{wave_id + '@' if wave_id != 'launch' else ''}{at:%Y%m%dT%H%MZ}"
                n = {"x": 4, "press": 1}.get(channel) or min(contacts, round(per_unit * weight / count))
                firings.append((Step(sid, campaign, key, plan_step, channel, wave_id, at), n))
    # the rounding: the last email firing takes up what is left
    total = sum(n for _s, n in firings)
    last = max(i for i, (s, _n) in enumerate(firings) if s.channel == "email")
    step, n = firings[last]
    firings[last] = (step, max(0, min(contacts, n + deliveries - total)))
    return firings


def outcome_events(outcome: str, t: datetime, rng: random.Random, email: str | None,
                   mid: str) -> tuple[list[tuple[str, str, str]], str, int, str | None]:  # fmt: skip
    """(events as (at, event, detail json), final status, attempts, last error)."""
    sent = json.dumps({"code": 250, "reply": f"2.0.0 Ok: queued as {rng.getrandbits(40):X}",
                       "duration_ms": round(rng.uniform(2, 90), 1), "message_id": mid, "attempt": 1})  # fmt: skip
    deferred = {"code": 451, "reply": "4.3.0 Temporary local problem", "duration_ms": 12.5, "attempt": 1,
                "stage": "DATA", "next_attempt": (t + timedelta(minutes=1)).isoformat()}  # fmt: skip
    out = [(ts(t), "sending", "{}")]
    later = t + timedelta(minutes=1)
    if outcome == "sent":
        return [*out, (ts(t), "sent", sent)], "sent", 1, None
    if outcome == "deferred-sent":
        out += [(ts(t), "deferred", json.dumps(deferred)), (ts(later), "sending", "{}"),
                (ts(later), "sent", sent.replace('"attempt": 1', '"attempt": 2'))]  # fmt: skip
        return out, "sent", 2, None
    if outcome == "failed":
        reply = f"5.1.1 <{email}>: Recipient address rejected: User unknown"
        out.append((ts(t), "failed", json.dumps({"code": 550, "reply": reply, "duration_ms": 4.1, "attempt": 1,
                    "stage": "RCPT", "bounce": "the address does not exist: the contact is marked bounced"})))  # fmt: skip
        return out, "failed", 1, f"550 {reply}"
    if outcome == "deferred-failed":
        for attempt in (1, 2):
            at = t + timedelta(minutes=attempt - 1)
            out += [(ts(at), "deferred", json.dumps({**deferred, "attempt": attempt})),
                    (ts(at + timedelta(minutes=1)), "sending", "{}")]  # fmt: skip
        end = t + timedelta(minutes=2)
        out.append((ts(end), "failed", json.dumps({**deferred, "attempt": 3, "reason": "gave up after 3 attempts"})))
        return out, "failed", 3, "451 4.3.0 Temporary local problem"
    if outcome == "skipped":
        return [(ts(t), "skipped", '{"reason": "contact is unsubscribed (checked at send time)"}')], "skipped", 0, None
    # uncertain: the reply was lost; sent again, labelled a possible duplicate
    out += [(ts(t), "uncertain", json.dumps({"reason": "the connection closed after the message was sent",
                                             "attempt": 1})), (ts(later), "sending", "{}"),
            (ts(later), "sent", sent)]  # fmt: skip
    return out, "sent", 2, None


def generate(rows: int, emails: list[str], seed: int = 7) -> tuple[Fill, Callable[[], Iterator[tuple[str, Any]]]]:
    """The plan of the fill, and generators of the deliveries and of the events (in
    the order of their ids: each firing's materialized events, then each delivery's)."""
    contacts = len(emails)
    fill = Fill(contacts=contacts, emails=emails)
    firings = plan_steps(rows, contacts)
    fill.steps = [s for s, _n in firings]
    outcomes, weights = zip(*OUTCOMES, strict=True)

    def walk() -> Iterator[tuple[str, Any]]:
        rng = random.Random(seed)
        did = 0
        eid = 0
        for step, n in sorted(firings, key=lambda f: f[0].send_at):
            t0 = step.send_at
            eid += 1
            yield "event", (eid, step.id, None, ts(t0 - timedelta(seconds=1)), "active", '{"reason": "fired"}')
            if step.channel == "email":
                people = rng.sample(range(1, contacts + 1), n)
            else:
                people = [None] * n
            first = did + 1
            for part, person in enumerate(people):
                did += 1
                yield "delivery", (did, step.id, person, None if person else part, step)
            for did_ in range(first, did + 1):
                eid += 1
                yield "event", (eid, step.id, did_, ts(t0), "materialized", "{}")
            if step.key.startswith("follow-up") and rng.random() < 0.5:
                eid += 1
                yield "event", (eid, step.id, None, ts(t0), "paused", '{"reason": "the relay refuses us: '
                                '421 4.7.0 Try again later", "action": "resume"}')  # fmt: skip
                eid += 1
                yield "event", (eid, step.id, None, ts(t0 + timedelta(minutes=5)), "active",
                                '{"reason": "resumed by a person"}')  # fmt: skip
            for k, person in enumerate(people):
                d = first + k
                t = t0 + timedelta(milliseconds=40 * k)
                outcome = rng.choices(outcomes, weights)[0] if person else "sent"
                if person and person % 97 == 0:
                    outcome = "skipped"
                mid = f"<{step.campaign}.{rng.getrandbits(64):016x}.{person or k}@example.org>"
                events, status, attempts, error = outcome_events(outcome, t, rng, emails[person - 1] if person
                                                                 else None, mid)  # fmt: skip
                yield "status", (d, status, attempts, mid if status == "sent" else None, error, events[-1][0],
                                 int(outcome.startswith("uncertain")))  # fmt: skip
                for at, event, detail in events:
                    eid += 1
                    yield "event", (eid, step.id, d, at, event, detail)

    return fill, walk  # type: ignore[return-value]


def _merged_deliveries(walk: Callable[[], Iterator[tuple[str, Any]]]) -> Iterator[tuple[str, Any]]:
    """The walk with each delivery's row completed by its status (which comes after
    its materialized event): deliveries are held back per firing, then released."""
    pending: dict[int, tuple[Any, ...]] = {}
    for kind, row in walk():
        if kind == "delivery":
            pending[row[0]] = row
        elif kind == "status":
            did, status, attempts, mid, error, updated, uncertain = row
            d_id, step_id, contact_id, part, step = pending.pop(did)
            yield "delivery", (d_id, step_id, contact_id, part, status, attempts, ts(step.send_at), uncertain,
                               mid, error, updated)  # fmt: skip
        else:
            yield kind, row


def fill_store(url: str, rows: int, contacts: int, *, analyze: bool) -> Fill:
    """Create the schema with outreach's migrations and fill it in bulk."""
    started = time.perf_counter()
    engine = open_database(url)
    SqlUsers(engine).add("bench", "viewer", PASSWORD)
    engine.dispose()
    now = datetime(2014, 6, 1, tzinfo=UTC)
    contact_list = list(contact_rows(contacts, random.Random(11), ts(now)))
    fill, walk = generate(rows, [c[1] for c in contact_list])
    step_rows = [(s.id, s.campaign, s.key, s.channel, "cop-" + s.plan_step, "kind:industry", ts(s.send_at), "active",
                  json.dumps({"plan_step": s.plan_step, "wave": s.wave, "requires": [], "misfire_s": 3600}), ts(now))
                 for s in fill.steps]  # fmt: skip
    campaign_rows = [(cid, name, f"schedules/{cid}.yaml", "0" * 64, "active", "sarah", ts(launch), "0" * 64, "{}",
                      ts(now), "olga") for cid, name, launch in CAMPAIGNS]  # fmt: skip
    consent = [(i, i, ts(now + timedelta(days=i % 300)), "active", c[10], ("page", "cli")[i % 2],
                CAMPAIGNS[i % len(CAMPAIGNS)][0], None, None)
               for i, c in enumerate(contact_list, 1) if c[10] != "active"]  # fmt: skip
    if url.startswith("sqlite"):
        _fill_sqlite(url, fill, walk, contact_list, step_rows, campaign_rows, consent, analyze)
    else:
        _fill_postgres(url, fill, walk, contact_list, step_rows, campaign_rows, consent)
    fill.seconds = time.perf_counter() - started
    return fill


INSERTS = {
    "contacts": "INSERT INTO contacts (id, email, email_key, name, organization, kind, sector, country, language, "
                "timezone, status, attrs, created_at, updated_at) VALUES ({})",
    "steps": "INSERT INTO steps (id, campaign, key, channel, template, audience, send_at, status, settings, "
             "created_at) VALUES ({})",
    "campaigns": "INSERT INTO campaigns (id, name, plan_file, plan_hash, status, approved_by, approved_at, "
                 "approved_hash, overrides, updated_at, scheduled_by) VALUES ({})",
    "consent_events": "INSERT INTO consent_events (id, contact_id, at, status_from, status_to, via, campaign, actor, "
                      "reason) VALUES ({})",
    "deliveries": "INSERT INTO deliveries (id, step_id, contact_id, part, status, attempts, due_at, uncertain, "
                  "message_id, last_error, updated_at) VALUES ({})",
    "delivery_events": "INSERT INTO delivery_events (id, step_id, delivery_id, at, event, detail) VALUES ({})",
}  # fmt: skip


def _count(fill: Fill, kind: str, row: tuple[Any, ...]) -> None:
    if kind == "event":
        fill.events += 1
    else:
        fill.deliveries += 1


def _fill_sqlite(url: str, fill: Fill, walk: Any, contact_list: list[Any], step_rows: list[Any],
                 campaign_rows: list[Any], consent: list[Any], analyze: bool) -> None:  # fmt: skip
    db = sqlite3.connect(url.removeprefix("sqlite:///"))
    db.execute("PRAGMA synchronous = OFF")
    marks = lambda n: ", ".join("?" * n)  # noqa: E731
    with db:
        for table, rows in (("contacts", contact_list), ("steps", step_rows), ("campaigns", campaign_rows),
                            ("consent_events", consent)):  # fmt: skip
            db.executemany(INSERTS[table].format(marks(len(rows[0]))), rows)
    deliveries_sql = INSERTS["deliveries"].format(marks(11))
    events_sql = INSERTS["delivery_events"].format(marks(6))
    batch: dict[str, list[Any]] = {"delivery": [], "event": []}
    for kind, row in _merged_deliveries(walk):
        batch[kind].append(row)
        _count(fill, kind, row)
        if len(batch["event"]) >= 200_000:
            with db:
                db.executemany(deliveries_sql, batch["delivery"])
                db.executemany(events_sql, batch["event"])
            batch = {"delivery": [], "event": []}
    with db:
        db.executemany(deliveries_sql, batch["delivery"])
        db.executemany(events_sql, batch["event"])
    if analyze:
        db.execute("ANALYZE")
    db.close()


def _fill_postgres(url: str, fill: Fill, walk: Any, contact_list: list[Any], step_rows: list[Any],
                   campaign_rows: list[Any], consent: list[Any]) -> None:  # fmt: skip
    import psycopg

    def columns(table: str) -> str:
        return INSERTS[table].split(f"INSERT INTO {table} ", 1)[1].split(" VALUES", 1)[0]

    with psycopg.connect(libpq(url)) as db:
        db.execute("SET TIME ZONE 'UTC'")  # the times written are UTC's, as outreach stores them
        with db.cursor() as cur:
            for table, rows in (("contacts", contact_list), ("steps", step_rows), ("campaigns", campaign_rows),
                                ("consent_events", consent), ("deliveries", None), ("delivery_events", None)):  # fmt: skip
                with cur.copy(f"COPY {table} {columns(table)} FROM STDIN") as copy:
                    if rows is not None:
                        for row in rows:
                            copy.write_row(row)
                    elif table == "deliveries":
                        for kind, row in _merged_deliveries(walk):
                            _count(fill, kind, row)
                            if kind == "delivery":
                                copy.write_row(row)
                    else:
                        for kind, row in _merged_deliveries(walk):
                            if kind == "event":
                                copy.write_row(row)
            for table in ("contacts", "steps", "consent_events", "deliveries", "delivery_events"):
                cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        db.commit()
        db.autocommit = True
        db.execute("VACUUM ANALYZE")  # what autovacuum does after a load this size


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


# -- the SQL of each page, run directly ------------------------------------------------------

JOIN = """SELECT e.id, e.at, e.event, e.detail, e.step_id, e.delivery_id, c.email, d.part, d.attempts,
       s.campaign, s.key, s.channel
FROM delivery_events e JOIN steps s ON s.id = e.step_id
LEFT JOIN deliveries d ON d.id = e.delivery_id LEFT JOIN contacts c ON c.id = d.contact_id"""

Statements = list[tuple[str, Any]]


class Direct:
    """One connection of the driver itself (sqlite3, psycopg): runs the statements
    outreach runs for a page, caught on their way to the driver (``Pages``), and the
    page written as one plain join (the same filters and limit) for comparison."""

    def __init__(self, url: str) -> None:
        self.sqlite = url.startswith("sqlite")
        if self.sqlite:
            self.db: Any = sqlite3.connect(url.removeprefix("sqlite:///"))
        else:
            import psycopg

            self.db = psycopg.connect(libpq(url), autocommit=True)

    def run(self, statements: Statements) -> list[int]:
        """Every statement, each read whole, in one transaction as outreach runs them (on
        PostgreSQL its first sets how the others are planned, for that transaction);
        the first column of the rows of the last one that reads events whole (the ids
        are picked first, then their rows read: none when no event was picked)."""
        rows: list[Any] = []
        with self.db.transaction() if not self.sqlite else contextlib.nullcontext():
            for statement, parameters in statements:
                found = self.db.execute(statement, parameters).fetchall()
                if "delivery_events.detail" in statement:
                    rows = found
        return [r[0] for r in rows][:PAGE]

    def join(self, params: dict[str, str]) -> list[int]:
        sql, args = self._join(params)
        return [r[0] for r in self.db.execute(sql, args).fetchall()][:PAGE]

    def _join(self, params: dict[str, str]) -> tuple[str, list[Any]]:
        where: list[str] = []
        args: list[Any] = []

        def add(sql: str, *values: Any) -> None:
            where.append(sql if self.sqlite else sql.replace("?", "%s"))
            args.extend(values)

        if "campaign" in params:
            add("s.campaign = ?", params["campaign"])
        if "step" in params:
            add("(s.key = ? OR s.key LIKE ?)", params["step"], params["step"] + "@%")
        if "channel" in params:
            add("s.channel = ?", params["channel"])
        if "event" in params:
            add("e.event = ?", params["event"])
        if "contact" in params:
            add("lower(c.email) = ?", params["contact"].lower())
        if "q" in params:
            add("lower(c.email) LIKE ?" if self.sqlite else "c.email ILIKE ?", f"%{params['q'].lower()}%")
        if "since" in params:
            add("e.at >= ?", self._at(params["since"]))
        if "until" in params:
            add("e.at <= ?", self._at(params["until"], end=True))
        if "before" in params:
            add("e.id < ?", int(params["before"]))
        sql = JOIN + (" WHERE " + " AND ".join(where) if where else "") + f" ORDER BY e.id DESC LIMIT {PAGE + 1}"
        return sql, args

    def _at(self, text: str, end: bool = False) -> Any:
        from outreach.review import parse_when

        when = parse_when(text, end=end)
        return ts(when) if self.sqlite else when

    def explain(self, statement: str, parameters: Any) -> list[str]:
        """EXPLAIN QUERY PLAN on SQLite, EXPLAIN (ANALYZE, BUFFERS) on PostgreSQL."""
        if self.sqlite:
            return [r[3] for r in self.db.execute("EXPLAIN QUERY PLAN " + statement, parameters).fetchall()]
        return [r[0] for r in self.db.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters).fetchall()]

    def explain_join(self, params: dict[str, str]) -> list[str]:
        return self.explain(*self._join(params))

    def close(self) -> None:
        self.db.close()


class Pages:
    """The reads outreach's pages make (``outreach.review``, the contact and consent
    stores), made in this process to catch their SQL on its way to the driver."""

    def __init__(self, url: str, ws: Path) -> None:
        from outreach.app import build
        from outreach.config import load_settings
        from outreach.db.consent import SqlConsent

        env = {"OUTREACH_DATABASE_URL": "" if url.startswith("sqlite") else url, "OUTREACH_SECRET_KEY": "bench-key"}
        self.services = build(load_settings(ws, env=env))
        self.consent = SqlConsent(self.services.engine, self.services.clock)

    def _caught(self, read: Callable[[], Any]) -> Statements:
        from sqlalchemy import event

        caught: Statements = []

        def spy(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
            if statement.lstrip().upper().startswith("SELECT"):  # not the BEGIN outreach's SQLite engine sends
                caught.append((statement, parameters))

        event.listen(self.services.engine, "before_cursor_execute", spy)
        try:
            read()
        finally:
            event.remove(self.services.engine, "before_cursor_execute", spy)
        return caught

    def log(self, params: dict[str, str]) -> Statements:
        """What /log?params reads (outreach.web.log.log_page): steps, then events."""
        from outreach import review

        flt = review.LogFilter(
            campaign=params.get("campaign"), step=params.get("step"), wave=params.get("wave"),
            channel=params.get("channel"), event=params.get("event"), contact=params.get("contact"),
            since=review.parse_when(params["since"]) if "since" in params else None,
            until=review.parse_when(params["until"], end=True) if "until" in params else None,
            search=params.get("q"),
        )  # fmt: skip
        before = int(params["before"]) if "before" in params else None
        return self._caught(lambda: review.log_page(self.services, flt, before=before, limit=PAGE))

    def contact(self, address: str) -> Statements:
        """What /contacts/ADDRESS reads: the contact, their consent history, their events."""
        from outreach import review

        def read() -> None:
            found = self.services.contacts.get(address)
            assert found is not None, address
            self.consent.history(found.id)
            review.log_page(self.services, review.LogFilter(contact=found.email), limit=PAGE)

        return self._caught(read)

    def close(self) -> None:
        self.services.close()


# -- the server and a signed-in client ---------------------------------------------------------


class Server:
    """``outreach serve`` on a free port, as a process of its own."""

    def __init__(self, ws: Path, url: str, log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "OUTREACH_DATABASE_URL": url if not url.startswith("sqlite") else "",
               "OUTREACH_WORKSPACE": str(ws), "OUTREACH_SECRET_KEY": "bench-key",
               "OUTREACH_PUBLIC_URL": self.base, "OUTREACH_LOGIN_ATTEMPTS": "1000"}  # fmt: skip
        with log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "outreach", "-w", str(ws), "serve", "--port",
                                          str(self.port)], env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                sys.exit(f"outreach serve did not start; see {log}")
            time.sleep(0.1)

    def memory(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) of the server process, in bytes."""
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024

    def client(self) -> httpx.Client:
        client = httpx.Client(base_url=self.base, headers={"accept": "text/html"}, timeout=600)
        form = client.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)[1]  # type: ignore[index]
        answer = client.post("/login", data={"name": "bench", "password": PASSWORD, "csrf": token, "next": "/"})
        assert answer.status_code == 303, answer.text
        return client

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


ROW_ID = re.compile(r'<tr class="event-[^"]*">\s*<td>(?:<a [^>]*>)?(\d+)')
OLDER = re.compile(r'<a href="([^"]+)">Older</a>')


def page_ids(text: str) -> list[int]:
    return [int(i) for i in ROW_ID.findall(text)]


# -- the measurements ------------------------------------------------------------------------


@dataclass
class Timing:
    """One kind of page: the web page's times, its own SQL's run directly, the plain join's."""

    name: str
    web: list[float] = field(default_factory=list)
    sql: list[float] = field(default_factory=list)
    join: list[float] = field(default_factory=list)
    differ: int = 0  # pages whose rows are not those of the plain join
    slowest: tuple[float, str, dict[str, str], Statements] = (0.0, "", {}, [])

    @staticmethod
    def pct(values: list[float], q: float) -> float:
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    def add(self, web: float, path: str, params: dict[str, str], statements: Statements,
            shown: list[int], direct: Direct) -> None:  # fmt: skip
        start = time.perf_counter()
        ids = direct.run(statements)
        self.sql.append(time.perf_counter() - start)
        start = time.perf_counter()
        joined = direct.join(params)
        self.join.append(time.perf_counter() - start)
        self.web.append(web)
        assert shown == ids, f"{path}: the page shows {shown[:5]}..., its own query reads {ids[:5]}..."
        self.differ += shown != joined
        if web > self.slowest[0]:
            self.slowest = (web, path, dict(params), statements)


def requests_for(name: str, fill: Fill, rng: random.Random, n: int) -> Iterator[dict[str, str]]:
    """The query strings of ``n`` requests of one kind of page, each different."""
    campaigns = [c for c, _n, _l in CAMPAIGNS]
    plan = sorted({s.plan_step for s in fill.steps})
    for i in range(n):
        if name == "log":
            yield {}
        elif name == "campaign":
            yield {"campaign": campaigns[i % len(campaigns)]}
        elif name == "step":
            step = fill.steps[i % len(fill.steps)]
            yield {"campaign": step.campaign, "step": step.key if i % 2 else step.plan_step}
        elif name == "event":
            yield {"event": ("failed", "deferred", "skipped", "uncertain", "sent", "paused")[i % 6]}
        elif name == "channel":
            yield {"channel": ("email", "x", "press")[i % 3]}
        elif name == "contact":
            yield {"contact": rng.choice(fill.emails)}
        elif name == "since/until":  # a day with a firing, or six hours from an hour before one
            at = rng.choice(fill.steps).send_at
            if i % 2:
                yield {"since": f"{at:%Y-%m-%d}", "until": f"{at:%Y-%m-%d}"}
            else:
                start = at - timedelta(hours=1)
                yield {"since": f"{start:%Y-%m-%dT%H:%M}", "until": f"{start + timedelta(hours=6):%Y-%m-%dT%H:%M}"}
        elif name == "search":
            yield {"q": SEARCHES[i % len(SEARCHES)]}
        elif name == "campaign+event":
            yield {"campaign": campaigns[i % len(campaigns)], "event": ("failed", "skipped")[i % 2]}
        elif name == "step+search":
            yield {"step": plan[i % len(plan)], "q": SEARCHES[i % len(SEARCHES)]}
        else:
            raise ValueError(name)


PAGES = ("log", "campaign", "step", "event", "channel", "contact", "since/until", "search", "campaign+event",
         "step+search")  # fmt: skip


def get(client: httpx.Client, path: str) -> tuple[float, str]:
    start = time.perf_counter()
    answer = client.get(path)
    seconds = time.perf_counter() - start
    assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
    return seconds, answer.text


def measure_page(name: str, client: httpx.Client, pages: Pages, direct: Direct, fill: Fill,
                 n: int, budget: float) -> Timing:  # fmt: skip
    timing = Timing(f"/log {name}" if name != "log" else "/log")
    deadline = time.monotonic() + budget
    for params in requests_for(name, fill, random.Random(name), n):
        path = "/log?" + urlencode(params)
        web, text = get(client, path)
        timing.add(web, path, params, pages.log(params), page_ids(text), direct)
        if time.monotonic() > deadline:
            break
    return timing


def measure_deep(client: httpx.Client, pages: Pages, direct: Direct, fill: Fill, n: int, budget: float,
                 extra: dict[str, str], name: str) -> Timing:  # fmt: skip
    """Following the Older links page after page, from deep in the log: the first
    request starts ``before`` an id a tenth of the way up from the oldest."""
    timing = Timing(name)
    params = {**extra, "before": str(max(2, fill.events // 10))}
    deadline = time.monotonic() + budget
    for _ in range(n):
        path = "/log?" + urlencode(params)
        web, text = get(client, path)
        timing.add(web, path, params, pages.log(params), page_ids(text), direct)
        older = OLDER.search(text)
        if older is None or time.monotonic() > deadline:
            break
        params = dict(parse_qsl(urlsplit(html.unescape(older[1])).query))
    return timing


def measure_contacts(client: httpx.Client, pages: Pages, direct: Direct, fill: Fill, n: int,
                     budget: float) -> Timing:  # fmt: skip
    timing = Timing("contact page")
    rng = random.Random("contact page")
    deadline = time.monotonic() + budget
    for _ in range(n):
        address = rng.choice(fill.emails)
        path = f"/contacts/{quote(address, safe='@')}"
        web, text = get(client, path)
        timing.add(web, path, {"contact": address}, pages.contact(address), page_ids(text), direct)
        if time.monotonic() > deadline:
            break
    return timing


def reference_csv(direct: Direct) -> tuple[float, int]:
    """The plain join of every event, oldest first, read by the driver and written as
    CSV (to /dev/null): seconds, rows."""
    import csv

    start = time.perf_counter()
    n = 0
    with open(os.devnull, "w", newline="") as sink:
        out = csv.writer(sink)
        if direct.sqlite:
            cursor = direct.db.execute(JOIN + " ORDER BY e.id")
            while rows := cursor.fetchmany(5000):
                out.writerows(rows)
                n += len(rows)
        else:
            with direct.db.transaction(), direct.db.cursor(name="dump") as cursor:
                cursor.execute(JOIN + " ORDER BY e.id")
                while rows := cursor.fetchmany(5000):
                    out.writerows(rows)
                    n += len(rows)
    return time.perf_counter() - start, n


# Runs a command and says how long it took and its peak RSS. The command is started
# from this small process, not from the benchmark's: Linux counts in a child's
# ru_maxrss the RSS of the process it was forked from (kept across exec), and the
# benchmark holds the whole fill's contacts.
_MEASURE = """import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    fd = os.open(os.devnull, os.O_WRONLY)
    os.dup2(fd, 1)
    os.execvp(sys.argv[1], sys.argv[1:])
_pid, status, usage = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), time.perf_counter() - start, usage.ru_maxrss * 1024)
"""


def measured(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    """(seconds, peak RSS in bytes) of ``cmd``, its output to /dev/null."""
    done = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], env=env, capture_output=True, text=True)
    code, seconds, rss = done.stdout.split()
    if done.returncode or code != "0":
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr}")
    return float(seconds), int(rss)


def measure_export(ws: Path, url: str, log: Path) -> dict[str, float]:
    """/log.csv of every event on a fresh server (seconds, rows, the server's RSS before
    and its peak), then ``outreach log --format csv --limit 0`` (seconds, peak RSS)."""
    server = Server(ws, url, log)
    try:
        started_rss = server.memory()[0]
        client = server.client()
        client.get("/log")  # the page code and templates loaded, as on a server in use
        rss_before, hwm_before = server.memory()
        peak = [rss_before]
        done = threading.Event()

        def sample() -> None:  # the export's own peak: VmHWM also holds the sign-in's argon2 hash
            while not done.wait(0.02):
                peak[0] = max(peak[0], server.memory()[0])

        sampler = threading.Thread(target=sample)
        sampler.start()
        start = time.perf_counter()
        lines = 0
        try:
            with client.stream("GET", "/log.csv") as answer:
                assert answer.status_code == 200
                for chunk in answer.iter_raw():
                    lines += chunk.count(b"\n")
        finally:
            done.set()
            sampler.join()
        seconds = time.perf_counter() - start
        _rss, hwm = server.memory()
    finally:
        server.stop()
    env = {**os.environ, "OUTREACH_DATABASE_URL": url if not url.startswith("sqlite") else "",
           "OUTREACH_WORKSPACE": str(ws)}  # fmt: skip
    cli_seconds, cli_rss = measured([sys.executable, "-m", "outreach", "-w", str(ws), "log", "--format", "csv",
                                     "--limit", "0"], env)  # fmt: skip
    return {"web_s": seconds, "web_lines": lines, "web_rss_before": rss_before, "web_hwm_before": hwm_before,
            "web_hwm": hwm, "web_started": started_rss, "web_peak_rss": peak[0], "cli_s": cli_seconds, "cli_rss": cli_rss}  # fmt: skip


# -- the run -------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


def mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB"


def report(backend: str, fill: Fill, timings: list[Timing], export: dict[str, float], ref: tuple[float, int],
           direct: Direct, explain: str) -> None:  # fmt: skip
    print(f"\n== {backend}: {fill.contacts:,} contacts, {len(fill.steps)} step firings in {len(CAMPAIGNS)} "
          f"campaigns, {fill.deliveries:,} deliveries, {fill.events:,} events (filled in {fill.seconds:.0f} s)")
    head = (f"{'page':<24}{'n':>4}{'web p50':>9}{'p95':>8}{'sql p50':>9}{'p95':>8}{'x p50':>7}{'x p95':>7}"
            f"{'join p50':>10}{'p95':>8}   p95 < {TARGET_P95 * 1000:.0f} ms")  # fmt: skip
    print(head)
    print("-" * len(head))
    missed = []
    for t in timings:
        w50, w95, s50, s95, j50, j95 = (Timing.pct(v, q) for v in (t.web, t.sql, t.join) for q in (0.5, 0.95))
        ok = w95 < TARGET_P95
        missed += [] if ok else [t]
        differ = f"  ({t.differ} differ from the join)" if t.differ else ""
        print(f"{t.name:<24}{len(t.web):>4}{ms(w50):>9}{ms(w95):>8}{ms(s50):>9}{ms(s95):>8}{w50 / s50:>7.1f}"
              f"{w95 / s95:>7.1f}{ms(j50):>10}{ms(j95):>8}   {'ok' if ok else 'MISSED'}{differ}")  # fmt: skip
    print("(ms. web: the page over HTTP, signed in; sql: the statements outreach runs for it, run directly on\n"
          " the driver; x: web over sql; join: the page as one plain join with the same filters and limit)")
    ref_s, ref_n = ref
    print(f"\n{'every event as CSV':<38}{'seconds':>9}{'rows/s':>11}{'peak RSS':>11}   < {mb(TARGET_RSS)}")
    web_rows = export["web_lines"] - 1
    print(f"{'GET /log.csv (outreach serve)':<38}{export['web_s']:>9.1f}{web_rows / export['web_s']:>11,.0f}"
          f"{mb(export['web_hwm']):>11}   {'ok' if export['web_hwm'] < TARGET_RSS else 'MISSED'}"
          f" (the server's VmHWM; {web_rows:,} rows)")  # fmt: skip
    print(f"{'':<38}the server's RSS: {mb(export['web_started'])} started; VmHWM {mb(export['web_hwm_before'])} "
          f"after a sign-in (argon2)\n{'':<38}and a page; VmRSS {mb(export['web_rss_before'])} before the export, "
          f"{mb(export['web_peak_rss'])} at most during it")  # fmt: skip
    print(f"{'outreach log --format csv --limit 0':<38}{export['cli_s']:>9.1f}{ref_n / export['cli_s']:>11,.0f}"
          f"{mb(export['cli_rss']):>11}   {'ok' if export['cli_rss'] < TARGET_RSS else 'MISSED'}")
    print(f"{'the plain join to CSV (reference)':<38}{ref_s:>9.1f}{ref_n / ref_s:>11,.0f}{'':>11}   "
          f"/log.csv {export['web_s'] / ref_s:.1f}x, outreach log {export['cli_s'] / ref_s:.1f}x its time")
    shown = {"missed": missed, "all": timings, "none": []}[explain]
    if shown:
        print(f"\nplans ({'pages that missed' if explain == 'missed' else 'every page'}; of the slowest request): "
              "the events query outreach runs, then the plain join")  # fmt: skip
    for t in shown:
        seconds, path, params, statements = t.slowest
        print(f"\n{t.name}: {path} ({ms(seconds)} ms)")
        for statement, parameters in statements:  # the ids picked, then their rows
            if "FROM delivery_events" in statement:
                print(f"  {' '.join(statement.split())[:2000]}")
                print("\n".join(f"    {line}" for line in direct.explain(statement, parameters)))
        print("  -- the plain join:")
        print("\n".join(f"    {line}" for line in direct.explain_join(params)))


@contextmanager
def backend_url(backend: str, base: Path) -> Iterator[str]:
    if backend == "sqlite":
        db = base / "ws" / ".outreach" / "outreach.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        yield f"sqlite:///{db}"
        return
    bindir = pg_bin()
    if bindir is None:
        raise SystemExit("no PostgreSQL binaries (pg_ctl, initdb) here")
    with postgres_server(bindir) as server:
        import sqlalchemy as sa

        admin = sa.create_engine(server.url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql("CREATE DATABASE bench")
        admin.dispose()
        yield server.url.rsplit("/", 1)[0] + "/bench"


def run(backend: str, args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix=f"outreach-dash-{backend}-"))
    ws = base / "ws"
    (ws / "contacts").mkdir(parents=True)
    log = base / "serve.log"
    try:
        with backend_url(backend, base) as url:
            contacts = args.contacts or min(100_000, max(1_000, args.rows // 10))
            print(f"[{backend}] filling {args.rows:,} deliveries for {contacts:,} contacts ...", flush=True)
            fill = fill_store(url, args.rows, contacts, analyze=args.analyze)
            print(f"[{backend}] {fill.events:,} events in {fill.seconds:.0f} s; serving ...", flush=True)
            direct, pages = Direct(url), Pages(url, ws)
            server = Server(ws, url, log)
            timings = []
            try:
                client = server.client()
                for _ in range(5):  # the first requests load code and templates
                    client.get("/log")
                for name in PAGES:
                    timings.append(measure_page(name, client, pages, direct, fill, args.requests, args.budget))
                    print(f"[{backend}] {timings[-1].name}: p95 {ms(Timing.pct(timings[-1].web, 0.95))} ms", flush=True)
                for extra, name in (({}, "deep pages"), ({"event": "failed"}, "deep pages, failed")):
                    timings.append(measure_deep(client, pages, direct, fill, args.requests, args.budget, extra, name))
                timings.append(measure_contacts(client, pages, direct, fill, args.requests, args.budget))
                pages_rss = server.memory()[1]
            finally:
                server.stop()
            print(f"[{backend}] pages done (server's VmHWM {mb(pages_rss)}); exporting ...", flush=True)
            export = measure_export(ws, url, log)
            ref = reference_csv(direct)
            report(backend, fill, timings, export, ref, direct, args.explain)
            pages.close()
            direct.close()
    finally:
        if args.keep:
            print(f"kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="deliveries (events: about 3.2 each)")
    parser.add_argument("--contacts", type=int, default=0, help="default: a tenth of --rows, at most 100,000")
    parser.add_argument("--requests", type=int, default=200, help="requests of each page")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds at most for each page's requests")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both",
                        help="both: PostgreSQL too when its binaries are here")  # fmt: skip
    parser.add_argument("--analyze", action="store_true", help="run ANALYZE on SQLite after the fill")
    parser.add_argument("--explain", choices=("missed", "all", "none"), default="missed",
                        help="print the query plans of the pages that missed their target, of all, or none")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the store and the server's log")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    if args.backend == "both" and pg_bin() is None:
        print("PostgreSQL binaries not found: SQLite only")
        backends = ["sqlite"]
    for backend in backends:
        run(backend, args)


if __name__ == "__main__":
    main()
