"""outreach init makes a workspace that rehearses as it is; commands refuse a folder
that is no workspace (and create nothing there); links pointing at this machine while
mail goes to a relay are warned about."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from outreach.cli.common import not_a_workspace
from outreach.config import load_settings
from outreach.links import loopback_link_warning
from outreach.workspace import STARTER_PLAN, skeleton_files
from tests.conftest import ROOT, Cli

EXE = str(Path(sys.executable).with_name("outreach"))
NOT_A_WORKSPACE = "is not an outreach workspace"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTREACH_")}
    return {**env, **extra}


# -- 1. init: a starting point that rehearses ---------------------------------------


def test_init_makes_a_workspace_that_checks_and_rehearses(tmp_path: Path) -> None:
    target = tmp_path / "my-launch"
    out = Cli(tmp_path)("init", str(target)).stdout
    assert f"outreach rehearse {STARTER_PLAN}" in out
    for rel, _source in skeleton_files():
        assert (target / rel).is_file(), rel
    plan = yaml.safe_load((target / STARTER_PLAN).read_text())
    assert plan["campaign"]["id"] == "my-launch"
    templates = {p.name for p in (target / "templates").glob("*.j2")}
    assert {"announcement.email.j2", "announcement.fr.email.j2"} <= templates
    assert any(n.endswith(".x.j2") for n in templates)
    assert any(n.endswith(".press.j2") for n in templates)
    assert (target / "templates/_layouts/email.html.j2").is_file()

    cli = Cli(target)
    csvs = sorted(str(p) for p in (target / "contacts").glob("*.csv"))
    imported = cli("contacts", "import", *csvs).stdout
    assert "rejected  │  0" in imported
    assert int(cli("contacts", "count").stdout) == 12
    for domain in ("example.org", "example.com"):
        assert int(cli("contacts", "count", "--where", f"domain:{domain}").stdout) > 0
    assert int(cli("contacts", "count", "--where", "lang:fr").stdout) >= 2
    checked = cli("plan", "check", str(target / STARTER_PLAN)).stdout
    assert "0 error(s)" in checked and "error:" not in checked
    assert "no errors" in cli("templates", "check").stdout

    rehearsal = cli("rehearse", str(target / STARTER_PLAN), "--speed", "1d=1s").stdout
    assert "failed" not in rehearsal and "Not finished" not in rehearsal
    state = target / ".outreach" / "rehearsal"
    emails = len(list((state / "outbox" / "new").iterdir()))
    assert emails >= 12 and f"Email: {emails:,} messages" in rehearsal
    assert (state / "newsroom" / "feed.atom").is_file()
    assert (state / "x" / "posts.jsonl").read_text().count("\n") == 2
    log = cli("--rehearsal", "log", "--event", "sent", "--limit", "200").stdout
    assert log.count(" sent ") >= emails
    assert "claire.dubois@example.org" in log


def test_the_installed_command_inits_and_checks_in_the_new_folder(tmp_path: Path) -> None:
    """The console script, run in the new folder as a person would: the starter files
    come with the installed package."""
    target = tmp_path / "campaign"
    done = subprocess.run([EXE, "init", str(target)], capture_output=True, text=True,
                          env=_env(), timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    csvs = [str(p.relative_to(target)) for p in sorted((target / "contacts").glob("*.csv"))]
    for args in (
        ["contacts", "import", *csvs],
        ["plan", "check", STARTER_PLAN],
        ["templates", "check"],
    ):
        done = subprocess.run([EXE, *args], cwd=target, capture_output=True, text=True,
                              env=_env(), timeout=120)  # fmt: skip
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    assert "0 error(s)" in subprocess.run(
        [EXE, "plan", "check", STARTER_PLAN], cwd=target, capture_output=True, text=True,
        env=_env(), timeout=120,
    ).stdout  # fmt: skip


def test_init_refuses_an_existing_workspace_and_writes_nothing(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    target = tmp_path / "has-contacts"
    (target / "contacts").mkdir(parents=True)
    (target / "contacts" / "mine.csv").write_text("email\nme@example.org\n")
    out = cli("init", str(target), ok=False).output
    assert "is a workspace already" in out and "contacts/" in out
    assert sorted(p.name for p in target.iterdir()) == ["contacts"]
    assert [p.name for p in (target / "contacts").iterdir()] == ["mine.csv"]

    fresh = tmp_path / "fresh"
    cli("init", str(fresh))
    plan = (fresh / STARTER_PLAN).read_text()
    (fresh / STARTER_PLAN).write_text(plan + "# mine\n")
    assert "already has an outreach.toml" in cli("init", str(fresh), ok=False).output
    assert (fresh / STARTER_PLAN).read_text().endswith("# mine\n")


# -- 2. outside a workspace -----------------------------------------------------------


REFUSED = [
    ["contacts", "count"],
    ["contacts", "list"],
    ["contacts", "import", "people.csv"],
    ["contacts", "unsubscribe", "a@example.org"],
    ["templates", "check"],
    ["preview", "announcement"],
    ["plan", "check", "plan.yaml"],
    ["plan", "show", "plan.yaml"],
    ["schedule", "plan.yaml"],
    ["approve", "my-launch", "--by", "Sam"],
    ["status"],
    ["pause", "my-launch"],
    ["resume", "my-launch"],
    ["cancel", "my-launch", "--yes"],
    ["reschedule", "my-launch", "--launch", "2027-03-17 10:00"],
    ["send", "announcement", "--where", "kind:partner", "--yes"],
    ["run", "--until-idle"],
    ["log"],
    ["deliveries", "show", "1"],
    ["rehearse", "plan.yaml"],
    ["demo"],
    ["--rehearsal", "log"],
]


@pytest.mark.parametrize("args", REFUSED, ids=lambda a: " ".join(a))
def test_workspace_commands_refuse_a_folder_that_is_none(tmp_path: Path, args: list[str]) -> None:
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "people.csv").write_text("email\nsomeone@example.org\n")
    (stray / "plan.yaml").write_text("campaign: {id: x, name: X}\n")
    args = [str(stray / a) if a in ("people.csv", "plan.yaml") else a for a in args]
    out = Cli(stray)(*args, ok=False).output
    assert f"{stray} (given with -w) {NOT_A_WORKSPACE}" in out, out
    assert "nothing was created" in out and "outreach init DIR" in out
    assert "OUTREACH_WORKSPACE" in out
    assert sorted(p.name for p in stray.iterdir()) == ["people.csv", "plan.yaml"]

    missing = tmp_path / "missing"
    out = Cli(missing)(*args, ok=False).output
    assert f"{missing} (given with -w) does not exist" in out
    assert not missing.exists()


def test_the_current_folder_is_refused_by_the_installed_command(tmp_path: Path) -> None:
    stray = tmp_path / "downloads"
    stray.mkdir()
    done = subprocess.run([EXE, "contacts", "count"], cwd=stray, capture_output=True,
                          text=True, env=_env(), timeout=60)  # fmt: skip
    assert done.returncode == 1
    assert f"{stray} (the current folder) {NOT_A_WORKSPACE}" in done.stderr
    assert "(with OUTREACH_DATABASE_URL set, 'outreach contacts' runs in any folder)" in done.stderr
    assert list(stray.iterdir()) == []
    done = subprocess.run([EXE, "log"], cwd=stray, capture_output=True, text=True,
                          env=_env(OUTREACH_WORKSPACE=str(stray)), timeout=60)  # fmt: skip
    assert f"{stray} (from OUTREACH_WORKSPACE) {NOT_A_WORKSPACE}" in done.stderr
    assert list(stray.iterdir()) == []


def test_init_config_help_and_version_work_anywhere(tmp_path: Path) -> None:
    stray = tmp_path / "stray"
    stray.mkdir()
    cli = Cli(stray)
    out = cli("config").stdout
    assert re.search(rf"^workspace +{re.escape(str(stray))} ", out, re.M) and NOT_A_WORKSPACE in out  # columns: widest name
    assert "outreach init DIR" in out
    assert "outreach" in cli("--version").stdout
    assert "Example:" in cli("contacts", "count", "--help").stdout
    words = " ".join(cli("--help").stdout.replace("│", " ").split())
    assert "Commands refuse any other folder, except init, config and db" in words
    assert "OUTREACH_DATABASE_URL set, contacts, log, report, deliveries, pause, cancel, users, serve, bounces, run and status" in words
    assert list(stray.iterdir()) == []
    cli("init", str(stray / "new"))
    assert (stray / "new" / "outreach.toml").is_file()


def test_a_workspace_is_a_settings_file_or_a_workspace_folder(tmp_path: Path) -> None:
    only_settings = tmp_path / "settings-only"
    only_settings.mkdir()
    (only_settings / "outreach.toml").write_text("# empty\n")
    assert Cli(only_settings)("contacts", "count").stdout.strip() == "0"
    for folder in ("contacts", "templates", "schedules"):
        ws = tmp_path / folder
        (ws / folder).mkdir(parents=True)
        assert not_a_workspace(load_settings(ws, env={}), "status", False) is None
    # the repository's own sample has no outreach.toml
    assert not_a_workspace(load_settings(ROOT, env={}), "status", False) is None
    # state alone does not make a workspace
    stale = tmp_path / "stale"
    (stale / ".outreach").mkdir(parents=True)
    assert not_a_workspace(load_settings(stale, env={}), "status", False) is not None


def test_an_explicit_database_lets_database_commands_run_anywhere(tmp_path: Path) -> None:
    stray = tmp_path / "stray"
    stray.mkdir()
    db = tmp_path / "shared.db"
    cli = Cli(stray, env={"OUTREACH_DATABASE_URL": f"sqlite:///{db}"})
    people = tmp_path / "people.csv"
    people.write_text("email,kind\nsomeone@example.org,partner\n")
    cli("contacts", "import", str(people))
    assert cli("contacts", "count").stdout.strip() == "1"
    cli("log")
    assert "none is running for this database" in cli("status").stdout  # processes, campaigns: the database's
    assert db.exists() and list(stray.iterdir()) == []
    # commands that read the workspace's templates or plans still need one
    for args in (["templates", "check"], ["--rehearsal", "log"]):
        assert NOT_A_WORKSPACE in cli(*args, ok=False).output, args
    assert list(stray.iterdir()) == []


# -- 3. links on this machine, mail to a relay --------------------------------------


@pytest.mark.parametrize(
    ("public_url", "smtp_url", "warned"),
    [
        ("", "smtp://user:s3cret@relay.example.org:587?starttls=true", True),  # the default
        ("http://localhost:8000", "smtps://mail.example.com:465", True),
        ("http://127.5.6.7/", "smtp://relay.example.org", True),
        ("http://[::1]:8000", "smtp://relay.example.org", True),
        ("http://app.localhost", "smtp://203.0.113.5:25", True),
        ("https://news.example.org", "smtp://relay.example.org", False),
        ("http://10.0.0.5:8000", "smtp://relay.example.org", False),
        ("", "", False),  # no relay: the local Maildir
        ("", "smtp://127.0.0.1:2525", False),
        ("", "smtp://localhost:25", False),
        ("", "smtp://[::1]:25", False),
    ],
)
def test_loopback_link_warning(
    tmp_path: Path, public_url: str, smtp_url: str, warned: bool
) -> None:
    env = {"OUTREACH_PUBLIC_URL": public_url, "OUTREACH_SMTP_URL": smtp_url}
    settings = load_settings(tmp_path, env=env)
    warning = loopback_link_warning(settings)
    if not warned:
        assert warning is None
        return
    assert warning is not None
    assert settings.public_url in warning and "OUTREACH_PUBLIC_URL" in warning
    assert f"through {urlsplit(smtp_url).hostname}:" in warning
    assert "s3cret" not in warning and "user" not in warning


def test_loopback_link_warning_names_where_public_url_came_from(workspace: Path) -> None:
    (workspace / "outreach.toml").write_text('[web]\npublic_url = "http://localhost:8000"\n')
    settings = load_settings(workspace, env={"OUTREACH_SMTP_URL": "smtp://relay.example.org"})
    assert "outreach.toml web.public_url" in (loopback_link_warning(settings) or "")
    settings = load_settings(workspace, env={})
    assert loopback_link_warning(settings) is None
    settings = load_settings(workspace, env={"OUTREACH_SMTP_URL": "smtp://relay.example.org"})
    assert loopback_link_warning(settings.rehearsal()) is None  # a rehearsal never uses the relay
    out = Cli(workspace, env={"OUTREACH_SMTP_URL": "smtp://u:pw@relay.example.org"})(
        "config"
    ).stdout
    assert "warning: unsubscribe and view-online links point at http://localhost:8000" in out
