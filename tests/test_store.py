"""The contact store and segment SQL: the same cases on real SQLite and real PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from outreach.db.contacts import SqlContactStore
from outreach.db.engine import HEAD, current_revisions, open_database
from outreach.domain.audience import parse
from outreach.domain.normalizer import normalize_contact

PEOPLE = [
    {
        "email": "ana@example.org",
        "name": "Ana Tuilagi",
        "organization": "Blue Telecom Samoa",
        "kind": "industry",
        "sector": "Mobile Operator",
        "country": "WS",
        "language": "sm",
        "x_handle": "bluews",
        "tags": "itu-member, responded",
    },
    {
        "email": "ben@example.net",
        "name": "Ben Taufa",
        "organization": "Reef Net",
        "kind": "industry",
        "sector": "ISP",
        "country": "TO",
        "language": "to",
        "tags": "itu-member",
    },
    {
        "email": "cloe@example.org",
        "name": "Chloé Côté",
        "organization": "UNICEF",
        "kind": "un-agency",
        "country": "CA",
        "language": "fr-CA",
        "timezone": "America/Toronto",
    },
    {"email": "dan@example.com", "name": "Dan", "kind": "partner", "language": "fr"},
    {
        "email": "eve@example.org",
        "name": "Eve 100%_sure",
        "kind": "media",
        "country": "FJ",
        "language": "en",
    },
]
ATTRS = {
    "ana@example.org": {"membership": "itu-sector"},
    "ben@example.net": {"membership": "itu-associate"},
}


@pytest.fixture
def store(database_url: str):  # type: ignore[no-untyped-def]
    engine = open_database(database_url)
    store = SqlContactStore(engine)
    with store.writer() as writer:
        outcome = writer.write([normalize_contact(p, ATTRS.get(p["email"])) for p in PEOPLE])
    assert outcome.inserted == len(PEOPLE)
    yield store
    engine.dispose()


def emails(store: SqlContactStore, expr: str) -> list[str]:
    return sorted(c.email.split("@")[0] for c in store.find(parse(expr)))


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("", ["ana", "ben", "cloe", "dan", "eve"]),
        ("kind:industry", ["ana", "ben"]),
        ('kind:industry sector:"mobile operator",isp', ["ana", "ben"]),
        ("sector:isp", ["ben"]),
        ("country:WS,TO -tag:responded", ["ben"]),
        ("-country:WS", ["ben", "cloe", "dan", "eve"]),  # no country counts as "not WS"
        ("(kind:partner OR kind:un-agency) lang:fr", ["cloe", "dan"]),
        ("lang:fr-CA", ["cloe"]),
        ("attr.membership:itu-sector", ["ana"]),
        ("-attr.membership:itu-sector", ["ben", "cloe", "dan", "eve"]),
        ("has:attr.membership", ["ana", "ben"]),
        ("has:x", ["ana"]),
        ("-has:country", ["dan"]),
        ("has:tag", ["ana", "ben"]),
        ("tag:itu-member,responded", ["ana", "ben"]),
        ("tag:itu-member tag:responded", ["ana"]),
        ("org:*telecom*", ["ana"]),
        ("org:unicef", ["cloe"]),
        ("name:*côté", ["cloe"]),
        ("name:*100%_*", ["eve"]),  # % and _ are literal, only * is a wildcard
        ("name:*1000*", []),
        ("domain:example.org", ["ana", "cloe", "eve"]),
        ("email:BEN@EXAMPLE.NET", ["ben"]),
        ("tz:Pacific/Apia", ["ana"]),
        ("status:active", ["ana", "ben", "cloe", "dan", "eve"]),
        ("x:BlueWS", ["ana"]),
        ("NOT (kind:industry OR kind:media)", ["cloe", "dan"]),
    ],
)
def test_segments_select_the_same_contacts_on_every_backend(
    store: SqlContactStore, expr: str, expected: list[str]
) -> None:
    assert emails(store, expr) == expected
    assert store.count(parse(expr)) == len(expected)


def test_upsert_tags_status_erase(store: SqlContactStore) -> None:
    with store.writer() as writer:
        outcome = writer.write(
            [
                normalize_contact({"email": "ANA@example.org", "tags": "briefed"}),
                normalize_contact({"email": "ben@example.net"}),
                normalize_contact({"email": "new@example.org", "kind": "youth"}),
            ]
        )
    assert (outcome.inserted, outcome.updated, outcome.unchanged) == (1, 1, 1)
    ana = store.get("ana@example.org")
    assert ana is not None and ana.email == "ANA@example.org"
    assert ana.tags == ("briefed", "itu-member", "responded") and ana.attrs == {
        "membership": "itu-sector"
    }
    assert ana.created_at.tzinfo is not None and ana.updated_at >= ana.created_at
    assert store.add_tag(parse("kind:industry"), "x") == 2
    assert store.remove_tag(parse("country:TO"), "x") == 1
    assert store.set_status(parse("kind:youth"), "unsubscribed") == 1
    assert store.set_status(parse("kind:youth"), "unsubscribed") == 0
    assert store.delete(parse("email:new@example.org"), erase=True) == 1
    assert store.is_suppressed("NEW@example.org") and not store.is_suppressed("ana@example.org")
    with store.writer() as writer:
        again = writer.write([normalize_contact({"email": "new@example.org"})])
    assert again.suppressed == [0] and store.get("new@example.org") is None


def test_a_failed_import_leaves_nothing(store: SqlContactStore) -> None:
    with pytest.raises(RuntimeError), store.writer() as writer:
        writer.write([normalize_contact({"email": "half@example.org"})])
        raise RuntimeError("the file broke half-way")
    assert store.get("half@example.org") is None
    with store.writer(dry_run=True) as writer:
        assert writer.write([normalize_contact({"email": "dry@example.org"})]).inserted == 1
    assert store.get("dry@example.org") is None


def _index_names(store: SqlContactStore) -> set[str]:
    found = inspect(store.engine)
    return {i["name"] for t in ("contacts", "contact_tags") for i in found.get_indexes(t)}


def test_an_import_into_an_empty_store_builds_its_indexes_again(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Into an empty SQLite store the writer drops the secondary indexes and builds
    them before the commit; a failed or dry-run import leaves them as they were."""
    engine = open_database(f"sqlite:///{tmp_path / 'empty.db'}")
    store = SqlContactStore(engine)
    indexes = _index_names(store)
    assert {"ix_contacts_country_kind", "ix_contact_tags_tag_contact_id"} <= indexes
    with pytest.raises(RuntimeError), store.writer() as writer:
        writer.write([normalize_contact(PEOPLE[0])])
        raise RuntimeError("the file broke half-way")
    with store.writer(dry_run=True) as writer:
        writer.write([normalize_contact(PEOPLE[0])])
    assert _index_names(store) == indexes and store.count(parse("")) == 0
    with store.writer() as writer:
        writer.write([normalize_contact(p, ATTRS.get(p["email"])) for p in PEOPLE])
    assert _index_names(store) == indexes
    assert emails(store, "country:WS,TO kind:industry -tag:responded") == ["ben"]
    with engine.connect() as conn:  # the pooled connection is back to SQLite's defaults
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar_one() == -2000
        assert conn.exec_driver_sql("PRAGMA threads").scalar_one() == 0
    engine.dispose()


def test_iterate_streams_everything_in_batches(store: SqlContactStore) -> None:
    assert [c.email for c in store.iterate(parse(""), batch=2)] == [p["email"] for p in PEOPLE]


def test_schema_is_created_once_and_current(database_url: str) -> None:
    engine = open_database(database_url)
    open_database(database_url).dispose()  # a second open upgrades nothing
    try:
        assert current_revisions(engine) == {HEAD}
        tables = set(inspect(engine).get_table_names())
        assert {"contacts", "contact_tags", "suppressions", "alembic_version"} <= tables
        indexes = {i["name"] for i in inspect(engine).get_indexes("contacts")}
        assert "ix_contacts_country_kind" in indexes
    finally:
        engine.dispose()


def test_new_contacts_get_their_own_tags_after_deletions(store: SqlContactStore) -> None:
    store.delete(parse("email:eve@example.org"))  # the highest id goes
    with store.writer() as writer:
        writer.write(
            [
                normalize_contact({"email": "ana@example.org", "tags": "existing-updated"}),
                normalize_contact({"email": "f@example.org", "tags": "f-tag"}),
                normalize_contact({"email": "g@example.org"}),
                normalize_contact({"email": "h@example.org", "tags": "h1,h2"}),
            ]
        )
    assert store.get("f@example.org").tags == ("f-tag",)
    assert store.get("g@example.org").tags == ()
    assert store.get("h@example.org").tags == ("h1", "h2")
    assert "existing-updated" in store.get("ana@example.org").tags
    assert store.count(parse("tag:f-tag,h1")) == 2


def test_upgrading_from_the_first_schema_keeps_the_contacts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from alembic import command

    from outreach.db.engine import _alembic_config, make_engine, upgrade

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    with engine.connect().execution_options(write=True) as conn, conn.begin():
        command.upgrade(_alembic_config(conn), "0001")
    store = SqlContactStore(engine)
    with store.writer() as writer:
        writer.write([normalize_contact(PEOPLE[0])])
    assert upgrade(engine) == ({"0001"}, {HEAD})
    assert store.get("ana@example.org").name == "Ana Tuilagi"
    engine.dispose()


def test_the_head_constant_is_alembics_head() -> None:
    from outreach.db.engine import HEAD, _heads

    assert _heads() == {HEAD}


def test_upgrading_the_outbox_keeps_deliveries_and_their_log(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """0004 rebuilds deliveries on SQLite: nothing may cascade away with it."""
    from datetime import UTC, datetime

    from alembic import command
    from sqlalchemy import text

    from outreach.db.engine import _alembic_config, make_engine, upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.connect().execution_options(write=True) as conn, conn.begin():
        command.upgrade(_alembic_config(conn), "0003")
    store = SqlContactStore(engine)
    with store.writer() as writer:
        writer.write([normalize_contact(PEOPLE[0])])
    now = datetime(2014, 9, 5, 7, tzinfo=UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO steps (campaign, key, channel, template, audience, send_at, status, settings, created_at) "
            "VALUES ('c', 's', 'email', 't', 'kind:industry', :now, 'active', '{}', :now)"), {"now": now})  # fmt: skip
        conn.execute(text("INSERT INTO deliveries (step_id, contact_id, status, due_at, updated_at) "
                          "VALUES (1, 1, 'sent', :now, :now)"), {"now": now})  # fmt: skip
        for event in ("materialized", "sending", "sent"):
            conn.execute(text("INSERT INTO delivery_events (step_id, delivery_id, at, event, detail) "
                              "VALUES (1, 1, :now, :e, '{}')"), {"now": now, "e": event})  # fmt: skip
    assert upgrade(engine) == ({"0003"}, {HEAD})
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM delivery_events")).scalar() == 3
        assert conn.execute(text("SELECT status, part FROM deliveries")).one() == ("sent", None)
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        conn.execute(text("INSERT INTO deliveries (step_id, part, status, due_at, updated_at, content) "
                          "VALUES (1, 0, 'queued', :now, :now, '{}')"), {"now": now})  # fmt: skip
    engine.dispose()
