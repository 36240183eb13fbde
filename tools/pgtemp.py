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


@contextmanager
def temporary_postgres(bindir: Path) -> Iterator[str]:
    """Start a server in a temporary folder; yield its admin URL; stop and remove it.
    fsync is off: the data is thrown away."""
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    data = Path(tempfile.mkdtemp(prefix="outreach-pg-"))
    if as_root:
        shutil.chown(data, "postgres")
    port = free_port()
    try:
        subprocess.run(
            [*prefix, str(bindir / "initdb"), "-D", str(data / "db"), "-U", "postgres",
             "--auth=trust", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-l", str(data / "log"),
             "-w", "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off",
             "start"],
            check=True, capture_output=True,
        )  # fmt: skip
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(data, ignore_errors=True)
