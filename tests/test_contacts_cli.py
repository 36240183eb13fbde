"""The other contact commands, through the real CLI on real SQLite files."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from tests.conftest import ROOT, Cli, write_csv
from tests.test_import import contacts


@pytest.fixture
def loaded(cli: Cli) -> Cli:
    cli("contacts", "import", *map(str, sorted((ROOT / "contacts").glob("*.csv"))))
    return cli


def test_count_list_and_show(loaded: Cli) -> None:
    assert int(loaded("contacts", "count").stdout) == 830
    assert int(loaded("contacts", "count", "--where", "kind:industry").stdout) == 700
    fj = int(loaded("contacts", "count", "--where", "kind:industry country:FJ").stdout)
    assert 0 < fj < 700
    listed = loaded(
        "contacts", "list", "--where", "kind:industry country:FJ", "--limit", "0", "--json"
    ).stdout
    assert len(listed.splitlines()) == fj
    table = loaded("contacts", "list", "--limit", "5").stdout
    assert "5 of 830 shown" in table
    email = next(iter(contacts(loaded, "kind:media")))
    shown = loaded("contacts", "show", email).stdout
    assert email in shown and "media" in shown and "attr.beat" in shown
    missing = loaded("contacts", "show", "nobody@example.org", ok=False)
    assert "no contact with the address 'nobody@example.org'" in missing.output


def test_bad_where_is_a_clear_error(loaded: Cli) -> None:
    result = loaded("contacts", "count", "--where", "kind:industry colour:red", ok=False)
    assert "unknown field 'colour'" in result.output and "^" in result.output


def test_export_reimports_to_the_same_store(loaded: Cli, tmp_path: Path) -> None:
    exported = tmp_path / "all.csv"
    loaded("contacts", "export", str(exported))
    before = contacts(loaded)
    (tmp_path / "fresh" / "contacts").mkdir(parents=True)
    fresh = Cli(tmp_path / "fresh")
    fresh("contacts", "import", str(exported))
    after = contacts(fresh)

    def strip(rows):
        return {
            k: {f: v for f, v in r.items() if f not in ("created_at", "updated_at")}
            for k, r in rows.items()
        }

    assert strip(after) == strip(before)
    # and importing the export into the original store changes nothing
    out = loaded("contacts", "import", str(exported)).stdout
    assert "unchanged │   830" in out or "unchanged │ 830" in out


def test_export_to_stdout_with_where(loaded: Cli) -> None:
    out = loaded("contacts", "export", "-", "--where", "kind:government country:FJ").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 1 and rows[0]["country"] == "FJ" and rows[0]["kind"] == "government"


def test_tag_untag_unsubscribe(loaded: Cli) -> None:
    assert (
        "tagged 3 contact(s)"
        in loaded(
            "contacts", "tag", "Briefed", "--where", "kind:government country:FJ,WS,TO"
        ).stdout
    )
    assert (
        "tagged 0 contact(s)"
        in loaded("contacts", "tag", "briefed", "--where", "kind:government country:FJ").stdout
    )
    assert loaded("contacts", "count", "--where", "tag:briefed").stdout.strip() == "3"
    assert (
        "removed briefed from 1"
        in loaded("contacts", "untag", "briefed", "--where", "country:TO").stdout
    )
    assert loaded("contacts", "count", "--where", "tag:briefed").stdout.strip() == "2"
    assert "say which contacts" in loaded("contacts", "unsubscribe", ok=False).output
    n = int(loaded("contacts", "count", "--where", "kind:media country:FJ").stdout)
    assert (
        f"unsubscribed {n} contact(s)"
        in loaded("contacts", "unsubscribe", "--where", "kind:media country:FJ").stdout
    )
    assert loaded("contacts", "count", "--where", "status:unsubscribed").stdout.strip() == str(n)


def test_delete_asks_first_and_erase_suppresses(loaded: Cli, workspace: Path) -> None:
    email = next(iter(contacts(loaded, "kind:partner")))
    kept = loaded("contacts", "delete", email, input="n\n", ok=False)
    assert "Delete 1 contact(s)?" in kept.output
    assert email in contacts(loaded, "kind:partner")
    assert "deleted 1" in loaded("contacts", "delete", email, input="y\n").stdout
    # a plain delete forgets the person; a later import brings them back
    again = write_csv(workspace / "again.csv", f"email,kind\n{email},partner\n")
    loaded("contacts", "import", str(again))
    assert "erased 1" in loaded("contacts", "delete", email, "--erase", "--yes").stdout
    out = loaded("contacts", "import", str(again)).stdout
    assert "suppressed" in out and email not in contacts(loaded)
    assert (
        "no contact matches"
        in loaded("contacts", "delete", "--where", "country:AQ", "--yes").stdout
    )
