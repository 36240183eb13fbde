"""Waiting out a database that stalls or goes away.

A sender must not die on what it can wait out: a write lock held by a long import,
a full disk, a PostgreSQL restart. Every method of the outbox and post
repositories runs under ``Patience``: a transient error (lock, busy, disk full,
connection lost or refused, server shutting down) is retried with backoff and a
message, for ``limit`` seconds (None: for as long as it takes, which is what the
long-running sender asks for); anything else is raised at once. Each method is one
or more transactions that are complete and safe to repeat.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

from outreach.domain.errors import DatabaseError

_TRANSIENT = (
    "database is locked", "database table is locked", "busy", "disk is full", "disk i/o error",
    "unable to open database", "server closed the connection", "terminating connection",
    "connection refused", "could not connect", "connection is closed", "connection timed out",
    "the database system is", "no space left", "adminshutdown", "ssl connection has been closed",
    "consuming input failed", "connection to server", "cannot execute", "read-only transaction",
)  # fmt: skip


def transient(exc: BaseException) -> bool:
    """Whether waiting may mend it: the database is busy, full or away, not wrong."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError | DBAPIError):
        return False
    text = f"{type(exc.orig).__name__} {exc.orig}".casefold()
    return any(marker in text for marker in _TRANSIENT)


@dataclass
class Patience:
    limit: float | None = 60.0  # seconds to wait it out; None: as long as it takes
    first: float = 0.5  # the first pause, doubling up to ``cap``
    cap: float = 30.0
    notify: Callable[[str], None] | None = None  # told of each wait, and of the recovery

    def run(self, what: str, call: Callable[[], Any]) -> Any:
        started = time.monotonic()
        pause = self.first
        waited = False
        while True:
            try:
                result = call()
            except Exception as exc:
                if not transient(exc):
                    raise
                spent = time.monotonic() - started
                reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0][:200]
                if self.limit is not None and spent + pause > self.limit:
                    raise DatabaseError(
                        f"the database did not answer for {spent:.0f} s ({what}: {reason})",
                        hint="see that the database is up and has disk space, then run the command again",
                    ) from None
                if self.notify:
                    self.notify(f"database unavailable ({reason}); {what} again in {pause:.1f} s")
                waited = True
                time.sleep(pause)
                pause = min(self.cap, pause * 2)
                continue
            if waited and self.notify:
                self.notify(f"database back after {time.monotonic() - started:.0f} s; {what} done")
            return result


T = TypeVar("T")
_inside = threading.local()  # per thread: a repository call already waiting


def patient(cls: type[T]) -> type[T]:
    """Runs every public method of a repository under its ``patience``."""
    fields = getattr(cls, "__dataclass_fields__", {})
    for name in dir(cls):  # its own methods and those it inherits
        method = inspect.getattr_static(cls, name)
        if name.startswith("_") or name in fields or not inspect.isfunction(method):
            continue

        def wrap(method: Callable[..., Any], name: str = name) -> Callable[..., Any]:
            @functools.wraps(method)
            def waiting(self: Any, *args: Any, **kwargs: Any) -> Any:
                if getattr(_inside, "active", False):  # an inner call: the outer one waits
                    return method(self, *args, **kwargs)
                _inside.active = True
                try:
                    return self.patience.run(name, lambda: method(self, *args, **kwargs))
                finally:
                    _inside.active = False

            return waiting

        setattr(cls, name, wrap(method))
    return cls
