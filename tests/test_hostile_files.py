"""Hostile or mistaken files, through the real CLI: templates that would run forever
or take the memory, plans nested too deep or expanding through aliases, links out of
the workspace, passwords holding URL characters, and the state that holds personal
data, readable by its owner only."""

from __future__ import annotations

import os
import resource
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import responses

from outreach.channels.x import XApi, XCredentials
from outreach.db.engine import open_database
from tests.conftest import Cli

OUTREACH = Path(sys.executable).with_name("outreach")
CONTACT = "james.taylor@ict.fiji.example.org"  # in the sample's contacts/governments.csv
MEMORY = 1024 * 1024 * 1024  # the address space a command may use in these tests


def run(workspace: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """The installed command in its own process, with 1 GiB of address space: a
    command that hangs fails the test at ``timeout``, one that would take gigabytes
    gets a MemoryError instead of the machine's memory."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))

    env = {**os.environ, "OUTREACH_DATABASE_URL": "", "OUTREACH_SMTP_URL": "", "OUTREACH_WORKSPACE": ""}
    return subprocess.run([str(OUTREACH), "-w", str(workspace), *args], capture_output=True,
                          text=True, env=env, timeout=timeout, preexec_fn=limit)  # fmt: skip


def email_template(text: str) -> str:
    return "{% block subject %}Hello{% endblock %}\n{% block text %}\n" + text + "\n{% endblock %}\n"


# -- 1. rendering has limits ------------------------------------------------------------

HOSTILE = {
    # two loops of 100,000: ten billion steps
    "loops": "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
    # a gigabyte at once
    "repeat": "{{ 'x' * 10**9 }}",
    "width": "{{ contact.email | center(1000000000) }}",
    "format": "{{ '{:>999999999}'.format(contact.email) }}",
    # a macro that calls itself twice: 2**40 calls, never deeper than 40
    "macro": "{% macro m(n) %}{% if n %}{{ m(n - 1) }}{{ m(n - 1) }}{% endif %}{% endmacro %}{{ m(40) }}",
    # doubling a text sixty times
    "doubling": "{% set ns = namespace(t='x') %}{% for i in range(60) %}{% set ns.t = ns.t ~ ns.t %}{% endfor %}{{ ns.t }}",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_template_that_would_hang_or_take_the_memory_fails_with_its_file_and_line(
    sample_ws: Cli, name: str
) -> None:
    ws = sample_ws.workspace
    (ws / "templates" / f"{name}.email.j2").write_text(email_template(HOSTILE[name]))
    started = time.monotonic()
    result = run(ws, "templates", "check", name)
    assert time.monotonic() - started < 30  # all 830 contacts: the first render stops the rest
    assert result.returncode == 1, result.stderr
    assert f"error: templates/{name}.email.j2:3: " in result.stdout, result.stdout + result.stderr
    assert "the limit for one message" in result.stdout
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stdout


def test_preview_of_a_hostile_template_stops_within_the_time_limit(sample_ws: Cli) -> None:
    ws = sample_ws.workspace
    (ws / "templates" / "loops.email.j2").write_text(email_template(HOSTILE["loops"]))
    (ws / "templates" / "cop-launch.x.j2").write_text("Launch!\n{{ 'x' * 10**9 }}\n")
    result = run(ws, "preview", "loops", "--contact", CONTACT)
    assert result.returncode == 1 and "loops.email.j2:3: " in result.stderr, result.stderr
    assert "limit for one message" in result.stderr
    result = run(ws, "preview", "cop-launch")
    assert result.returncode == 1 and "cop-launch.x.j2:2: " in result.stderr, result.stderr
    assert "longer than 1,048,576 characters" in result.stderr


def test_templates_within_the_limits_render_as_before(sample_ws: Cli) -> None:
    (sample_ws.workspace / "templates" / "fine.email.j2").write_text(email_template(
        "{% for i in range(3) %}{{ i }}{% endfor %} {{ 'ab' ~ 'c' }} {{ 3 * '-' }} {{ '%03d' % 7 }} "
        "{{ contact.tags | join(', ') }} {{ 'x' | center(5) }}|{{ '{:>4}'.format(1) }}"
    ))  # fmt: skip
    out = sample_ws("preview", "fine", "--contact", CONTACT).stdout
    assert "012 abc --- 007 cop-2014, pacific-rollout   x  |   1" in out


# -- 2. plans nested too deep -------------------------------------------------------------


def test_a_plan_nested_too_deep_is_an_error_naming_the_file(sample_ws: Cli) -> None:
    plan = sample_ws.workspace / "schedules" / "deep.yaml"
    plan.write_text("campaign:\n  id: " + "[" * 10_000 + "]" * 10_000 + "\n")
    out = sample_ws("plan", "check", str(plan), ok=False).output
    assert "deep.yaml:2: not valid YAML: nested deeper than 100 levels" in out
    assert "RecursionError" not in out


def test_a_plan_whose_aliases_expand_to_millions_of_values_is_refused(sample_ws: Cli) -> None:
    plan = sample_ws.workspace / "schedules" / "cop-guidelines-2014.yaml"
    bomb = "_a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"_a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)
    )
    plan.write_text(bomb + plan.read_text().replace("links:\n", "links:\n  bomb: *a8\n"))
    result = run(sample_ws.workspace, "templates", "check", "cop-launch")
    assert result.returncode == 1
    assert "cop-guidelines-2014.yaml:6: not valid YAML: expands to more than 100,000 values" in (
        result.stdout + result.stderr
    ), result.stdout + result.stderr


# -- 3. links out of the workspace ------------------------------------------------------


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file outside the workspace that would render as a template."""
    path = tmp_path / "private" / "secret.j2"
    path.parent.mkdir()
    path.write_text(email_template("TOP-SECRET-LINE"))
    return path


def test_a_template_linked_outside_the_workspace_is_refused(sample_ws: Cli, secret: Path) -> None:
    templates = sample_ws.workspace / "templates"
    (templates / "leak.email.j2").symlink_to(secret)
    out = sample_ws("templates", "check", "leak", ok=False).stdout
    assert f"error: templates/leak.email.j2: a link to {secret}, outside the workspace" in out
    out = sample_ws("preview", "leak", "--contact", CONTACT, ok=False).output
    assert f"leak.email.j2: a link to {secret}, outside the workspace" in out
    assert "TOP-SECRET" not in out
    # a partial reached by {% include %} is refused the same way
    (templates / "_partials" / "signature.j2").symlink_to(secret)
    (templates / "signed.email.j2").write_text(email_template("{% include '_partials/signature.j2' %}"))
    out = sample_ws("templates", "check", "signed", ok=False).stdout
    assert f"templates/_partials/signature.j2: a link to {secret}, outside the workspace" in out
    assert "TOP-SECRET" not in out


def test_a_link_inside_the_workspace_stays_allowed(sample_ws: Cli) -> None:
    (sample_ws.workspace / "templates" / "alias.email.j2").symlink_to("cop-industry.email.j2")
    assert "no errors" in sample_ws("templates", "check", "alias", "--sample", "5").stdout


def test_an_image_linked_outside_the_workspace_is_refused_and_never_uploaded(
    sample_ws: Cli, secret: Path
) -> None:
    ws = sample_ws.workspace
    (ws / "media").mkdir()
    (ws / "media" / "cover.png").symlink_to(secret)
    launch = ws / "templates" / "cop-launch.x.j2"
    launch.write_text(launch.read_text().replace("#IGF2014\n", '#IGF2014\nimage: cover.png "The cover"\n'))
    refused = f"media/cover.png is a link to {secret}, outside the workspace"
    assert refused in sample_ws("templates", "check", "cop-launch", ok=False).stdout
    assert refused in sample_ws("preview", "cop-launch", ok=False).output
    # a link made after the step was prepared: the upload refuses it, nothing is sent
    x = XApi(XCredentials("key", "key-secret", "token", "token-secret"), ws / "media")
    with responses.RequestsMock() as mock:
        result = x.post("Launch!", reply_to=None, images=[("cover.png", "The cover")])
        assert not mock.calls
    assert not result.ok and result.kind == "rejected" and refused in result.text


# -- 4. secrets and the state's permissions -------------------------------------------------

# a password as people paste it: with @, /, # and : in it
PASSWORD = "Zq9@Kx7/Wm3#Tp5:Rr4"
PIECES = ("Zq9", "Kx7", "Wm3", "Tp5", "Rr4")


def test_config_masks_passwords_whatever_characters_they_hold(workspace: Path) -> None:
    cli = Cli(workspace, env={
        "OUTREACH_SMTP_URL": f"smtp://user:{PASSWORD}@relay.example.org:587",
        "OUTREACH_DATABASE_URL": f"postgresql+psycopg://app:{PASSWORD}@db.example.org/outreach",
        "OUTREACH_PUBLIC_URL": "https://cop.example.org",
    })  # fmt: skip
    out = cli("config").stdout
    assert "smtp://user:***@relay.example.org:587" in out
    assert "postgresql+psycopg://app:***@db.example.org/outreach" in out
    assert not [p for p in PIECES if p.lower() in out.lower()], out


def test_a_database_error_never_shows_part_of_the_password(workspace: Path) -> None:
    cli = Cli(workspace, env={"OUTREACH_DATABASE_URL": f"postgresql+psycopg://app:{PASSWORD}@127.0.0.1:1/x"})
    out = cli("contacts", "count", ok=False).output
    assert "cannot open the database postgresql+psycopg://app:***@127.0.0.1:1/x" in out, out
    assert not [p for p in PIECES if p.lower() in out.lower()], out


@pytest.fixture
def umask_022():  # type: ignore[no-untyped-def]
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_state_folder_and_database_are_readable_by_their_owner_only(
    cli: Cli, workspace: Path, umask_022: None
) -> None:
    cli("contacts", "count")
    state, db = workspace / ".outreach", workspace / ".outreach" / "outreach.db"
    assert (mode(state), mode(db)) == (0o700, 0o600)
    engine = open_database(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:  # a connection in WAL mode has its -wal and -shm
            conn.exec_driver_sql("SELECT count(*) FROM contacts").fetchall()
            sides = [Path(f"{db}-wal"), Path(f"{db}-shm")]
            assert all(p.exists() for p in sides)
            assert [mode(p) for p in sides] == [0o600, 0o600]
    finally:
        engine.dispose()
    # the rehearsal's own state, made later inside it, too
    rehearsal = state / "rehearsal"
    shutil.rmtree(rehearsal, ignore_errors=True)
    open_database(f"sqlite:///{rehearsal / 'outreach.db'}").dispose()
    assert (mode(rehearsal), mode(rehearsal / "outreach.db")) == (0o700, 0o600)
