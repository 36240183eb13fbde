"""Plan files in ``schedules/``: found, read and turned into domain values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from outreach.domain.campaign import CampaignInfo, campaign_from_plan
from outreach.domain.errors import InputFileError


def plan_files(workspace: Path) -> list[Path]:
    folder = workspace / "schedules"
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]) if folder.is_dir() else []


def read_plan(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise InputFileError(f"{path}: is not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise InputFileError(f"{where}: not valid YAML: {exc.problem}") from None
    if not isinstance(data, dict):
        raise InputFileError(f"{path}: a plan is a YAML mapping (campaign:, launch:, steps: ...)")
    return data


def campaign_for(workspace: Path, path: Path | None = None) -> CampaignInfo:
    """The campaign of ``path``, or of the workspace's only plan."""
    if path is None:
        found = plan_files(workspace)
        if len(found) != 1:
            raise InputFileError(
                f"{'no plan' if not found else f'{len(found)} plans'} in {workspace / 'schedules'}",
                hint="say which with --campaign schedules/NAME.yaml",
            )
        path = found[0]
    return campaign_from_plan(read_plan(path), source=str(path))
