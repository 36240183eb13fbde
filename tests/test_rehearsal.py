"""The dress rehearsal (the whole sample plan on compressed time, to local targets
through the real CLI), and the press channel's newsroom."""

from __future__ import annotations

import json
import mailbox
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from outreach.channels.press import Newsroom
from outreach.rehearsal import CompressedClock, parse_speed
from tests.conftest import Cli

EMBARGO = datetime(2014, 9, 5, 7, tzinfo=UTC)


def test_the_sample_plan_rehearsed_end_to_end(sample_ws: Cli) -> None:
    ws = sample_ws.workspace
    out = sample_ws("rehearse", str(ws / "schedules/cop-guidelines-2014.yaml"), "--speed", "1w=3s").stdout
    assert "830 contacts copied from the workspace's database" in out
    assert "Plan time runs 201,600× faster, from 2014-09-03 06:00 UTC" in out
    state = ws / ".outreach" / "rehearsal"
    db = create_engine(f"sqlite:///{state / 'outreach.db'}")
    with db.connect() as conn:
        # every delivery went out, at its own step's instant of plan time
        statuses = dict(conn.execute(text("SELECT status, count(*) FROM deliveries GROUP BY status")).all())
        assert set(statuses) == {"sent"}
        late = conn.execute(text(
            "SELECT count(*) FROM delivery_events e JOIN steps s ON s.id = e.step_id "
            "WHERE e.event = 'sent' AND e.at != s.send_at")).scalar()  # fmt: skip
        assert late == 0
        first_public = conn.execute(text(
            "SELECT min(e.at) FROM delivery_events e JOIN steps s ON s.id = e.step_id "
            "WHERE e.event = 'sent' AND s.key NOT LIKE 'embargoed-media%'")).scalar()  # fmt: skip
        assert first_public == "2014-09-05 07:00:00.000000"  # nothing public before the embargo
        emails = conn.execute(text("SELECT count(*) FROM deliveries WHERE contact_id IS NOT NULL")).scalar()
        partner_sent = conn.execute(text(
            "SELECT min(e.at) FROM delivery_events e JOIN steps s ON s.id = e.step_id "
            "WHERE e.event = 'sent' AND s.key LIKE 'partner-email%'")).scalar()  # fmt: skip
        press_sent = conn.execute(text(
            "SELECT min(e.at) FROM delivery_events e JOIN steps s ON s.id = e.step_id "
            "WHERE e.event = 'sent' AND s.channel = 'press'")).scalar()  # fmt: skip
        assert press_sent <= partner_sent  # the partner email requires the release
    db.dispose()
    box = mailbox.Maildir(state / "outbox", create=False)
    assert len(box) == emails and f"Email: {emails:,} messages" in out
    # the embargoed release to media says so, in the reader's zone and in UTC
    media = [BytesParser(policy=policy.default).parsebytes(box.get_bytes(k)) for k in box.iterkeys()]
    embargoed = [m for m in media if str(m["Subject"]).startswith("EMBARGOED UNTIL")]
    assert len(embargoed) == 60
    assert any(str(m["Subject"]).startswith("EMBARGOED UNTIL 4 Sept 2014, 20:00 Niue Time (07:00 UTC): ITU")
               for m in embargoed)  # fmt: skip
    bodies = [m.get_body(("plain",)).get_content() for m in embargoed]
    assert all("07:00 UTC)" in b for b in bodies)  # the instant in UTC, and in the reader's zone:
    assert any(b.startswith("EMBARGOED UNTIL 5 September 2014, 19:00 Fiji Standard Time") for b in bodies)
    assert any(b.startswith("EMBARGOED UNTIL 4 September 2014, 20:00 Niue Time") for b in bodies)
    # Dubai, for a contact whose language has no variant: wholly in the variant's language
    assert any(b.startswith("EMBARGOED UNTIL 5 September 2014, 11:00 Gulf Standard Time") for b in bodies)
    posts = [json.loads(line) for line in (state / "x" / "posts.jsonl").read_text().splitlines()]
    assert [p["in_reply_to"] for p in posts] == [None, "local-1", "local-2"]
    assert "[local-2] (reply to local-1) Five key areas" in out
    page = (state / "newsroom" / "cop-2014-press-release.html").read_text()
    assert "ISTANBUL, 5 September 2014 –" in page
    # the log is real and the workspace's own database has none of it
    log = sample_ws("--rehearsal", "log", "--step", "launch-thread@20140905T0705Z").stdout
    assert "2014-09-05 07:05:00" in log and "post_id=local-3" in log
    assert "press-release" not in sample_ws("log").stdout
    status = sample_ws("--rehearsal", "status", "cop-2014").stdout
    assert "approved by rehearsal (automatic) at 2014-09-03 05:59 UTC" in status  # before the first step
    assert "industry-email" in out and "Totals: sent" in out


def test_a_speed_that_does_not_compress_time_is_refused(sample_ws: Cli) -> None:
    plan = str(sample_ws.workspace / "schedules/cop-guidelines-2014.yaml")
    bad = sample_ws("rehearse", plan, "--speed", "10s=1d", ok=False)
    assert "does not speed time up" in bad.stderr
    bad = sample_ws("rehearse", plan, "--speed", "fast", ok=False)
    assert "is not PLAN=REAL" in bad.stderr and "1d=10s" in bad.stderr
    assert parse_speed("1d=10s") == 8640


def test_a_broken_plan_is_refused_before_anything_is_set_up(sample_ws: Cli) -> None:
    plan = sample_ws.workspace / "schedules" / "broken.yaml"
    plan.write_text((sample_ws.workspace / "schedules/cop-guidelines-2014.yaml").read_text()
                    .replace("channel: press", "chanel: press"))  # fmt: skip
    bad = sample_ws("rehearse", str(plan), ok=False)
    assert "broken.yaml:" in bad.stderr and "chanel" in bad.stderr
    assert not (sample_ws.workspace / ".outreach" / "rehearsal").exists()


def test_the_compressed_clock_holds_at_a_steps_instant() -> None:
    start = datetime(2014, 9, 5, tzinfo=UTC)
    clock = CompressedClock(start, 86400)
    assert clock() >= start
    clock.hold(at=start)
    assert clock() == start  # the sleep's overshoot is taken back
    held = clock()
    assert clock() == held
    clock.release()
    assert clock() >= held


def _release(slug: str, headline: str) -> dict:
    return {"slug": slug, "headline": headline, "dateline": "ISTANBUL, 5 September 2014 –",
            "summary": "Today ITU & UNICEF <released>", "campaign": "c",
            "html": f"<html><body><h1>{headline}</h1></body></html>"}  # fmt: skip


def test_the_newsroom_publishes_pages_an_index_and_an_atom_feed(tmp_path: Path) -> None:
    newsroom = Newsroom(tmp_path / "news", "https://www.example.org/newsroom", "COP newsroom")
    first = newsroom.publish(_release("cop-launch", "Guidelines released"), datetime(2014, 9, 5, 7, tzinfo=UTC))
    assert first.ok and first.url == "https://www.example.org/newsroom/cop-launch.html"
    newsroom.publish(_release("cop-pacific", "Pacific roll-out"), datetime(2014, 9, 12, tzinfo=UTC))
    again = newsroom.publish(_release("cop-launch", "Guidelines released"), datetime(2014, 9, 5, 7, tzinfo=UTC))
    assert again.ok  # publishing again (after a crash) rewrites, never adds
    ns = {"a": "http://www.w3.org/2005/Atom"}
    feed = ET.parse(tmp_path / "news" / "feed.atom").getroot()
    entries = feed.findall("a:entry", ns)
    assert [e.find("a:title", ns).text for e in entries] == ["Pacific roll-out", "Guidelines released"]
    assert entries[1].find("a:link", ns).get("href") == "https://www.example.org/newsroom/cop-launch.html"
    assert entries[1].find("a:published", ns).text.startswith("2014-09-05T07:00:00")
    assert entries[1].find("a:summary", ns).text == "ISTANBUL, 5 September 2014 – Today ITU & UNICEF <released>"
    assert (tmp_path / "news" / "index.html").read_text().count("<li>") == 2
    newsroom.publish(_release("hostile", "<script>alert(1)</script>"), datetime(2014, 9, 13, tzinfo=UTC))
    index = (tmp_path / "news" / "index.html").read_text()
    assert "<script>" not in index and "&lt;script&gt;alert(1)&lt;/script&gt;" in index
    assert "Guidelines released" in (tmp_path / "news" / "cop-launch.html").read_text()
    assert not list((tmp_path / "news").glob(".*"))  # no half-written files left behind


@pytest.mark.parametrize("speed", ["1d=1d", "0d=1s"])
def test_speeds_that_are_not_faster(speed: str) -> None:
    from outreach.domain.errors import InputFileError

    if speed == "1d=1d":
        assert parse_speed(speed) == 1.0
    else:
        with pytest.raises(InputFileError):
            parse_speed(speed)
