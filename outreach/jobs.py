"""Job functions APScheduler stores by name (``outreach.jobs:fire_step``): importable,
with plain arguments, each building its own services from the workspace's settings."""

from __future__ import annotations

from pathlib import Path


def fire_step(workspace: str, campaign: str, key: str) -> str:
    from outreach.app import build
    from outreach.config import load_settings
    from outreach.db.patience import Patience
    from outreach.firing import fire

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
