"""init, config, db upgrade, and the demo through the installed console script."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from outreach.config import load_settings
from outreach.db.engine import HEAD
from tests.conftest import ROOT, Cli


def test_init_creates_an_empty_workspace_and_refuses_twice(tmp_path: Path) -> None:
    target = tmp_path / "cop-2015"
    cli = Cli(tmp_path)
    out = cli("init", str(target)).stdout
    for folder in ("contacts", "templates/_layouts", "schedules"):
        assert (target / folder).is_dir()
    settings = (target / "outreach.toml").read_text()
    assert settings.splitlines()[0].startswith("#") and "OUTREACH_SMTP_URL" in settings
    assert ".outreach/" in (target / ".gitignore").read_text()
    assert "created" in out
    assert load_settings(target, env={}).database_url.endswith("cop-2015/.outreach/outreach.db")
    again = cli("init", str(target), ok=False)
    assert "already has an outreach.toml" in again.output


def test_config_shows_origins_and_never_secrets(workspace: Path) -> None:
    (workspace / "outreach.toml").write_text(
        '[email]\nfrom = "COP <cop@example.org>"\nrate_per_second = 5\n'
    )
    cli = Cli(
        workspace,
        env={
            "OUTREACH_SMTP_URL": "smtp://user:s3cret-pw@relay.example.org:587",
            "OUTREACH_DATABASE_URL": "postgresql+psycopg://app:db-pass@127.0.0.1/x",
        },
    )
    out = cli("config").stdout
    assert "s3cret-pw" not in out and "db-pass" not in out
    assert "smtp://user:***@relay.example.org:587" in out
    assert "env OUTREACH_SMTP_URL" in out and "outreach.toml email.from" in out
    assert "COP <cop@example.org>" in out and "5.0" in out


def test_settings_file_errors_name_the_file_and_fix(workspace: Path) -> None:
    cli = Cli(workspace)
    (workspace / "outreach.toml").write_text(
        '[email]\nfrom = "x@example.org"\nrate_per_secnd = 3\n'
    )
    out = cli("config", ok=False).output
    assert (
        "outreach.toml: unknown setting(s) email.rate_per_secnd" in out and "known settings" in out
    )
    (workspace / "outreach.toml").write_text('[smtp]\nurl = "smtp://u:hunter2@relay:25"\n')
    out = cli("config", ok=False).output
    assert "smtp.url holds a secret" in out and "OUTREACH_SMTP_URL" in out and "hunter2" not in out
    (workspace / "outreach.toml").write_text("[email\n")
    assert "outreach.toml" in cli("config", ok=False).output


def test_relative_sqlite_url_is_inside_the_workspace(workspace: Path) -> None:
    (workspace / "outreach.toml").write_text('database_url = "sqlite:///state/contacts.db"\n')
    settings = load_settings(workspace, env={})
    assert settings.database_url == f"sqlite:///{workspace.resolve()}/state/contacts.db"


def test_db_is_created_on_first_use_with_wal_and_foreign_keys(cli: Cli, workspace: Path) -> None:
    assert cli("contacts", "count").stdout.strip() == "0"
    db = workspace / ".outreach" / "outreach.db"
    assert db.exists()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == HEAD
    assert f"schema is current ({HEAD})" in cli("db", "upgrade").stdout
    fresh = Cli(workspace.parent / "other")
    assert f"upgraded empty -> {HEAD}" in fresh("db", "upgrade").stdout


def test_unreachable_database_is_a_clear_error(workspace: Path) -> None:
    cli = Cli(
        workspace,
        env={"OUTREACH_DATABASE_URL": "postgresql+psycopg://u:topsecret@127.0.0.1:1/none"},
    )
    out = cli("contacts", "count", ok=False).output
    assert "cannot open the database" in out and "topsecret" not in out


def test_every_command_has_help_with_an_example(cli: Cli) -> None:
    commands = [
        ["init"],
        ["config"],
        ["db", "upgrade"],
        ["demo"],
        ["templates", "check"],
        ["preview"],
        ["send"],
        ["run"],
        ["log"],
        ["resume"],
        ["rehearse"],
        ["deliveries", "show"],
        ["deliveries", "retry"],
        ["deliveries", "mark-sent"],
    ] + [
        ["contacts", c]
        for c in (
            "import",
            "list",
            "count",
            "show",
            "export",
            "tag",
            "untag",
            "unsubscribe",
            "delete",
        )
    ]
    for command in commands:
        assert "Example:" in cli(*command, "--help").stdout, command


def test_demo_runs_from_the_console_script(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("outreach")
    env = {**os.environ, "OUTREACH_DATABASE_URL": "", "OUTREACH_WORKSPACE": ""}
    work = tmp_path / "ws"
    work.mkdir()
    for folder in ("contacts", "templates", "schedules"):
        shutil.copytree(ROOT / folder, work / folder)
    result = subprocess.run(
        [str(exe), "-w", str(work), "demo", "--speed", "1w=2s"], capture_output=True, text=True,
        env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "830 contacts imported" in out and "industry in Pacific Island countries" in out
    state = work / ".outreach" / "rehearsal"
    assert (state / "outreach.db").exists()
    emails = len(list((state / "outbox" / "new").iterdir()))
    assert emails > 1000 and f"Email: {emails:,} messages" in out
    assert f"Totals: sent {emails + 4:,} in" in out  # and the X thread's three posts, the release
    assert "[local-3] (reply to local-2)" in out
    assert (state / "newsroom" / "feed.atom").exists()
    assert "failed" not in out and "Not finished" not in out
