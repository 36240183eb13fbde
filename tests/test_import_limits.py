"""`outreach contacts import` at its limits, through the real CLI on real files: the
memory a re-import keeps for repeated addresses, cells longer than the csv module's
default 128 KiB, and a quote inside an unquoted cell (``Samsung 5" Display Ltd``)."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import pytest

from outreach.importing import blocks
from tests.conftest import Cli, write_csv
from tests.test_import import _counts, contacts

# -- 1. re-importing a list the store holds -----------------------------------------


def _held(obj: object, seen: set[int]) -> int:
    """Bytes that ``obj`` holds, with the containers, numbers and objects it refers to."""
    if id(obj) in seen or isinstance(obj, type):
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(_held(k, seen) + _held(v, seen) for k, v in obj.items())
    elif isinstance(obj, list | tuple | set | frozenset):
        size += sum(_held(item, seen) for item in obj)
    elif hasattr(obj, "__dict__"):
        size += _held(vars(obj), seen)
    return size


def test_a_reimport_keeps_a_few_bytes_a_row_to_find_repeats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What an import keeps of each row, to report addresses met again in its run,
    is a few bytes, also when every row meets a stored address (a re-import of the
    same list): a dict of every address took about 80 a row (251 MB instead of 158
    for a million rows)."""
    from outreach import imports

    rows = 100_000
    lines = ["email,name,country"] + [
        f"p{i}@org{i % 500}.example.org,P {i},FJ" for i in range(rows)
    ]
    lines.append("p5@org5.example.org,P 5,FJ")  # the same row again, at the end
    path = write_csv(tmp_path / "ws" / "contacts" / "people.csv", "\n".join(lines) + "\n")
    cli = Cli(tmp_path / "ws")
    out = cli("contacts", "import", str(path)).stdout
    assert _counts(out) == {"inserted": rows, "updated": 0, "unchanged": 1, "rejected": 0}
    held: list[int] = []
    resolve = imports.Repeats.resolve

    def measured(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        held.append(_held(self, set()))  # once every row is written
        return resolve(self, *args, **kwargs)

    monkeypatch.setattr(imports.Repeats, "resolve", measured)
    out = cli("contacts", "import", str(path)).stdout
    assert _counts(out) == {"inserted": 0, "updated": 0, "unchanged": rows + 1, "rejected": 0}
    # the repeat is still reported with both lines
    assert "(first 1 of 1)" in out
    assert f"{path}:7 and {path}:{rows + 2}: p5@org5.example.org" in out
    (kept,) = held
    assert kept / rows < 16, f"{kept / rows:.1f} bytes a row"


@pytest.mark.parametrize("workers", ["0", "2"])
def test_repeats_counted_in_slices_are_those_found_row_by_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    """Two files of addresses drawn at random (many met two or more times, in any
    case), cut into many blocks and counted in many slices of the digest range: the
    count and the first twenty shown are those of a walk row by row, on a first
    import and on the same import again."""
    from outreach import imports
    from outreach.importing import repeats

    monkeypatch.setattr(repeats, "PART_ROWS", 300)
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 2048)
    monkeypatch.setattr(imports, "PARALLEL_MIN_BYTES", 0)
    rng = random.Random(7)
    ws = tmp_path / "ws"
    paths, rows = [], []
    for name in ("a.csv", "b.csv"):
        emails = [f"u{rng.randrange(3000)}@example.org" for _ in range(2500)]
        emails = [e.upper() if rng.random() < 0.1 else e for e in emails]
        paths.append(
            write_csv(ws / "contacts" / name, "email\n" + "".join(f"{e}\n" for e in emails))
        )
        rows += [(paths[-1], line, e.casefold()) for line, e in enumerate(emails, start=2)]
    last: dict[str, tuple[Path, int]] = {}
    expected = []
    for path, line, key in rows:
        if key in last:
            expected.append(f"{last[key][0]}:{last[key][1]} and {path}:{line}: {key}")
        last[key] = (path, line)
    cli = Cli(ws)
    for _ in range(2):
        out = cli("contacts", "import", *map(str, paths), "--workers", workers).stdout
        assert f"(first 20 of {len(expected):,})" in out
        shown = [line.strip() for line in out.splitlines() if " and " in line]
        assert shown == expected[:20]


# -- 2. long cells --------------------------------------------------------------------


def _with_cell(path: Path, size: int, *, quoted: bool) -> Path:
    """Three contacts; the second has a notes cell of ``size`` characters (line 3)."""
    cell = "é" + "x" * (size - 1)
    if quoted:
        cell = '"' + cell + '"'
    text = (
        "email,name,notes\n"
        "ana@example.org,Ana New,short\n"
        f"ben@example.org,Ben,{cell}\n"
        "cai@example.org,Cai,short\n"
    )
    return write_csv(path, text)


@pytest.mark.parametrize("quoted", [False, True], ids=["bare", "quoted"])
@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_cell_up_to_the_limit_is_read(
    cli: Cli, workspace: Path, workers: str, quoted: bool
) -> None:
    """700 KiB (over the csv module's default of 128 KiB, a file large enough for the
    worker processes) and exactly 1 MiB: read whole. In an imported column the row is
    rejected for its length, by line; in an ignored column it is imported."""
    path = _with_cell(workspace / "long.csv", 700 * 1024, quoted=quoted)
    out = cli("contacts", "import", str(path), "--workers", workers).stdout
    assert _counts(out) == {"inserted": 2, "updated": 0, "unchanged": 0, "rejected": 1}
    assert f"{path}:3: attr.notes: is {700 * 1024} characters long" in out
    edge = _with_cell(workspace / "edge.csv", blocks.FIELD_LIMIT, quoted=quoted)
    args = ("contacts", "import", str(edge), "--map", "notes=ignore", "--workers", workers)
    out = cli(*args).stdout
    assert _counts(out) == {"inserted": 1, "updated": 0, "unchanged": 2, "rejected": 0}
    assert set(contacts(cli)) == {"ana@example.org", "ben@example.org", "cai@example.org"}


@pytest.mark.parametrize("quoted", [False, True], ids=["bare", "quoted"])
@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_cell_over_the_limit_stops_the_import_naming_its_line(
    cli: Cli, workspace: Path, workers: str, quoted: bool
) -> None:
    first = write_csv(workspace / "first.csv", "email,name\nana@example.org,Ana\n")
    cli("contacts", "import", str(first))
    path = _with_cell(workspace / "long.csv", blocks.FIELD_LIMIT + 1, quoted=quoted)
    args = ("contacts", "import", str(path), "--map", "notes=ignore", "--workers", workers)
    out = cli(*args, ok=False).output
    assert f"{path}: line 3: a cell is longer than 1 MiB (1,048,576 characters)" in out
    assert "Traceback" not in out and "_csv.Error" not in out
    # nothing changed: the rows before it were not written either
    assert contacts(cli).keys() == {"ana@example.org"}
    assert contacts(cli)["ana@example.org"]["name"] == "Ana"


def test_a_quote_left_open_stops_once_past_the_limit(cli: Cli, workspace: Path) -> None:
    """A quoted cell that never closes: the import stops at the line where it opened,
    without reading the rest of the file as one cell."""
    rows = ["email,name,notes", "ana@example.org,Ana,fine", 'ben@example.org,Ben,"left open']
    rows += [f"p{i}@example.org,P {i},plain text that goes on and on" for i in range(220_000)]
    path = write_csv(workspace / "open.csv", "\n".join(rows) + "\n")
    assert path.stat().st_size > blocks.OPEN_CELL_BYTES
    out = cli("contacts", "import", str(path), ok=False).output
    assert f"{path}: line 3: a quoted cell runs on for more than 1 MiB" in out
    assert cli("contacts", "count").stdout.strip() == "0"


def test_the_help_names_the_limit(cli: Cli) -> None:
    text = " ".join(cli("contacts", "import", "--help").stdout.split())
    assert "A cell holds at most 1 MiB (1,048,576 characters)" in text


# -- 3. a quote inside an unquoted cell -----------------------------------------------


def _members(rows: int, stray: int | None = None) -> str:
    lines = ["email,name,organization,kind,country,tags"]
    for i in range(rows):
        org = 'Samsung 5" Display Ltd' if i == stray else f"Organisation {i % 500}"
        lines.append(
            f'm{i}@org{i % 500}.example.org,Member {i},{org},industry,FJ,"cop-2014, b{i % 7}"'
        )
    return "\n".join(lines) + "\n"


def test_a_quote_inside_an_unquoted_cell_is_read_as_a_character_at_normal_speed(
    tmp_path: Path,
) -> None:
    """A 4 MB list with one stray quote near its start imports in about the time of
    the same list without it (it took minutes), and every row after it is read as
    written."""
    rows = 50_000
    times = []
    for name, stray in (("clean", None), ("stray", 10)):
        ws = tmp_path / name
        path = write_csv(ws / "contacts" / "members.csv", _members(rows, stray))
        assert path.stat().st_size > 4_000_000
        started = time.perf_counter()
        out = Cli(ws)("contacts", "import", str(path)).stdout
        times.append(time.perf_counter() - started)
        assert _counts(out) == {"inserted": rows, "updated": 0, "unchanged": 0, "rejected": 0}
    clean, stray = times
    assert stray < 5 * clean, f"{stray:.1f} s against {clean:.1f} s without the quote"
    cli = Cli(tmp_path / "stray")
    found = contacts(cli)
    assert found["m10@org10.example.org"]["organization"] == 'Samsung 5" Display Ltd'
    assert found["m11@org11.example.org"]["organization"] == "Organisation 11"
    last = found[f"m{rows - 1}@org{(rows - 1) % 500}.example.org"]
    assert last["name"] == f"Member {rows - 1}" and last["tags"] == [
        f"b{(rows - 1) % 7}",
        "cop-2014",
    ]
    assert cli("contacts", "count", "--where", "tag:b3").stdout.strip() == str(
        len(range(3, rows, 7))
    )


def test_the_line_with_a_quote_read_as_a_character_is_reported(tmp_path: Path) -> None:
    from outreach import imports
    from outreach.app import build
    from outreach.config import load_settings

    ws = tmp_path / "ws"
    path = write_csv(ws / "contacts" / "members.csv", _members(50, stray=10))
    services = build(load_settings(ws, env={"OUTREACH_DATABASE_URL": ""}))
    try:
        report = imports.import_files(services.contacts, [path])
    finally:
        services.close()
    assert report.inserted == 50 and report.noted == 1
    (note,) = report.notes
    assert (note.file, note.line) == (str(path), 12)
    assert "quote inside a cell that does not start with one" in note.text


@pytest.mark.parametrize("block_bytes", [97, 256, 4096])
def test_after_a_stray_quote_blocks_still_end_between_records(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, block_bytes: int
) -> None:
    """Records are cut into blocks where they end: a stray quote must not make a
    line break inside a later quoted cell look like the end of a record."""
    monkeypatch.setattr(blocks, "BLOCK_BYTES", block_bytes)
    lines = ["email,name,organization,notes"]
    for i in range(300):
        org = 'Samsung 5" Display Ltd' if i == 3 else f"Org {i}"
        note = f'"multi\nline ""{i}"", with, commas\nand more"' if i % 7 == 0 else f"plain {i}"
        lines.append(f"u{i}@example.org,U {i},{org},{note}")
    lines.append("not-an-address,Bad,Org,plain")
    path = write_csv(workspace / "quotes.csv", "\n".join(lines) + "\n")
    cli = Cli(workspace)
    out = cli("contacts", "import", str(path), "--map", "notes=ignore", "--workers", "0").stdout
    assert _counts(out) == {"inserted": 300, "updated": 0, "unchanged": 0, "rejected": 1}
    bad_line = 1 + 300 + 2 * len(range(0, 300, 7)) + 1  # header, rows, their extra lines
    assert f"{path}:{bad_line}:" in out
    found = contacts(cli)
    assert found["u3@example.org"]["organization"] == 'Samsung 5" Display Ltd'
    assert all(found[f"u{i}@example.org"]["name"] == f"U {i}" for i in range(300))
    assert all(
        found[f"u{i}@example.org"]["organization"] == f"Org {i}" for i in range(300) if i != 3
    )


def test_the_cli_names_the_line_with_a_quote_read_as_a_character(cli: Cli, workspace: Path) -> None:
    path = write_csv(workspace / "contacts" / "members.csv", _members(50, stray=10))
    out = cli("contacts", "import", str(path)).stdout
    assert "Lines with a quote read as a character" in out and f"{path}:12:" in out
