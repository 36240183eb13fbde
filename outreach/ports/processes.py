"""The processes of a deployment (schedulers and senders on any machine, around one
database): each registers, beats, and goes; one of them holds the scheduler's
leadership."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

ROLES = ("scheduler", "sender", "all")


@dataclass(frozen=True)
class ProcessInfo:
    """One row of the processes table, as its process last said."""

    id: str  # host:pid:start (identity.process_id), the holder of its leases
    host: str
    pid: int
    role: str  # scheduler | sender | all
    started_at: datetime
    heartbeat_at: datetime
    leader: bool = False  # it held the scheduler's leadership at its last beat
    # what it holds and does: "sending" (deliveries leased to it), "sent" (since its
    # start), "every" (its heartbeat in seconds), "once" (a run until idle), ...
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def every(self) -> float:
        """Its heartbeat interval, as it declared it."""
        return float(self.state.get("every") or 5.0)

    def age(self, now: datetime) -> float:
        """Seconds since its last heartbeat."""
        return max(0.0, (now - self.heartbeat_at).total_seconds())

    def live(self, now: datetime) -> bool:
        """It beat within three of its own heartbeat intervals."""
        return self.age(now) <= 3 * self.every


class Lead(Protocol):
    """The scheduler's leadership, while this process holds it (an advisory lock on a
    connection of its own on PostgreSQL, a lock file beside a SQLite database): it
    ends with the process, whatever kills it."""

    def holds(self) -> bool: ...  # still ours (the connection and its lock alive)
    def release(self) -> None: ...


class Processes(Protocol):
    """The processes table and the leadership lock."""

    def register(self, process: ProcessInfo) -> None: ...
    def beat(self, process_id: str, *, leader: bool, state: dict[str, Any]) -> bool: ...
    def remove(self, process_id: str) -> None: ...
    def prune(self, before: datetime) -> int: ...
    def listed(self) -> list[ProcessInfo]: ...
    def lead(self) -> Lead | None: ...
