"""Job functions APScheduler stores by name (``outreach.jobs:fire_step``): importable,
with plain arguments. In the process that runs the scheduler (``scheduling.start``)
a job uses that process's services, so it fires against the same database and
settings: whichever machine scheduled it (its workspace argument is the path there),
the leader that fires it reads only the database. Elsewhere it builds its own
services from the workspace's settings."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from outreach.app import Services

# workspace -> the services of the scheduler running for it in this process
_running: dict[str, Services] = {}


def serve(services: Services) -> None:
    """Jobs of this workspace fire with ``services`` (until ``stop_serving``)."""
    _running[str(services.settings.workspace)] = services


def stop_serving(services: Services) -> None:
    _running.pop(str(services.settings.workspace), None)


def fire_step(workspace: str, campaign: str, key: str) -> str:
    from outreach.db.patience import Patience
    from outreach.firing import fire

    services = _running.get(workspace)
    if services is None and len(_running) == 1:  # the one scheduler of this process
        services = next(iter(_running.values()))
    if services is not None:
        return services.outbox.patience.run(f"firing {key}", lambda: fire(services, campaign, key))
    from outreach.app import build
    from outreach.config import load_settings

    services = build(load_settings(Path(workspace)))
    waiting = Patience(limit=None, notify=_tell)  # the runner waits out a stalled database
    services.outbox.patience = services.posts.patience = waiting
    try:
        return waiting.run(f"firing {key}", lambda: fire(services, campaign, key))
    finally:
        services.close()


def _tell(message: str) -> None:
    import sys

    print(f"outreach: {message}", file=sys.stderr, flush=True)
