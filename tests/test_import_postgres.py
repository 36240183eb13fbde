"""`contacts import` into PostgreSQL (COPY, and a set-based merge where a part of a
file meets stored addresses) gives exactly what the import into SQLite gives: the same
contacts in the same order, field by field (attributes in the same order), the same
tags, the same times touched, and the same report, file after file; a file that stops
the import changes nothing, and the checks dropped for a first import come back."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect

from outreach import imports
from outreach.app import Services, build
from outreach.config import load_settings
from outreach.domain.audience import parse
from outreach.domain.errors import InputFileError
from outreach.importing import blocks
from tests.conftest import write_csv

HEADER = "email,name,organization,kind,sector,country,language,timezone,x handle,status,tags,membership,region"


class Both:
    """The same workspace files imported into a SQLite store and a PostgreSQL store."""

    def __init__(self, tmp_path: Path, postgres_url: str) -> None:
        self.folder = tmp_path / "files"
        self.stores: list[Services] = []
        for name, url in (("sqlite", ""), ("postgres", postgres_url)):
            ws = tmp_path / name
            (ws / "contacts").mkdir(parents=True)
            self.stores.append(build(load_settings(ws, env={"OUTREACH_DATABASE_URL": url})))

    def close(self) -> None:
        for services in self.stores:
            services.close()

    def file(self, name: str, lines: list[str], header: str = HEADER) -> Path:
        return write_csv(self.folder / name, "\n".join([header, *lines]) + "\n")

    def imports(self, *paths: Path, **options: object) -> imports.ImportReport:
        """Import ``paths`` into both stores; the reports and the stores are the same."""
        sqlite, postgres = (imports.import_files(s.contacts, list(paths), **options)  # type: ignore[arg-type]
                            for s in self.stores)  # fmt: skip
        assert postgres == sqlite
        self.same()
        return sqlite

    def same(self) -> list[tuple]:
        sqlite, postgres = (dump(s) for s in self.stores)
        assert postgres == sqlite
        return sqlite

    def touched(self) -> list[dict[str, object]]:
        """Each store's updated_at by address."""
        return [{c.email: c.updated_at for c in s.contacts.iterate(parse(""))} for s in self.stores]

    def postgres(self) -> Services:
        return self.stores[1]


def dump(services: Services) -> list[tuple]:
    """Every contact in id order, every field, the attributes in their order."""
    return [(c.email, c.name, c.organization, c.kind, c.sector, c.country, c.language,
             c.timezone, c.x_handle, c.status, c.tags, list(c.attrs.items()))
            for c in services.contacts.iterate(parse(""))]  # fmt: skip


@pytest.fixture
def both(tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    # small blocks, validated by worker processes: parts, blocks and repeats across them
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 2048)
    monkeypatch.setattr(imports, "PARALLEL_MIN_BYTES", 0)
    pair = Both(tmp_path, postgres_url)
    yield pair
    pair.close()


def schema(services: Services) -> tuple:
    """The contacts' and tags' indexes and foreign keys as PostgreSQL has them."""
    found = inspect(services.engine)
    return tuple(
        (sorted((i["name"], tuple(i["column_names"]), i.get("dialect_options", {}).get("postgresql_using"))
                for i in found.get_indexes(t)),
         sorted((f["name"], f["referred_table"], f["options"].get("ondelete")) for f in found.get_foreign_keys(t)))
        for t in ("contacts", "contact_tags")
    )  # fmt: skip


FIRST = [
    # quotes, commas, a backslash and % in values and attributes; non-ASCII
    'ana@example.org,"Ana ""Quoted"" Tuilagi","Blue, Telecom",industry,mobile operator,WS,sm,,@ana_x,,"a, b",100% itu\\sector,Pacific',
    "ben@example.net,Ben,,partner,,,fr,,,unsubscribed,,,",
    "cloe@example.org,Chloé Côté,東京テレコム,media,,CA,fr-CA,America/Toronto,,bounced,c,,Amérique",
    "eve@example.org,Eve,,,,FJ,en,,,complained,,x,",
    "a%b@example.org,Per Cent,,,,,,,,,p,,",  # % and braces in an address
    "dan{x}@example.com,Dan,,ngo,,TO,to,,,,,,",
    "o'brien@example.org,O'Brien,,,,,,,,,,,",
    "not-an-email,Bad,,,,,,,,,,,",  # rejected
    ",,,,,,,,,,,,",  # blank
    "ANA@example.org,Ana Again,,,,,,,,,z,,",  # the same address again: a part of its own
    "zoë@example.org,Zoë,,,,,,,,,,,",
]


def filler(start: int, count: int, name: str = "Person") -> list[str]:
    return [f"p{i}@org{i % 7}.example.org,{name} {i},Org {i % 5},{['industry', 'media', ''][i % 3]},,"
            f"{['FJ', 'WS', ''][i % 3]},,,,,\"t{i % 4}, all\",m{i % 2},"
            for i in range(start, start + count)]  # fmt: skip


def test_files_give_the_same_store_and_report_on_both(both: Both) -> None:
    empty = schema(both.postgres())
    # into an empty store: new rows, a bad one, repeats within a block and across blocks
    first = both.file("first.csv", FIRST + filler(0, 300) + filler(100, 20, "Again"))
    report = both.imports(first, workers=2)
    assert (report.inserted, report.updated, report.rejected, report.repeated) == (308, 21, 1, 21)
    assert schema(both.postgres()) == empty  # the checks dropped for it are back

    # into a store: given values replace, blanks keep, attributes merge, tags add,
    # status never back to active nor away from complained
    before = both.touched()
    update = both.file("update.csv", [*filler(290, 20, "Later"),
        "ANA@EXAMPLE.ORG,,New Org,,,,,,,,c,changed,",  # the address's case changes
        "ben@example.net,Ben,,partner,,,fr,,,active,,,",  # no re-subscription: unchanged
        "cloe@example.org,,,,,,,,,unsubscribed,,,",  # bounced -> unsubscribed
        "eve@example.org,,,,,,,,,bounced,,,",  # complained stays: unchanged
        "a%b@example.org,Per Cent,,,,,,,,,p,,",  # as stored: unchanged
        "dan{x}@example.com,,,,,,,,,,new,,",  # a tag added
        "p3@org3.example.org,,,,,,,,,,,m1,Pacific",  # a new attribute after the others
        "new1@example.org,New One,,,,,,,,unsubscribed,,,",
        "new1@example.org,,,,,,,,,active,x,,",  # again in the same file
        "p4@org4.example.org,Person 4,Org 4,,,,,,,,all,m0,",  # unchanged
    ])  # fmt: skip
    report = both.imports(update, workers=0)
    assert (report.inserted, report.updated, report.unchanged) == (11, 15, 4)
    after = both.touched()
    changed = [{e for e in a if e in b and a[e] != b[e]} for b, a in zip(before, after, strict=True)]
    assert changed[0] == changed[1] and "ben@example.net" not in changed[1]
    store = both.postgres().contacts
    ana = store.get("ana@example.org")
    assert ana is not None and ana.email == "ANA@example.org" and ana.name == "Ana Again"
    assert ana.organization == "New Org" and ana.tags == ("a", "b", "c", "z")
    assert list(ana.attrs.items()) == [("membership", "changed"), ("region", "Pacific")]
    assert store.get("ben@example.net").status == "unsubscribed"  # type: ignore[union-attr]
    assert store.get("eve@example.org").status == "complained"  # type: ignore[union-attr]
    assert store.get("cloe@example.org").status == "unsubscribed"  # type: ignore[union-attr]
    assert list(store.get("p3@org3.example.org").attrs) == ["membership", "region"]  # type: ignore[union-attr]

    # an erased address is refused, the rest of its part imported
    for services in both.stores:
        assert services.contacts.delete(parse("email:cloe@example.org"), erase=True) == 1
    again = both.file("again.csv", ["cloe@example.org,Cloé,,,,,,,,,,,", "new2@example.org,New Two,,,,,,,,,,,"])
    report = both.imports(again, workers=0)
    assert (report.inserted, report.rejected) == (1, 1)
    assert "erased on request" in report.rejects[0].reason and report.rejects[0].line == 2

    # insert-only leaves stored contacts alone; a dry run reports the same and writes nothing
    only = both.file("only.csv", ["ana@example.org,Changed,,,,,,,,,,,", "new3@example.org,New Three,,,,,,,,,,,"])
    state = both.same()
    dry = both.imports(only, mode="insert-only", dry_run=True, workers=0)
    assert both.same() == state
    real = both.imports(only, mode="insert-only", workers=0)
    assert (real.inserted, real.existing) == (dry.inserted, dry.existing) == (1, 1)
    assert store.get("ana@example.org").name == "Ana Again"  # type: ignore[union-attr]


@pytest.mark.parametrize("stored", [False, True])
def test_a_file_that_stops_the_import_changes_nothing(both: Both, stored: bool) -> None:
    """A cell over the limit in a later block stops the import: nothing of the blocks
    before it is kept, in an empty store (whose checks were dropped) or not."""
    if stored:
        both.imports(both.file("first.csv", filler(0, 50)), workers=0)
    empty = schema(both.postgres())
    state = both.same()
    long_cell = "x" * (blocks.FIELD_LIMIT + 1)
    broken = both.file("broken.csv", [*filler(40, 200), f"late@example.org,{long_cell},,,,,,,,,,,"])
    for services in both.stores:
        with pytest.raises(InputFileError, match="a cell is longer than"):
            imports.import_files(services.contacts, [broken], workers=2)
    assert both.same() == state
    assert schema(both.postgres()) == empty
    both.imports(both.file("after.csv", filler(40, 20)), workers=0)  # and the store takes more


def test_fifty_thousand_rows_round_trip(both: Both, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large file into an empty store, then the same file changed into the full one
    (every part meets stored addresses): the same on both, to the last attribute."""
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 256 * 1024)
    rows = 50_000
    lines = filler(0, rows)
    lines[10_000:10_000] = filler(5, 30, "Repeat")  # addresses met again blocks later
    report = both.imports(both.file("big.csv", lines), workers=2)
    assert (report.inserted, report.updated, report.repeated) == (rows, 30, 30)
    changed = [line.replace(",m0,", ",m2,") if i % 3 else line for i, line in enumerate(filler(0, rows))]
    report = both.imports(both.file("big2.csv", changed + filler(rows, 100)), workers=2)
    assert report.inserted == 100 and report.updated + report.unchanged == rows
    assert both.postgres().contacts.count(parse("tag:all")) == rows + 100
    m2 = sum(1 for i in range(rows) if i % 2 == 0 and i % 3)
    assert both.postgres().contacts.count(parse("attr.membership:m2")) == m2


def test_an_empty_store_locked_by_another_session_imports_with_its_checks(
    both: Both, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another session holding the contacts: the first import does not wait for it
    longer than the lock wait, and imports with the checks in place."""
    from outreach.db import contact_copy

    monkeypatch.setattr(contact_copy, "_LOCK_WAIT", "200ms")
    empty = schema(both.postgres())
    with both.postgres().engine.connect() as other, other.begin():
        other.exec_driver_sql("SELECT count(*) FROM contacts")  # holds ACCESS SHARE
        report = imports.import_files(both.postgres().contacts, [both.file("a.csv", FIRST)], workers=0)
    assert report.inserted == 8
    imports.import_files(both.stores[0].contacts, [both.file("a.csv", FIRST)], workers=0)
    both.same()
    assert schema(both.postgres()) == empty


def test_erased_addresses_stay_out_of_an_empty_store(both: Both) -> None:
    """Every contact erased, the same file again into the now empty store: the erased
    addresses are refused, the new ones written, the same on both."""
    first = both.file("first.csv", FIRST)
    both.imports(first, workers=0)
    for services in both.stores:
        services.contacts.delete(parse(""), erase=True)
    report = both.imports(first, both.file("more.csv", filler(0, 40)), workers=2)
    assert (report.inserted, report.rejected) == (40, 10)  # a bad address, and 9 erased
    assert sum("erased on request" in r.reason for r in report.rejects) == 9


def test_an_import_killed_half_way_leaves_the_empty_store_whole(tmp_path: Path, postgres_url: str) -> None:
    """SIGKILL of the real CLI while it copies contacts into an empty store (its
    checks dropped, its tables locked): the store is empty, its foreign key and indexes
    are back, and the same import then runs through."""
    import os
    import signal
    import subprocess
    import sys
    import time

    ws = tmp_path / "ws"
    path = write_csv(ws / "contacts" / "many.csv", "\n".join([HEADER, *filler(0, 150_000)]) + "\n")
    services = build(load_settings(ws, env={"OUTREACH_DATABASE_URL": postgres_url}))

    def polled(sql: str) -> list:  # type: ignore[type-arg]
        with services.engine.connect() as conn:  # (a transaction of its own: fresh statistics)
            return list(conn.exec_driver_sql(sql).scalars())

    try:
        before = schema(services)
        sessions = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ours = set(polled(sessions))  # (the pool's)
        exe = str(Path(sys.executable).with_name("outreach"))
        env = {**os.environ, "OUTREACH_DATABASE_URL": postgres_url}
        proc = subprocess.Popen([exe, "-w", str(ws), "contacts", "import", str(path)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 60
        # ids drawn from the sequence show rows on their way (a sequence is not
        # transactional): the import is past dropping the checks
        while polled("SELECT last_value FROM contacts_id_seq") < [20_000]:
            assert proc.poll() is None, "the import ended before it could be killed"
            assert time.monotonic() < deadline, "the import never got to writing"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        while set(polled(sessions)) - ours:  # its session ends, and rolls back
            assert time.monotonic() < deadline, "the killed import's session stayed"
            time.sleep(0.05)
        assert schema(services) == before
        assert services.contacts.count(parse("")) == 0
        report = imports.import_files(services.contacts, [path])
        assert (report.inserted, report.rejected) == (150_000, 0)
        assert services.contacts.count(parse("tag:all country:FJ")) == 50_000
        assert schema(services) == before
    finally:
        services.close()


def test_indexes_of_every_kind_come_back_after_a_first_import(both: Both) -> None:
    """The contacts' secondary indexes are made again from their own definitions: one
    added outside the models (partial, with a % in its condition) too."""
    services = both.postgres()
    with services.engine.begin() as conn:
        conn.exec_driver_sql("CREATE INDEX ix_contacts_test_partial ON contacts (lower(name)) "
                             "WHERE email_key LIKE '%%.org'")  # fmt: skip
        definition = "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_contacts_test_partial'"
        before = conn.exec_driver_sql(definition).scalar_one()
    tables = schema(services)
    both.imports(both.file("first.csv", FIRST), workers=0)
    with services.engine.connect() as conn:
        assert conn.exec_driver_sql(definition).scalar_one() == before
    assert schema(services) == tables
    assert services.contacts.count(parse("domain:example.org")) == 6
