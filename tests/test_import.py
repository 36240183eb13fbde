"""`outreach contacts import` through the real CLI against real SQLite files."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from outreach.domain.audience import parse
from outreach.importing import blocks
from tests.conftest import Cli, is_alive, write_csv


def contacts(cli: Cli, where: str = "") -> dict[str, dict]:
    args = ["contacts", "list", "--json", "--limit", "0"] + (["--where", where] if where else [])
    out = cli(*args).stdout
    return {row["email"]: row for row in map(json.loads, out.splitlines())}


def test_synonyms_bom_semicolons_crlf_and_quoted_fields(cli: Cli, workspace: Path) -> None:
    text = (
        "\ufeffE-mail Address;Full Name;Organisation;Type;Sector;Country;Language;X Handle;Tags;Membership\r\n"
        'ana@Example.ORG;"Tuilagi; Ana";"Blue ""Telecom"" Samoa";Industry member;mobile operator;Samoa;sm;@bluews;"a, b";itu-sector\r\n'
        'nl@example.org;"Two\r\nLines";Org;industry;;FJ;en;;;\r\n'
        "joe@example.net;Joe;Reef Net;ngo;;Fiji;en;;;\r\n"
    )
    path = write_csv(workspace / "contacts" / "a.csv", text)
    out = cli("contacts", "import", str(path)).stdout
    assert _counts(out) == {"inserted": 2, "updated": 0, "unchanged": 0, "rejected": 1}
    # a quoted line break is read as part of its field (the row after it keeps its
    # place), and then refused: no field may carry CR/LF
    assert f"{path}:3: name: contains the control character U+000D" in out
    found = contacts(cli)
    ana = found["ana@example.org"]
    assert ana["name"] == "Tuilagi; Ana" and ana["organization"] == 'Blue "Telecom" Samoa'
    assert ana["country"] == "WS" and ana["timezone"] == "Pacific/Apia"
    assert ana["kind"] == "industry" and ana["x_handle"] == "bluews" and ana["language"] == "sm"
    assert ana["tags"] == ["a", "b"] and ana["attrs"] == {"membership": "itu-sector"}
    assert found["joe@example.net"]["kind"] == "civil-society"
    assert found["joe@example.net"]["timezone"] == "Pacific/Fiji"


def test_lf_line_endings_and_country_with_several_zones(cli: Cli, workspace: Path) -> None:
    path = write_csv(
        workspace / "k.csv",
        "email,country,timezone\nk@example.org,Kiribati,\nl@example.org,KI,pacific/kiritimati\n",
    )
    cli("contacts", "import", str(path))
    found = contacts(cli)
    assert found["k@example.org"]["timezone"] is None  # three zones: left empty
    assert found["l@example.org"]["timezone"] == "Pacific/Kiritimati"


@pytest.fixture
def sample(workspace: Path) -> Path:
    return write_csv(
        workspace / "contacts" / "people.csv",
        "email,name,country,kind,tags\n"
        "a@example.org,Ana,FJ,industry,x\n"
        "b@example.org,Ben,TO,partner,\n"
        "c@example.org,Cai,KI,media,\n",
    )


def test_upsert_reports_inserted_updated_unchanged(cli: Cli, workspace: Path, sample: Path) -> None:
    first = cli("contacts", "import", str(sample)).stdout
    assert _counts(first) == {"inserted": 3, "updated": 0, "unchanged": 0, "rejected": 0}
    again = cli("contacts", "import", str(sample)).stdout
    assert _counts(again) == {"inserted": 0, "updated": 0, "unchanged": 3, "rejected": 0}
    change = write_csv(
        workspace / "c2.csv", "EMAIL,Name\nA@EXAMPLE.ORG,Ana Lui\nd@example.org,Dee\n"
    )
    out = cli("contacts", "import", str(change)).stdout
    assert _counts(out) == {"inserted": 1, "updated": 1, "unchanged": 0, "rejected": 0}
    found = contacts(cli)
    # email is case-insensitive; a column absent from the file keeps its stored value
    assert found["A@example.org"]["name"] == "Ana Lui"
    assert found["A@example.org"]["country"] == "FJ"
    assert found["A@example.org"]["tags"] == ["x"]
    assert len(found) == 4


def test_insert_only_leaves_existing_contacts_alone(
    cli: Cli, workspace: Path, sample: Path
) -> None:
    cli("contacts", "import", str(sample))
    change = write_csv(
        workspace / "c2.csv", "email,name\na@example.org,Changed\ne@example.org,Eve\n"
    )
    out = cli("contacts", "import", str(change), "--mode", "insert-only").stdout
    assert "left alone" in out
    found = contacts(cli)
    assert found["a@example.org"]["name"] == "Ana" and "e@example.org" in found


def test_dry_run_reports_the_same_and_changes_nothing(cli: Cli, sample: Path) -> None:
    dry = cli("contacts", "import", str(sample), "--dry-run").stdout
    assert "dry run" in dry and _counts(dry)["inserted"] == 3
    assert cli("contacts", "count").stdout.strip() == "0"
    real = cli("contacts", "import", str(sample)).stdout
    assert _counts(real) == _counts(dry)


def test_rejected_rows_are_named_by_file_and_line(cli: Cli, workspace: Path) -> None:
    path = write_csv(
        workspace / "bad.csv",
        "email,name,country,timezone,language\n"
        "good@example.org,Good,FJ,,\n"
        "not-an-email,Bad,FJ,,\n"
        "c@example.org,Bad,Atlantis,,\n"
        "d@example.org,Bad,FJ,Mars/Olympus,\n"
        '"e@example.org","Bad\nName",FJ,,\n'
        "f@example.org,Bad\u202eevil,FJ,,\n"
        ",,,,\n"
        "g@example.org,Bad,FJ,,xx-yy-zz-!!\n"
        "h@example.org,Too,Many,Fields,,here\n",
    )
    rejects = workspace / "rejects.csv"
    out = cli("contacts", "import", str(path), "--rejects", str(rejects)).stdout
    assert _counts(out) == {"inserted": 1, "updated": 0, "unchanged": 0, "rejected": 7}
    assert "blank rows skipped" in out
    assert f"{path}:3: email: 'not-an-email' is not a valid address" in out
    assert f"{path}:4: country: unknown country 'Atlantis'" in out
    assert f"{path}:5: timezone: unknown time zone 'Mars/Olympus'" in out
    assert f"{path}:6: name: contains the control character U+000A" in out
    assert f"{path}:8: name: contains the control character U+202E" in out
    assert f"{path}:10: language:" in out
    assert f"{path}:11: has 6 fields but the header has 5" in out
    rows = list(csv.DictReader(rejects.open(encoding="utf-8")))
    assert [int(r["line"]) for r in rows] == [3, 4, 5, 6, 8, 10, 11]
    assert rows[0]["row"] == "not-an-email,Bad,FJ,,"
    assert list(contacts(cli)) == ["good@example.org"]


def test_only_first_twenty_rejects_on_screen_all_in_the_file(cli: Cli, workspace: Path) -> None:
    lines = "".join(f"bad{i},x\n" for i in range(30))
    path = write_csv(workspace / "bad.csv", "email,name\n" + lines)
    out = cli("contacts", "import", str(path)).stdout
    assert "first 20 of 30" in out and "--rejects" in out
    assert f"{path}:21:" in out and f"{path}:22:" not in out


def test_not_utf8_says_so_and_suggests_encoding_then_encoding_works(
    cli: Cli, workspace: Path
) -> None:
    path = write_csv(
        workspace / "latin.csv",
        "email,name,country\nfr@example.org,Hélène Béranger,France\n",
        "cp1252",
    )
    result = cli("contacts", "import", str(path), ok=False)
    assert f"{path}: line 2 is not valid utf-8" in result.output
    assert "--encoding cp1252" in result.output
    assert cli("contacts", "count").stdout.strip() == "0"
    cli("contacts", "import", str(path), "--encoding", "cp1252")
    assert contacts(cli)["fr@example.org"]["name"] == "Hélène Béranger"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"%PDF-1.4\x00\x01\x02binary", "is not a CSV file"),
        (b"", "is empty"),
        (b"name,country\nAna,FJ\n", "no email column in the header (name, country)"),
        (b"email,E-mail\na@example.org,b@example.org\n", "both map to email"),
        (b'{"email": "a@example.org"}\n', "no email column"),
    ],
)
def test_files_that_are_not_contact_csv_fail_whole(
    cli: Cli, workspace: Path, content: bytes, message: str
) -> None:
    good = write_csv(workspace / "good.csv", "email\nfirst@example.org\n")
    bad = workspace / "bad.csv"
    bad.write_bytes(content)
    result = cli("contacts", "import", str(good), str(bad), ok=False)
    assert str(bad) in result.output and message in result.output
    assert cli("contacts", "count").stdout.strip() == "0"  # the good file was not imported either


def test_missing_file_and_unknown_encoding(cli: Cli, workspace: Path) -> None:
    assert "no such file" in cli("contacts", "import", str(workspace / "nope.csv"), ok=False).output
    good = write_csv(workspace / "good.csv", "email\nfirst@example.org\n")
    assert (
        "unknown encoding"
        in cli("contacts", "import", str(good), "--encoding", "klingon", ok=False).output
    )


def test_map_option_and_default_kind(cli: Cli, workspace: Path) -> None:
    path = write_csv(
        workspace / "m.csv",
        "Courriel,Member Type,Region Code,Notes\nz@example.org,ngo,Pacific,vip\n",
    )
    bad = cli("contacts", "import", str(path), "--map", "Member Type=colour", ok=False)
    assert "unknown field 'colour'" in bad.output
    missing = cli("contacts", "import", str(path), "--map", "Nope=kind", ok=False)
    assert "--map names columns not in the header: nope" in missing.output
    cli("contacts", "import", str(path), "--map", "Member Type=kind", "--map", "notes=ignore")
    z = contacts(cli)["z@example.org"]
    assert z["kind"] == "civil-society" and z["attrs"] == {"region_code": "Pacific"}
    other = write_csv(workspace / "n.csv", "email\nm@example.net\n")
    cli("contacts", "import", str(other), "--kind", "press")
    assert contacts(cli)["m@example.net"]["kind"] == "media"


def test_first_and_last_name_columns_make_the_name(cli: Cli, workspace: Path) -> None:
    path = write_csv(
        workspace / "m.csv", "E-mail,First Name,Last Name\nm@example.net,Sione,Taufa\n"
    )
    cli("contacts", "import", str(path))
    assert contacts(cli)["m@example.net"]["name"] == "Sione Taufa"


def test_consent_an_import_never_resubscribes(cli: Cli, workspace: Path, sample: Path) -> None:
    cli("contacts", "import", str(sample))
    cli("contacts", "unsubscribe", "a@example.org")
    again = write_csv(
        workspace / "again.csv",
        "email,status,name\na@example.org,active,Ana\nb@example.org,opted out,Ben\n",
    )
    cli("contacts", "import", str(again))
    found = contacts(cli)
    assert found["a@example.org"]["status"] == "unsubscribed"
    assert found["b@example.org"]["status"] == "unsubscribed"


def test_erased_contact_cannot_come_back(cli: Cli, workspace: Path, sample: Path) -> None:
    cli("contacts", "import", str(sample))
    cli("contacts", "delete", "B@example.org", "--erase", "--yes")
    out = cli("contacts", "import", str(sample)).stdout
    assert "erased on request" in out and _counts(out)["rejected"] == 1
    assert "b@example.org" not in contacts(cli)


def test_duplicate_rows_in_one_file_later_wins(cli: Cli, workspace: Path) -> None:
    path = write_csv(workspace / "d.csv", "email,name\nx@example.org,First\nX@example.org,Second\n")
    out = cli("contacts", "import", str(path)).stdout
    assert _counts(out) == {"inserted": 1, "updated": 1, "unchanged": 0, "rejected": 0}
    assert contacts(cli)["X@example.org"]["name"] == "Second"


def test_parallel_validation_gives_the_same_result_as_inline(tmp_path: Path) -> None:
    rows = ["email,name,country,kind,tags"]
    for i in range(12000):
        email = f"user{i}@example.org" if i % 997 else f"broken{i}"
        rows.append(f"{email},User {i},{['FJ', 'WS', 'TO', 'Fiji'][i % 4]},industry,t{i % 3}")
    text = "\n".join(rows) + "\n"
    outputs = []
    for workers in ("0", "2"):
        ws = tmp_path / f"w{workers}"
        path = write_csv(ws / "contacts" / "big.csv", text)
        cli = Cli(ws)
        out = cli("contacts", "import", str(path), "--workers", workers).stdout
        outputs.append(
            (_counts(out), cli("contacts", "count", "--where", "country:FJ tag:t1").stdout)
        )
    assert outputs[0] == outputs[1]
    assert outputs[0][0]["rejected"] == 13


def _counts(report: str) -> dict[str, int]:
    counts = {}
    for line in report.splitlines():
        parts = [p.strip() for p in line.strip("│|").split("│")]
        if len(parts) == 2 and parts[0] in ("inserted", "updated", "unchanged", "rejected"):
            counts[parts[0]] = int(parts[1].replace(",", ""))
    return counts


def test_blocks_never_cut_a_record_and_keep_line_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers get the file in blocks; every record and its line must come out as the
    csv module reads the whole file, whatever falls on a block edge."""
    from outreach import imports

    lines = ["email,name,notes\r\n"]
    for i in range(400):
        note = f'"multi\r\nline ""{i}"", with, commas\r\nand more"' if i % 7 == 0 else f"plain {i}"
        lines.append(f"u{i}@example.org,Näme {i},{note}\r\n")
    path = write_csv(tmp_path / "blocks.csv", "\ufeff" + "".join(lines))
    expected = []
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        start = reader.line_num + 1
        for row in reader:
            expected.append((start, row))
            start = reader.line_num + 1
    for size in (64, 100, 257, 4096):
        monkeypatch.setattr(blocks, "BLOCK_BYTES", size)
        source = imports.inspect_file(path)
        got = [r for block in blocks.read_blocks(source) for r in blocks.rows(source, block)]
        assert got == expected, size


def test_an_import_killed_half_way_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    """SIGKILL of the real CLI in the middle of a first import (its rows written, its
    indexes dropped, not yet built): the store is empty and whole, indexes included,
    and the same import then runs through."""
    import signal
    import subprocess
    import sys
    import time

    from sqlalchemy import inspect

    from outreach import imports
    from outreach.app import build
    from outreach.config import load_settings

    ws = tmp_path / "ws"
    rows = "".join(f"p{i}@org{i % 97}.example.org,Person {i},FJ,\"a, b{i % 5}\"\n" for i in range(150_000))
    path = write_csv(ws / "contacts" / "many.csv", "email,name,country,tags\n" + rows)
    exe = str(Path(sys.executable).with_name("outreach"))
    env = {**os.environ, "OUTREACH_DATABASE_URL": ""}
    proc = subprocess.Popen([exe, "-w", str(ws), "contacts", "import", str(path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    wal = ws / ".outreach" / "outreach.db-wal"
    deadline = time.monotonic() + 60
    while not (wal.exists() and wal.stat().st_size > 4_000_000) and proc.poll() is None:
        assert time.monotonic() < deadline, "the import never got to writing"
        time.sleep(0.01)
    assert proc.poll() is None, "the import ended before it could be killed; use a larger file"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    while _processes_naming(str(path)):  # its validation workers die with it
        assert time.monotonic() < deadline, "validation workers outlived the killed import"
        time.sleep(0.05)
    services = build(load_settings(ws, env={"OUTREACH_DATABASE_URL": ""}))
    try:
        found = inspect(services.engine)
        indexes = {i["name"] for t in ("contacts", "contact_tags") for i in found.get_indexes(t)}
        assert {"ix_contacts_country_kind", "ix_contact_tags_tag_contact_id"} <= indexes
        assert services.contacts.count(parse("")) == 0
        report = imports.import_files(services.contacts, [path])
        assert (report.inserted, report.rejected) == (150_000, 0)
        assert services.contacts.count(parse("country:FJ tag:b3")) == 30_000
    finally:
        services.close()


def _processes_naming(text: str) -> list[int]:
    """Live processes whose command line contains ``text``."""
    found = []
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and is_alive(pid):
            found.append(pid)
    return found


@pytest.mark.parametrize("block_bytes", [4096, 65536])
def test_every_contact_gets_its_own_tags_across_blocks_and_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block_bytes: int
) -> None:
    """New rows' tags find their contact by position in the block (the last inserted
    id minus the rows after it): check every contact of a file cut into blocks (small
    ones, and large ones written many rows per statement) and validated in worker
    processes, rows with none, one and three tags mixed."""
    from outreach import imports
    from outreach.app import build
    from outreach.config import load_settings

    rows = ["email,name,tags"]
    expected = {}
    for i in range(3000):
        tags = [f"t{i}", f"m{i % 5}", "all"][: i % 4]
        rows.append(f'u{i}@example.org,U {i},"{", ".join(tags)}"')
        expected[f"u{i}@example.org"] = tuple(sorted(tags))
    ws = tmp_path / "ws"
    path = write_csv(ws / "tags.csv", "\n".join(rows) + "\n")
    monkeypatch.setattr(blocks, "BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(imports, "PARALLEL_MIN_BYTES", 0)
    services = build(load_settings(ws, env={}))
    try:
        report = imports.import_files(services.contacts, [path], workers=2)
        assert report.inserted == 3000 and report.rejected == 0
        got = {c.email: c.tags for c in services.contacts.iterate(parse(""))}
    finally:
        services.close()
    assert got == expected


def test_import_into_postgresql_with_workers_then_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_url: str
) -> None:
    """The same pipeline on a real PostgreSQL (new rows and tags go in with COPY):
    every contact with its own tags and defaults, then a second file that updates
    some, leaves others unchanged and adds new ones."""
    from outreach import imports
    from outreach.app import build
    from outreach.config import load_settings

    ws = tmp_path / "ws"
    first = ["email,name,kind,country,tags,membership"]
    first += [f"u{i}@example.org,U {i},{'media' if i % 3 else ''},FJ,\"t{i}, all\",m{i % 2}"
              for i in range(1500)]  # fmt: skip
    second = ["email,name,status"]
    second += [f"U{i}@example.org,{'Renamed' if i % 20 else f'U {i}'},unsubscribed"
               for i in range(0, 1500, 10)]  # fmt: skip
    second += [f"new{i}@example.org,New {i}," for i in range(100)]
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 8192)
    monkeypatch.setattr(imports, "PARALLEL_MIN_BYTES", 0)
    services = build(load_settings(ws, env={"OUTREACH_DATABASE_URL": postgres_url}))
    try:
        store = services.contacts
        report = imports.import_files(store, [write_csv(ws / "a.csv", "\n".join(first))], workers=2)
        assert (report.inserted, report.rejected) == (1500, 0)
        u7 = store.get("u7@example.org")
        assert u7.tags == ("all", "t7") and u7.kind == "media" and u7.status == "active"
        assert u7.timezone == "Pacific/Fiji" and u7.attrs == {"membership": "m1"}
        assert store.get("u3@example.org").kind == "other"  # the column's default
        assert store.count(parse("tag:all")) == 1500 and store.count(parse("tag:t1499")) == 1
        report = imports.import_files(store, [write_csv(ws / "b.csv", "\n".join(second))], workers=2)
        assert (report.inserted, report.updated, report.unchanged) == (100, 150, 0)
        assert store.get("u10@example.org").name == "Renamed"
        assert store.get("u10@example.org").status == "unsubscribed"
        assert store.get("u10@example.org").attrs == {"membership": "m0"}  # kept
        assert store.count(parse("status:unsubscribed")) == 150
        assert store.get("new5@example.org").status == "active"
        again = imports.import_files(store, [ws / "b.csv"], workers=0)
        assert (again.inserted, again.updated, again.unchanged) == (0, 0, 250)
    finally:
        services.close()


def test_addresses_met_again_in_a_later_block_update_what_was_inserted(tmp_path: Path) -> None:
    """Blocks are first written as all-new; one that meets stored addresses is undone
    to its savepoint and written again with lookups, so nothing is doubled or lost."""
    rows = ["email,name,tags"]
    rows += [f"user{i}@example.org,User {i},first" for i in range(6000)]
    rows += [f"USER{i}@example.org,Renamed {i},second" for i in range(0, 6000, 2)]  # later blocks
    ws = tmp_path / "ws"
    path = write_csv(ws / "contacts" / "again.csv", "\n".join(rows) + "\n")
    cli = Cli(ws)
    out = cli("contacts", "import", str(path), "--workers", "2").stdout
    assert _counts(out) == {"inserted": 6000, "updated": 3000, "unchanged": 0, "rejected": 0}
    assert cli("contacts", "count").stdout.strip() == "6000"
    assert cli("contacts", "count", "--where", "tag:first tag:second").stdout.strip() == "3000"
    assert contacts(cli)["USER2@example.org"]["name"] == "Renamed 2"  # the later row wins
