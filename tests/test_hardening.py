"""Bad input that must not get through: header injection, raw control bytes on the
terminal, repeated addresses in an import, reversible erasure hashes, single quotes
in segments, launch times that a zone skips or has twice."""

from __future__ import annotations

import csv
import hashlib
import hmac
import sqlite3
from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
import yaml
from sqlalchemy import insert, select

from outreach.db.contacts import SqlContactStore
from outreach.db.engine import open_database
from outreach.db.models import suppressions, utcnow
from outreach.domain.audience import parse
from outreach.domain.campaign import parse_launch
from outreach.domain.errors import InputFileError, SegmentError
from outreach.domain.mime import StepHeaders, build, message_id
from outreach.domain.normalizer import normalize_contact
from outreach.domain.plan import load_plan
from outreach.domain.render import RenderedEmail
from outreach.domain.suppression import suppression_hash
from outreach.domain.timeline import timeline
from tests.conftest import Cli, write_csv
from tests.test_import import _counts, contacts

ESC = "\x1b"


def parse_mail(raw: bytes):  # type: ignore[no-untyped-def]
    return BytesParser(policy=policy.default).parsebytes(raw)


def header_block(raw: bytes) -> list[bytes]:
    """The header lines as sent (folded lines joined)."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    return head.replace(b"\r\n ", b" ").replace(b"\r\n\t", b" ").split(b"\r\n")


# -- 1. every header value on one line ---------------------------------------------


def test_no_header_value_can_break_its_line() -> None:
    step = StepHeaders.make(
        sender_name="COP\r\nBcc: sender-victim@example.net", sender="cop@example.org",
        reply_to="press@example.org\nBcc: reply-victim@example.net", campaign_id="cop-2014",
        campaign_name="Guidelines\r\nX-Injected: campaign",
    )  # fmt: skip
    email = RenderedEmail("Hello\r\nBcc: subject-victim@example.net", "", "Body\n", None, "en")
    for name in ("Eve\r\nBcc: victim@example.net", "Ève\r\nBcc: victim@example.net",
                 "Eve\u2028Bcc: victim@example.net", "Eve\x00\x1b\x85 Smith"):  # fmt: skip
        raw = build(
            step, to_name=name, to="eve@example.org", email=email,
            msg_id=message_id("cop-2014", "s", 1, step.domain), date=datetime(2014, 9, 5, tzinfo=UTC),
            unsubscribe_url="https://example.org/u/1\r\nBcc: url-victim@example.net",
        )  # fmt: skip
        message = parse_mail(raw)
        assert message.get_all("Bcc") is None and message.get_all("X-Injected") is None
        assert len(message.get_all("To")) == 1 and len(message.get_all("From")) == 1
        assert message["To"].addresses[0].addr_spec == "eve@example.org"
        assert "\n" not in message["To"].addresses[0].display_name
        assert "\r" not in str(message["Subject"]) and "\n" not in str(message["Subject"])
        assert message["Reply-To"].addresses[0].addr_spec == "press@example.org"
        names = [line.split(b":", 1)[0] for line in header_block(raw)]
        assert all(n in (b"From", b"Reply-To", b"List-Id", b"MIME-Version", b"To", b"Subject",
                         b"Date", b"Message-ID", b"List-Unsubscribe", b"List-Unsubscribe-Post",
                         b"Content-Type", b"Content-Transfer-Encoding") for n in names), names  # fmt: skip
        assert all(32 <= b < 127 or b > 127 or b == 9 for b in b"".join(header_block(raw)))


def test_a_name_written_by_sql_goes_out_on_one_line(sample_ws: Cli) -> None:
    ws = sample_ws.workspace
    address = contacts(sample_ws, "kind:industry country:SB")
    target = sorted(address)[0]
    with sqlite3.connect(ws / ".outreach" / "outreach.db") as db:
        db.execute(
            "UPDATE contacts SET name = ? WHERE email = ?",
            ("Eve\r\nBcc: victim@example.net", target),
        )
    out = sample_ws("send", "cop-industry", "--where", f"email:{target}", "--yes").stdout
    assert "to 1 contact(s)" in out
    (path,) = (ws / ".outreach" / "outbox" / "new").iterdir()
    raw = path.read_bytes()
    message = parse_mail(raw)
    assert message.get_all("Bcc") is None
    assert len(message.get_all("To")) == 1
    assert message["To"].addresses[0].addr_spec.lower() == target.lower()
    assert b"\nBcc:" not in raw.split(b"\r\n\r\n", 1)[0]


# -- 2. content of a bad file is shown escaped -----------------------------------------


def test_control_bytes_of_a_bad_header_are_shown_escaped(cli: Cli, workspace: Path) -> None:
    path = write_csv(workspace / "h.csv", f"na{ESC}[2Jme,org\u202e\nAna,Org\n")
    out = cli("contacts", "import", str(path), ok=False).output
    assert ESC not in out and "\u202e" not in out
    assert "no email column in the header (na\\x1b[2Jme, org\\u202e)" in out
    latin = write_csv(workspace / "n.csv", "email,na\x00me\nbad\x00x,Ana\n", encoding="latin-1")
    out = cli("contacts", "import", str(latin), "--encoding", "latin-1").output
    assert "\x00" not in out and f"{latin}:2: email: contains the control character U+0000" in out


def test_rejects_on_screen_and_in_the_file_never_hold_raw_controls(
    cli: Cli, workspace: Path
) -> None:
    path = write_csv(
        workspace / f"bad{ESC}[31m.csv",
        f"email,name,country\nok@example.org,Ok,FJ\nbad{ESC}[2J@example.org,Eve,FJ\n"
        f"c@example.org,Cai,Atl\u200bantis\nd@example.org,Dee\x9b31m,FJ\n",
    )
    rejects = workspace / "rejects.csv"
    out = cli("contacts", "import", str(path), "--rejects", str(rejects)).output
    assert _counts(out)["rejected"] == 3
    for raw in (ESC, "\x9b", "\u200b"):
        assert raw not in out
    assert "bad\\x1b[31m.csv:3: email: contains the control character U+001B" in out
    assert "unknown country 'Atl\\u200bantis'" in out
    text = rejects.read_text(encoding="utf-8")
    assert ESC not in text and "\x9b" not in text
    rows = list(csv.DictReader(rejects.open(encoding="utf-8")))
    assert rows[0]["row"] == "bad\\x1b[2J@example.org,Eve,FJ"
    assert rows[2]["row"] == "d@example.org,Dee\\x9b31m,FJ"


def test_a_segment_error_escapes_what_it_points_at() -> None:
    with pytest.raises(SegmentError) as info:
        parse("kind:industry name:'a\u200bb' )")  # an invisible character passes as text
    text = str(info.value)
    assert "\u200b" not in text and "unexpected ')'" in text
    lines = text.splitlines()
    expression, caret = lines[1], lines[2]
    assert expression.strip() == "kind:industry name:'a\\u200bb' )"
    assert expression[caret.index("^")] == ")"  # still under it, past the escape


# -- 3. an address met twice in one import ---------------------------------------------


def test_an_address_twice_in_a_file_is_reported_with_both_lines(cli: Cli, workspace: Path) -> None:
    path = write_csv(
        workspace / "d.csv",
        "email,name,tags\nx@example.org,First,a\ny@example.org,Y,\nX@Example.org,,b\n"
        "x@example.org,Third,\n",
    )
    out = cli("contacts", "import", str(path)).stdout
    assert _counts(out) == {"inserted": 2, "updated": 2, "unchanged": 0, "rejected": 0}
    assert "address met again (later row wins)" in out
    assert f"{path}:2 and {path}:4: x@example.org" in out
    assert f"{path}:4 and {path}:5: x@example.org" in out
    x = contacts(cli)["x@example.org"]
    # the later row wins, blanks keep what came before, tags add up
    assert x["name"] == "Third" and x["tags"] == ["a", "b"]
    dry = cli("contacts", "import", str(path), "--dry-run").stdout
    assert f"{path}:2 and {path}:4: x@example.org" in dry  # a dry run reports them too


def test_an_address_in_two_files_is_reported_with_both(cli: Cli, workspace: Path) -> None:
    first = write_csv(workspace / "a.csv", "email,name\nana@example.org,Ana\nben@example.org,Ben\n")
    second = write_csv(workspace / "b.csv", "email,name\ncai@example.org,Cai\nANA@example.org,Ana L\n")
    out = cli("contacts", "import", str(first), str(second)).stdout
    assert f"{first}:2 and {second}:3: ana@example.org" in out
    assert "ben@example.org" not in out and "cai@example.org" not in out
    assert contacts(cli)["ANA@example.org"]["name"] == "Ana L"  # the later row, as written
    again = cli("contacts", "import", str(first)).stdout  # stored already: no repeat
    assert "met again" not in again


def test_repeats_across_blocks_and_workers_are_all_counted(tmp_path: Path) -> None:
    rows = ["email,name"]
    rows += [f"user{i}@example.org,User {i}" for i in range(6000)]
    rows += [f"USER{i}@example.org,Renamed {i}" for i in range(0, 6000, 2)]
    ws = tmp_path / "ws"
    (ws / "contacts").mkdir(parents=True)
    path = write_csv(ws / "contacts" / "again.csv", "\n".join(rows) + "\n")
    out = Cli(ws)("contacts", "import", str(path), "--workers", "2").stdout
    assert _counts(out) == {"inserted": 6000, "updated": 3000, "unchanged": 0, "rejected": 0}
    assert "(first 20 of 3,000)" in out
    assert f"{path}:2 and {path}:6002: user0@example.org" in out


# -- 4. erased addresses as a keyed hash -------------------------------------------------


@pytest.fixture
def keyed(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = open_database(f"sqlite:///{tmp_path / 'store.db'}")
    yield SqlContactStore(engine, key=lambda: b"workspace-secret"), engine
    engine.dispose()


def test_erasure_keeps_a_keyed_hash_that_still_blocks(keyed) -> None:  # type: ignore[no-untyped-def]
    store, engine = keyed
    with store.writer() as writer:
        writer.write([normalize_contact({"email": "Eve@Example.org", "name": "Eve"})])
    assert store.delete(parse("email:eve@example.org"), erase=True) == 1
    with engine.connect() as conn:
        (stored,) = conn.execute(select(suppressions.c.email_hash)).scalars()
    assert stored != hashlib.sha256(b"eve@example.org").hexdigest()
    assert stored == hmac.new(b"workspace-secret", b"eve@example.org", hashlib.sha256).hexdigest()
    assert store.is_suppressed("EVE@example.org")
    with store.writer() as writer:
        outcome = writer.write([normalize_contact({"email": "eve@example.org"})])
    assert outcome.suppressed == [0] and store.get("eve@example.org") is None


def test_unkeyed_hashes_from_before_keep_blocking(keyed) -> None:  # type: ignore[no-untyped-def]
    store, engine = keyed
    with engine.begin() as conn:  # what an erasure stored before hashes were keyed
        conn.execute(insert(suppressions), [{"email_hash": suppression_hash("old@example.org"),
                                             "reason": "erased on request", "created_at": utcnow()}])  # fmt: skip
    assert store.is_suppressed("Old@example.org")
    with store.writer() as writer:
        outcome = writer.write([normalize_contact({"email": f"u{i}@example.org"}) for i in range(5)]
                               + [normalize_contact({"email": "OLD@example.org"})])  # fmt: skip
    assert outcome.suppressed == [5] and outcome.inserted == 5


def test_an_erased_address_cannot_be_imported_again_through_the_cli(
    cli: Cli, workspace: Path
) -> None:
    path = write_csv(workspace / "p.csv", "email,name\nana@example.org,Ana\nben@example.org,Ben\n")
    cli("contacts", "import", str(path))
    cli("contacts", "delete", "ANA@example.org", "--erase", "--yes")
    out = cli("contacts", "import", str(path)).stdout
    assert "erased on request" in out and _counts(out)["rejected"] == 1
    assert "ana@example.org" not in contacts(cli)


def test_the_cli_erases_with_the_workspace_key(workspace: Path) -> None:
    cli = Cli(workspace, env={"OUTREACH_SECRET_KEY": "the-workspace-key"})
    path = write_csv(workspace / "p.csv", "email,name\nana@example.org,Ana\n")
    cli("contacts", "import", str(path))
    cli("contacts", "delete", "ana@example.org", "--erase", "--yes")
    with sqlite3.connect(workspace / ".outreach" / "outreach.db") as db:
        (stored,) = db.execute("SELECT email_hash FROM suppressions").fetchone()
    assert stored != hashlib.sha256(b"ana@example.org").hexdigest()
    assert stored == hmac.new(b"the-workspace-key", b"ana@example.org", hashlib.sha256).hexdigest()


# -- 5. single quotes in segments ---------------------------------------------------------


def test_single_quotes_parse_like_double_quotes(sample_ws: Cli) -> None:
    assert parse("sector:'mobile operator',isp") == parse('sector:"mobile operator",isp')
    assert parse(r"name:'O\'Brien'") == parse("name:O'Brien") == parse('name:"O\'Brien"')
    single = sample_ws("contacts", "count", "--where", "sector:'mobile operator'").stdout
    double = sample_ws("contacts", "count", "--where", 'sector:"mobile operator"').stdout
    assert int(single) == int(double) > 0
    tagged = sample_ws("contacts", "tag", "checked", "--where", "sector:'mobile operator' country:FJ")
    assert "tagged" in tagged.stdout
    expr = parse("org:'Blue Telecom Samoa' -name:'x'")
    assert parse(str(expr)) == expr
    assert parse(str(parse("name:'\\'quoted'"))) == parse("name:'\\'quoted'")


def test_an_unclosed_single_quote_names_its_position(sample_ws: Cli) -> None:
    with pytest.raises(SegmentError) as info:
        parse("kind:industry sector:'mobile operator")
    assert info.value.position == 21 and "unclosed quote" in str(info.value)
    out = sample_ws("contacts", "count", "--where", "sector:'mobile", ok=False).output
    assert "unclosed quote" in out and "at position 7" in out


# -- 6. launch times in a DST gap or overlap ----------------------------------------------


def test_a_launch_in_a_gap_names_both_instants() -> None:
    with pytest.raises(InputFileError) as info:
        parse_launch("2014-03-30 01:30 Europe/London", source="plan.yaml")
    message = str(info.value)
    assert "2014-03-30 01:30 Europe/London does not exist" in message
    assert "00:30 UTC or 01:30 UTC" in message and "00:30 or 02:30" in message


def test_a_launch_in_an_overlap_names_both_instants_and_an_offset_picks_one() -> None:
    with pytest.raises(InputFileError) as info:
        parse_launch("2014-10-26 01:30 Europe/London", source="plan.yaml")
    message = str(info.value)
    assert "happens twice" in message and "00:30 UTC or 01:30 UTC" in message
    assert "2014-10-26 01:30+01:00 Europe/London or 2014-10-26 01:30+00:00 Europe/London" in message
    early = parse_launch("2014-10-26 01:30+01:00 Europe/London")
    late = parse_launch("2014-10-26 01:30+00:00 Europe/London")
    assert early.astimezone(UTC) == datetime(2014, 10, 26, 0, 30, tzinfo=UTC)
    assert late.astimezone(UTC) == datetime(2014, 10, 26, 1, 30, tzinfo=UTC)
    assert str(late.tzinfo) == "Europe/London"
    with pytest.raises(InputFileError, match="happens twice"):
        parse_launch("2014-10-26 01:30+02:00 Europe/London")
    with pytest.raises(InputFileError, match="gives the offset"):
        parse_launch("2014-09-05 10:00+02:00 Europe/Istanbul")
    assert parse_launch("2014-09-05 10:00+03:00 Europe/Istanbul") == parse_launch(
        "2014-09-05 10:00 Europe/Istanbul"
    )


def test_a_day_that_a_zone_skipped_shows_the_dates() -> None:
    with pytest.raises(InputFileError) as info:  # Samoa skipped 30 December 2011
        parse_launch("2011-12-30 10:00 Pacific/Apia")
    assert "2011-12-29 20:00 UTC or 2011-12-30 20:00 UTC" in str(info.value)


BASE = {
    "campaign": {"id": "c", "name": "C"},
    "launch": "2014-09-05 10:00 Europe/Istanbul",
    "steps": [{"id": "s", "channel": "press", "template": "t", "at": "T+0"}],
}


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"launch": "2014-03-30 01:30 Europe/London"}, "launch"),
        ({"embargo": "2014-10-26 01:15 Europe/London"}, "embargo"),
        ({"waves": [{"id": "us", "launch": "2014-03-09 02:30 America/New_York",
                     "audience": "country:US"}]}, "launch"),
    ],
)  # fmt: skip
def test_plans_refuse_a_launch_wave_or_embargo_in_a_gap_or_overlap(
    change: dict, where: str
) -> None:
    with pytest.raises(InputFileError) as info:
        load_plan({**BASE, **change}, source="plan.yaml")
    message = str(info.value)
    assert where in message and " UTC or " in message


def test_plan_check_names_the_instants(sample_ws: Cli) -> None:
    plan = sample_ws.workspace / "schedules" / "cop-guidelines-2014.yaml"
    data = yaml.safe_load(plan.read_text(encoding="utf-8"))
    data["launch"] = "2014-03-30 01:30 Europe/London"
    plan.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    out = sample_ws("plan", "check", str(plan), ok=False).output
    assert "does not exist" in out and "00:30 UTC or 01:30 UTC" in out


def test_a_launch_with_an_offset_fires_at_that_instant() -> None:
    plan = load_plan({**BASE, "launch": "2014-10-26 01:30+00:00 Europe/London"}, source="p")
    (firing,) = timeline(plan, lambda expr: {}).firings
    assert firing.at == datetime(2014, 10, 26, 1, 30, tzinfo=UTC)


@pytest.mark.parametrize("block_bytes", [4096, 1 << 20], ids=["blocks", "one-block"])
def test_two_addresses_that_share_a_hash_are_no_repeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block_bytes: int
) -> None:
    from outreach.importing import blocks, repeats

    monkeypatch.setattr(blocks, "BLOCK_BYTES", block_bytes)
    pair = {"user1@example.org", "user5000@example.org", "user5001@example.org"}
    monkeypatch.setattr(repeats, "hash", lambda k: 1 if k in pair else hash(k), raising=False)
    # a repeat first (from then on the import keeps every address), then the three
    # addresses that share a hash, in one block or in blocks apart
    rows = ["email,name", "user7@example.org,First", "user7@example.org,Again"]
    rows += [f"user{i}@example.org,U{i}" for i in range(6000) if i != 7]
    ws = tmp_path / "ws"
    (ws / "contacts").mkdir(parents=True)
    path = write_csv(ws / "contacts" / "h.csv", "\n".join(rows) + "\n")
    out = Cli(ws)("contacts", "import", str(path), "--workers", "0").stdout
    assert _counts(out) == {"inserted": 6000, "updated": 1, "unchanged": 0, "rejected": 0}
    assert "(first 1 of 1)" in out and f"{path}:2 and {path}:3: user7@example.org" in out
