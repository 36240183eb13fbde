"""Job functions APScheduler stores by name (``outreach.jobs:fire_step``): importable,
with plain arguments, each building its own services from the workspace's settings."""

from __future__ import annotations

from pathlib import Path


def fire_step(workspace: str, campaign: str, key: str) -> str:
    from outreach.app import build
    from outreach.config import load_settings
    from outreach.scheduling import fire

    services = build(load_settings(Path(workspace)))
    try:
        return fire(services, campaign, key)
    finally:
        services.close()
