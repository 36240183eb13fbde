"""What was approved is what is sent: ``schedule`` stores the plan and the source of
every template it uses; firing, sending and posting read only the database."""

from __future__ import annotations

import json
import mailbox
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from outreach.app import build
from outreach.config import load_settings
from tests.conftest import Cli

LINKS = {"guidelines": "https://www.example.org/g", "press": "https://www.example.org/p",
         "checklist": "https://www.example.org/c", "pledge": "https://www.example.org/pl"}  # fmt: skip


@pytest.fixture
def ws(sample_ws: Cli) -> Path:
    """A copy of the sample workspace with its contacts imported."""
    return sample_ws.workspace


def _soon(ws: Path) -> tuple[Path, datetime]:
    """A plan whose steps (a release, an X thread, an email) are due in a moment."""
    launch = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    path = ws / "schedules" / "soon.yaml"
    path.write_text(yaml.safe_dump({
        "campaign": {"id": "soon", "name": "Soon", "from": "team@example.org"},
        "launch": f"{launch:%Y-%m-%d %H:%M} UTC", "links": LINKS,
        "steps": [
            {"id": "release", "channel": "press", "template": "cop-release", "at": "T-1m"},
            {"id": "thread", "channel": "x", "template": "cop-launch", "at": "T-1m"},
            {"id": "mail", "channel": "email", "template": "cop-partner", "audience": "kind:partner", "at": "T-1m"},
        ],
    }, sort_keys=False))  # fmt: skip
    return path, launch - timedelta(minutes=1)


def _wait(due: datetime) -> None:
    while datetime.now(UTC) < due + timedelta(seconds=1):
        time.sleep(0.2)


def _bodies(ws: Path) -> list[str]:
    out = []
    for message in mailbox.Maildir(ws / ".outreach" / "outbox", create=False):
        part = message.get_payload()[0] if message.is_multipart() else message
        out.append(part.get_payload(decode=True).decode("utf-8", "replace"))
    return out


def test_a_campaign_fires_and_sends_with_its_files_gone(ws: Path) -> None:
    cli = Cli(ws, env={"OUTREACH_SECRET_KEY": "k"})
    path, due = _soon(ws)
    cli("schedule", str(path))
    cli("approve", "soon", "--by", "T")
    shutil.rmtree(ws / "templates")
    shutil.rmtree(ws / "schedules")
    _wait(due)
    cli("run", "--until-idle")
    services = build(load_settings(ws, env={"OUTREACH_DATABASE_URL": ""}))
    try:
        counts = services.outbox.counts(campaign="soon")
        partners = counts["sent"] - 1 - 3  # the release and the thread's three posts
        assert set(counts) == {"sent"} and partners > 0
        assert [s.status for s in services.outbox.steps("soon")] == ["done"] * 3
    finally:
        services.close()
    assert len(_bodies(ws)) == partners
    posts = [json.loads(line) for line in (ws / ".outreach" / "x" / "posts.jsonl").read_text().splitlines()]
    assert len(posts) == 3 and "Istanbul" in posts[0]["text"]
    assert (ws / ".outreach" / "newsroom" / "feed.atom").is_file()


def test_an_edit_after_approval_changes_nothing_until_scheduled_again(ws: Path) -> None:
    cli = Cli(ws, env={"OUTREACH_SECRET_KEY": "k"})
    path, due = _soon(ws)
    cli("schedule", str(path))
    cli("approve", "soon", "--by", "T")
    template = ws / "templates" / "cop-partner.email.j2"
    template.write_text(template.read_text().replace("With thanks", "EDITED AFTER APPROVAL"))
    note = cli("approve", "soon", "--by", "T").output
    assert "approved as it was scheduled; the files differ since (templates/cop-partner.email.j2)" in note
    _wait(due)
    cli("run", "--until-idle")
    bodies = _bodies(ws)
    assert bodies and all("EDITED AFTER APPROVAL" not in b for b in bodies)
    assert any("With thanks" in b for b in bodies)
    again = cli("schedule", str(path)).output
    assert "changed since it was last scheduled: templates/cop-partner.email.j2" in again
    assert "changed since T approved it" in again


def test_an_ad_hoc_send_goes_out_as_it_was_queued(ws: Path) -> None:
    cli = Cli(ws)
    at = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    cli("send", "cop-partner", "--where", "kind:partner", "--at", at, "--yes")
    template = ws / "templates" / "cop-partner.email.j2"
    template.write_text(template.read_text().replace("With thanks", "EDITED AFTER QUEUING"))
    time.sleep(2.2)
    cli("run", "--until-idle")
    bodies = _bodies(ws)
    assert bodies and all("EDITED AFTER QUEUING" not in b for b in bodies)
