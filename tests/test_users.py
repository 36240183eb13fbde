"""``outreach users``, ``outreach serve`` and what they keep: argon2 hashes only, a
password asked twice on a real terminal, sessions that end with a new password, who
scheduled a campaign, the consent history, and the schema of migration 0006."""

from __future__ import annotations

import getpass
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from outreach.channels.maildir import free_port
from outreach.db.models import metadata
from outreach.db.users import SqlUsers
from tests.conftest import Cli, wait_until
from tests.test_web import PLAN, make_workspace

OUTREACH = Path(sys.executable).with_name("outreach")


def test_add_list_passwd_remove(tmp_path: Path) -> None:
    services, cli = make_workspace(tmp_path)
    users = SqlUsers(services.engine)
    assert "added sarah (admin)" in cli("users", "add", "Sarah", "--role", "admin", "--password-stdin",
                                        input="a long passphrase\n").output  # fmt: skip
    assert users.authenticate("sarah", "a long passphrase") is not None
    made = cli("users", "add", "otto", "--role", "operator", "--generate")
    password = made.stdout.strip().splitlines()[-1]
    assert len(password) >= 20 and users.authenticate("otto", password) is not None
    listing = cli("users", "list").stdout
    assert re.search(r"otto\s.*operator", listing) and re.search(r"sarah\s.*admin", listing)
    token = users.open_session(users.require("sarah"), 3600)
    cli("users", "passwd", "sarah", "--password-stdin", input="another passphrase\n")
    assert users.session_user(token) is None  # a new password ends every session
    assert users.authenticate("sarah", "a long passphrase") is None
    assert users.authenticate("sarah", "another passphrase") is not None
    cli("users", "remove", "otto", input="y\n")
    assert users.get("otto") is None and users.authenticate("otto", password) is None
    services.close()


def test_what_is_refused_changes_nothing(tmp_path: Path) -> None:
    services, cli = make_workspace(tmp_path)
    cli("users", "add", "sarah", "--role", "viewer", "--password-stdin", input="a long passphrase\n")
    short = cli("users", "add", "tom", "--role", "viewer", "--password-stdin", input="short\n", ok=False)
    assert "at least 10 characters" in short.output
    twice = cli("users", "add", "SARAH", "--role", "admin", "--password-stdin", input="a long passphrase\n", ok=False)
    assert "there is a user sarah already" in twice.output
    assert "invalid value" in cli("users", "add", "tom", "--role", "root", "--generate", ok=False).output.lower()
    assert "not a user name" in cli("users", "add", "tom smith", "--role", "viewer", "--generate", ok=False).output
    unknown = cli("users", "passwd", "nobody", "--generate", ok=False).output
    assert "no user 'nobody' (users: sarah)" in unknown
    assert "no terminal" in cli("users", "add", "tom", "--role", "viewer", ok=False).output
    assert [(u.name, u.role) for u in SqlUsers(services.engine).all()] == [("sarah", "viewer")]
    services.close()


def test_only_an_argon2_hash_is_kept(tmp_path: Path) -> None:
    services, cli = make_workspace(tmp_path)
    cli("users", "add", "sarah", "--role", "admin", "--password-stdin", input="very secret words\n")
    services.close()
    database = Path(services.settings.database_url.removeprefix("sqlite:///"))
    stored = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    assert b"very secret words" not in stored and b"$argon2id$" in stored


def test_the_password_is_asked_twice_on_a_terminal(tmp_path: Path) -> None:
    services, cli = make_workspace(tmp_path)
    pid, fd = pty.fork()
    if pid == 0:  # the child: outreach on a real terminal
        os.execv(str(OUTREACH), [str(OUTREACH), "-w", str(cli.workspace), "users", "add", "tam", "--role", "viewer"])
    said = transcript = b""

    def answer(prompt: bytes, line: bytes) -> None:
        nonlocal said, transcript
        deadline = time.monotonic() + 30
        while prompt not in said and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.5)[0]:
                read = os.read(fd, 1024)
                said, transcript = said + read, transcript + read
        assert prompt in said, said
        said = said.split(prompt, 1)[1]
        os.write(fd, line + b"\n")

    # the space after each prompt is getpass's, written once echo is off
    answer(b"Password: ", b"first try pass")
    answer(b"Repeat for confirmation: ", b"not the same one")
    answer(b"Password: ", b"typed well twice")  # asked again after a mismatch
    answer(b"Repeat for confirmation: ", b"typed well twice")
    while select.select([fd], [], [], 2)[0]:
        try:
            transcript += os.read(fd, 1024)
        except OSError:  # the child is gone
            break
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert b"added tam (viewer)" in transcript
    assert b"typed well" not in transcript and b"first try" not in transcript  # hidden as typed
    assert SqlUsers(services.engine).authenticate("tam", "typed well twice") is not None
    services.close()


def test_schedule_records_who_scheduled(tmp_path: Path) -> None:
    services, cli = make_workspace(tmp_path)
    cli("schedule", PLAN)
    assert services.outbox.campaign("cop-2014")["scheduled_by"] == getpass.getuser()
    cli("reschedule", "cop-2014", "--launch", "2014-09-08 10:00", "--by", "Rosa")
    assert services.outbox.campaign("cop-2014")["scheduled_by"] == "Rosa"  # what is to be approved is hers
    services.close()


def test_status_changes_are_kept_in_the_consent_history(tmp_path: Path) -> None:
    from outreach.db.consent import SqlConsent
    from outreach.domain.audience import parse

    services, cli = make_workspace(tmp_path)
    ana = services.contacts.get("ana.tuilagi@example.com")
    cli("contacts", "unsubscribe", "ana.tuilagi@example.com")
    cli("contacts", "unsubscribe", "ana.tuilagi@example.com")  # again: no change, no record
    services.contacts.set_status(parse("email:ben.okafor@example.com"), "bounced")
    cli("contacts", "reactivate", "ben.okafor@example.com", "--reason", "the relay refused all", "--by", "Ida")
    consent = SqlConsent(services.engine)
    assert [(h["status_from"], h["status_to"], h["via"]) for h in consent.history(ana.id)] == [
        ("active", "unsubscribed", "cli")]
    ben = services.contacts.get("ben.okafor@example.com")
    assert [(h["status_to"], h["via"], h["actor"], h["reason"]) for h in consent.history(ben.id)] == [
        ("bounced", "cli", None, None), ("active", "reactivate", "Ida", "the relay refused all")]
    assert consent.unsubscribe(ana.id, "cop-2014", "page").changed is False  # unsubscribed already
    services.close()


def test_migration_0006_makes_what_the_models_declare(database_url: str) -> None:
    from outreach.db.engine import open_database

    engine = open_database(database_url)
    mine = {"users", "web_sessions", "consent_events"}
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    ours = [d for d in diff if repr(d).find("scheduled_by") >= 0 or any(f"'{t}'" in repr(d) for t in mine)]
    assert not ours, ours


def test_serve_serves_and_keeps_link_tokens_out_of_its_log(tmp_path: Path) -> None:
    services, cli = make_workspace(tmp_path)
    assert "not serving (--check)" in cli("serve", "--check").output
    services.close()
    port = free_port()
    env = {**os.environ, "OUTREACH_SECRET_KEY": "test-key", "OUTREACH_DATABASE_URL": ""}
    server = subprocess.Popen([str(OUTREACH), "-w", str(cli.workspace), "serve", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{url}/healthz").status_code == 200
            except httpx.TransportError:
                return False

        assert wait_until(up, 30)
        token = "SecretToken0123456789abc"
        assert httpx.get(f"{url}/u/cop-2014/1/{token}").status_code == 404
        assert "server" not in httpx.get(f"{url}/healthz").headers
    finally:
        server.send_signal(signal.SIGINT)
        output = server.communicate(timeout=30)[0].decode()
    assert "/u/cop-2014/1/***" in output and token not in output
    assert "nobody can sign in yet" in output


@pytest.mark.parametrize("args", [["users", "add", "--help"], ["serve", "--help"]])
def test_help_has_an_example(args: list[str], tmp_path: Path) -> None:
    assert "Example: outreach" in Cli(tmp_path)(*args).output
