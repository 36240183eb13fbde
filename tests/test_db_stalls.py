"""The sender waits out a database that stalls or goes away, after mail has gone:
a write lock held longer than SQLite's busy timeout, a PostgreSQL restart. The real
``outreach run`` in its own process, a real SMTP server, a real database; at the end
every message went out exactly once, nothing is left ``sending`` and nothing is
labelled a duplicate."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import ROOT, Cli, missing_part, required_pg_bin, wait_until
from tests.smtp_server import Faults, Recorder, SmtpServer
from tools.pgtemp import postgres_server

AUDIENCE = "kind:industry country:FJ,WS,TO,VU,SB,PG,KI,TV,NR,FM,MH,PW,CK,NU"


def _workspace(tmp_path: Path, env: dict[str, str]) -> tuple[Path, Cli]:
    ws = tmp_path / "ws"
    for folder in ("contacts", "templates", "schedules"):
        shutil.copytree(ROOT / folder, ws / folder)
    cli = Cli(ws, env=env)
    cli("contacts", "import", *map(str, sorted((ws / "contacts").glob("*.csv"))))
    return ws, cli


def _queue(cli: Cli) -> None:
    """An ad hoc send, due in a moment: queued now, sent by ``outreach run``."""
    at = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    cli("send", "cop-industry", "--where", AUDIENCE, "--at", at, "--yes")


def _run(ws: Path, env: dict[str, str], url: str) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("outreach")
    full = {**os.environ, "OUTREACH_SECRET_KEY": "k", "OUTREACH_RATE_PER_SECOND": "1000",
            "OUTREACH_SMTP_URL": url, **env}  # fmt: skip
    time.sleep(1.2)  # the send is due
    return subprocess.Popen([str(exe), "-w", str(ws), "run", "--until-idle", "--workers", "1"],
                            env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _check(cli: Cli, recorder: Recorder, process: subprocess.Popen, *, timeout: float) -> str:
    _out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    log = cli("log", "--limit", "5000").stdout
    counts = next(line for line in log.splitlines() if "send-cop-industry" in line)
    sent = len(recorder.accepted)
    assert sent > 50 and f"sent {sent}" in counts and "sending" not in counts, counts
    assert len(set(recorder.message_ids())) == sent  # each message once
    assert "uncertain" not in log
    return err


@pytest.mark.slow
def test_a_write_lock_held_longer_than_the_busy_timeout_is_waited_out(tmp_path: Path) -> None:
    env = {"OUTREACH_SECRET_KEY": "k"}
    ws, cli = _workspace(tmp_path, env)
    _queue(cli)
    recorder = Recorder(Faults(slow=0.05))
    with SmtpServer(recorder) as server:
        process = _run(ws, env | {"OUTREACH_DATABASE_URL": ""}, server.url)
        try:
            assert wait_until(lambda: len(recorder.accepted) >= 10, 30, 0.05), "nothing was sent"
            holder = sqlite3.connect(ws / ".outreach" / "outreach.db", isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")  # as a long import would
            time.sleep(34)  # beyond the sender's 30 s busy timeout
            holder.execute("COMMIT")
            holder.close()
            err = _check(cli, recorder, process, timeout=90)
        finally:
            process.kill()
    assert "database unavailable (database is locked)" in err and "database back after" in err


@pytest.mark.slow
def test_a_postgresql_restart_is_waited_out(tmp_path: Path) -> None:
    with postgres_server(required_pg_bin()) as pg:
        admin = sa.create_engine(pg.url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql("CREATE DATABASE stalls")
        admin.dispose()
        url = sa.make_url(pg.url).set(database="stalls").render_as_string(hide_password=False)
        env = {"OUTREACH_SECRET_KEY": "k", "OUTREACH_DATABASE_URL": url}
        ws, cli = _workspace(tmp_path, env)
        _queue(cli)
        recorder = Recorder(Faults(slow=0.05))
        with SmtpServer(recorder) as server:
            process = _run(ws, env, server.url)
            try:
                assert wait_until(lambda: len(recorder.accepted) >= 10, 30, 0.05), "nothing was sent"
                pg.restart(down=3)  # every session ends with AdminShutdown; then refused
                before = len(recorder.accepted)
                err = _check(cli, recorder, process, timeout=120)
            finally:
                process.kill()
    assert "database unavailable" in err and "database back after" in err
    assert len(recorder.accepted) > before  # it went on after the restart


@pytest.mark.slow
def test_a_full_disk_is_waited_out(tmp_path: Path) -> None:
    """The state folder on a small file system of its own, filled up while sending."""
    state = tmp_path / "ws" / ".outreach"
    state.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(state)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        missing_part(f"mounting a small file system to fill needs root: {mounted.stderr.strip()}")
    try:
        env = {"OUTREACH_SECRET_KEY": "k"}
        ws, cli = _workspace(tmp_path, env)
        _queue(cli)
        recorder = Recorder(Faults(slow=0.1))
        filler = state / "filler"
        with SmtpServer(recorder) as server:
            process = _run(ws, env | {"OUTREACH_DATABASE_URL": ""}, server.url)
            try:
                assert wait_until(lambda: len(recorder.accepted) >= 10, 30, 0.05), "nothing was sent"
                with filler.open("wb") as handle:  # every byte left
                    try:
                        while True:
                            handle.write(b"\0" * 65536)
                            handle.flush()
                    except OSError:
                        pass
                time.sleep(5)
                filler.unlink()
                err = _check(cli, recorder, process, timeout=90)
            finally:
                process.kill()
        assert "database unavailable" in err and "disk is full" in err
    finally:
        subprocess.run(["umount", "-l", str(state)], capture_output=True)


def test_an_unrelated_half_edited_plan_stops_no_sending(tmp_path: Path) -> None:
    env = {"OUTREACH_SECRET_KEY": "k"}
    ws, cli = _workspace(tmp_path, env)
    _queue(cli)
    (ws / "schedules" / "draft.yaml").write_text("campaign: {id: draft, name: [unclosed\nsteps:\n  - id\n")
    time.sleep(1.2)
    cli("run", "--until-idle")
    log = cli("log", "--limit", "1").stdout
    counts = next(line for line in log.splitlines() if "send-cop-industry" in line)
    assert "sent" in counts and "queued" not in counts and "failed" not in counts
