"""Shared fixtures: real workspaces on disk, the real CLI, a real PostgreSQL server."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from typer.testing import CliRunner

from outreach.cli import app
from tools.pgtemp import pg_bin, temporary_postgres

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


class Cli:
    """Runs the real command tree in-process against one workspace."""

    def __init__(self, workspace: Path, env: dict[str, str] | None = None) -> None:
        self.workspace = workspace
        self.env = env or {}
        self.runner = CliRunner()

    def __call__(self, *args: str, ok: bool = True, input: str | None = None):  # type: ignore[no-untyped-def]
        env = {"OUTREACH_DATABASE_URL": "", "OUTREACH_SMTP_URL": "", **self.env}
        result = self.runner.invoke(app, ["-w", str(self.workspace), *args], env=env, input=input)
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        if ok:
            assert result.exit_code == 0, result.output
        else:
            assert result.exit_code != 0, result.output
        return result


def wait_until(condition, timeout: float, interval: float = 0.1) -> bool:  # type: ignore[no-untyped-def]
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; whether it held."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "contacts").mkdir(parents=True)
    return ws


@pytest.fixture
def cli(workspace: Path) -> Cli:
    return Cli(workspace)


@pytest.fixture
def sample_ws(tmp_path: Path) -> Cli:
    """A copy of the sample workspace with its contacts imported."""
    ws = tmp_path / "ws"
    for folder in ("contacts", "templates", "schedules"):
        shutil.copytree(ROOT / folder, ws / folder)
    cli = Cli(ws)
    cli("contacts", "import", *map(str, sorted((ws / "contacts").glob("*.csv"))))
    return cli


def proc_stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state first, then the
    parent's pid); empty when the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def is_alive(pid: int) -> bool:
    """Running, not gone and not a zombie."""
    fields = proc_stat(pid)
    return bool(fields) and fields[0] != "Z"


def write_csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


# -- PostgreSQL ------------------------------------------------------------------


def missing_part(reason: str) -> NoReturn:
    """A real part a test needs is not on this machine: under CI (``.ci/run`` installs
    every part) that is a failure; elsewhere the test skips, saying what to install."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide it: {reason}")
    pytest.skip(reason)


def required_pg_bin() -> Path:
    """The PostgreSQL binaries' folder; CI must have them, elsewhere the test skips."""
    bindir = pg_bin()
    if bindir is None:
        missing_part("PostgreSQL binaries (pg_ctl, initdb) are not installed here")
    return bindir


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL on 127.0.0.1 for the whole test session (or the one in
    OUTREACH_TEST_POSTGRES_URL). Yields an admin URL."""
    if os.environ.get("OUTREACH_TEST_POSTGRES_URL"):
        yield os.environ["OUTREACH_TEST_POSTGRES_URL"]
        return
    with temporary_postgres(required_pg_bin()) as url:
        yield url


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the session's PostgreSQL server."""
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    url = sa.make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test against a real SQLite file and a real PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")
