"""A throwaway PostgreSQL server on 127.0.0.1, for the tests and the benchmarks.

PostgreSQL refuses to run as root: as root, the server runs as the ``postgres`` user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from outreach.channels.maildir import free_port


def pg_bin() -> Path | None:
    """The folder of pg_ctl and initdb (on PATH, or Debian's /usr/lib/postgresql)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    return candidates[0].parent if candidates else None


class PgServer:
    """A running throwaway server: its admin URL, and a restart (as an operator would)."""

    def __init__(self, bindir: Path, data: Path, prefix: list[str], port: int) -> None:
        self.bindir, self.data, self.prefix, self.port = bindir, data, prefix, port
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    def pg_ctl(self, *args: str) -> None:
        subprocess.run([*self.prefix, str(self.bindir / "pg_ctl"), "-D", str(self.data / "db"), *args],
                       check=True, capture_output=True)  # fmt: skip

    def restart(self, down: float = 0.0) -> None:
        """Stop (fast: sessions are ended with AdminShutdown), stay down ``down``
        seconds, and start again."""
        import time

        self.pg_ctl("-m", "fast", "-w", "stop")
        time.sleep(down)
        self.pg_ctl("-l", str(self.data / "log"), "-w", "-o", self._options(), "start")

    def _options(self) -> str:
        return f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"


@contextmanager
def postgres_server(bindir: Path) -> Iterator[PgServer]:
    """Start a server in a temporary folder; yield it; stop and remove it. fsync is
    off: the data is thrown away."""
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    data = Path(tempfile.mkdtemp(prefix="outreach-pg-"))
    if as_root:
        shutil.chown(data, "postgres")
    server = PgServer(bindir, data, prefix, free_port())
    try:
        subprocess.run(
            [*prefix, str(bindir / "initdb"), "-D", str(data / "db"), "-U", "postgres",
             "--auth=trust", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True,
        )  # fmt: skip
        server.pg_ctl("-l", str(data / "log"), "-w", "-o", server._options(), "start")
        yield server
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(data, ignore_errors=True)


@contextmanager
def temporary_postgres(bindir: Path) -> Iterator[str]:
    """A throwaway server's admin URL (see ``postgres_server``)."""
    with postgres_server(bindir) as server:
        yield server.url
