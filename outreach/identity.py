"""Who a process is, for the others around the same database: ``host:pid:start``.
A claimed delivery names its holder with it; the processes table lists it."""

from __future__ import annotations

import os
import socket
import time

# How long a claim lasts unless its holder renews it (by default; a running process
# takes OUTREACH_LEASE_SECONDS). A sender renews at a third of it and looks for
# expired ones at least once a lease; a sender that died leaves its rows to whoever
# finds the lease expired.
LEASE_SECONDS = 30.0
_lease = [LEASE_SECONDS]


def lease_seconds() -> float:
    """How long a claim made by this process lasts unless renewed."""
    return _lease[0]


def set_lease_seconds(seconds: float) -> None:
    """This process's lease (``outreach run`` sets it from its timing settings)."""
    _lease[0] = seconds


def process_id() -> str:
    """This process's id: its host, pid and start second (a pid reused on a reboot,
    or in a forked worker, is another process)."""
    host = socket.gethostname()[:80]
    return f"{host}:{os.getpid()}:{_started_for(os.getpid())}"


_starts: dict[int, int] = {}


def _started_for(pid: int) -> int:
    """The start second of this pid (a forked child gets its own the first time)."""
    if pid not in _starts:
        _starts[pid] = int(time.time())
    return _starts[pid]
