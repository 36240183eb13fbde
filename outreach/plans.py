"""Plan files in ``schedules/``: found, read and turned into domain values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from outreach.domain.campaign import CampaignInfo, campaign_from_plan
from outreach.domain.errors import InputFileError
from outreach.domain.plan import Plan, load_plan


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


def read_plan_lines(path: Path) -> tuple[dict[str, Any], Any]:
    """The plan's data and a function giving the line of a field (a pydantic loc)."""
    data = read_plan(path)
    root = yaml.compose(path.read_text("utf-8"))

    def line_of(loc: tuple[Any, ...]) -> int | None:
        node, line = root, None
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if key.value == part:
                        line, node = key.start_mark.line + 1, value
                        break
                else:
                    return line or (node.start_mark.line + 1)
            elif (
                isinstance(node, yaml.SequenceNode)
                and isinstance(part, int)
                and part < len(node.value)
            ):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return line
        return line

    return data, line_of


def load(path: Path) -> Plan:
    data, line_of = read_plan_lines(path)
    return load_plan(data, source=str(path), line_of=line_of)


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
