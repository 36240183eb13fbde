"""Plan files in ``schedules/``: found, read and turned into domain values."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from outreach.domain import channels, safe_yaml
from outreach.domain.campaign import CampaignInfo, campaign_from_plan
from outreach.domain.errors import InputFileError, OutreachError
from outreach.domain.plan import Plan, load_plan


def plan_files(workspace: Path) -> list[Path]:
    folder = workspace / "schedules"
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]) if folder.is_dir() else []


def _read_text(path: Path) -> str:
    try:
        return path.read_text("utf-8")
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise InputFileError(f"{path}: is not UTF-8 text") from None


def _yaml_error(path: Path, exc: yaml.MarkedYAMLError) -> InputFileError:
    mark = exc.problem_mark
    where = f"{path}:{mark.line + 1}" if mark else str(path)
    hint = None
    if exc.problem and "nested deeper" in exc.problem:
        hint = "a plan needs a few levels (steps: - audience: ...); look for unclosed [ or {"
    return InputFileError(f"{where}: not valid YAML: {exc.problem}", hint=hint)


def read_plan(path: Path) -> dict[str, Any]:
    """The plan's YAML as data (nested at most ``safe_yaml.YAML_MAX_DEPTH`` levels)."""
    text = _read_text(path)
    try:
        data = safe_yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(path, exc) from None
    if not isinstance(data, dict):
        raise InputFileError(f"{path}: a plan is a YAML mapping (campaign:, launch:, steps: ...)")
    return data


def read_plan_lines(path: Path) -> tuple[dict[str, Any], Any]:
    """The plan's data and a function giving the line of a field (a pydantic loc)."""
    data = read_plan(path)
    try:
        root = safe_yaml.compose(_read_text(path))
    except yaml.MarkedYAMLError as exc:  # the file changed since it was read
        raise _yaml_error(path, exc) from None

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


@dataclass(frozen=True)
class PlanEntry:
    """One file of ``schedules/``: its campaign, or why it cannot be read."""

    path: Path
    data: dict[str, Any] | None = None  # the YAML, when it parses
    campaign: CampaignInfo | None = None
    error: OutreachError | None = None

    @property
    def campaign_id(self) -> str | None:
        """The campaign's id, even from a plan whose other fields are wrong."""
        if self.campaign is not None:
            return self.campaign.id
        head = (self.data or {}).get("campaign")
        return str(head["id"]) if isinstance(head, dict) and head.get("id") else None

    def uses(self, template: str) -> bool:
        """Whether a step of this plan uses ``template`` (``NAME`` or ``NAME.KIND``)."""
        name, kind = _template_name(template)
        steps = (self.data or {}).get("steps")
        return isinstance(steps, list) and any(
            isinstance(s, dict) and str(s.get("template")) == name
            and (kind is None or s.get("channel") == kind)
            for s in steps
        )  # fmt: skip

    def info(self) -> CampaignInfo:
        """The campaign, or the error that kept the plan from being read."""
        if self.campaign is None:
            assert self.error is not None
            raise self.error
        return self.campaign

    def describe(self) -> str:
        what = f"campaign {self.campaign_id}" if self.campaign_id else "unreadable"
        return f"schedules/{self.path.name} ({what})"


def _template_name(template: str) -> tuple[str, str | None]:
    if "." in template and template.rsplit(".", 1)[1] in channels.template_kinds():
        name, kind = template.rsplit(".", 1)
        return name, kind
    return template, None


def read_entry(path: Path) -> PlanEntry:
    """``path`` read as far as it can be: an error is kept, not raised."""
    try:
        data = read_plan(path)
    except OutreachError as exc:
        return PlanEntry(path, error=exc)
    try:
        return PlanEntry(path, data, campaign_from_plan(data, source=str(path)))
    except OutreachError as exc:
        return PlanEntry(path, data, error=exc)


def scan_plans(workspace: Path) -> list[PlanEntry]:
    """Every plan of the workspace, readable or not."""
    return [read_entry(path) for path in plan_files(workspace)]


def _listing(entries: list[PlanEntry]) -> str:
    return ", ".join(e.describe() for e in entries) or "none"


def _by_choice(workspace: Path, choice: str) -> PlanEntry:
    """``--campaign``: a plan file (as given, inside the workspace or in schedules/),
    a campaign id, or a plan's name without ``.yaml``."""
    for path in (Path(choice), workspace / choice, workspace / "schedules" / choice):
        if path.is_file():
            return read_entry(path)
    if choice.endswith((".yaml", ".yml")) or "/" in choice or "\\" in choice:
        raise InputFileError(f"{choice}: no such plan file")
    entries = scan_plans(workspace)
    found = [e for e in entries if e.campaign_id == choice] or [
        e for e in entries if e.path.stem == choice
    ]
    if len(found) > 1:
        raise InputFileError(
            f"{len(found)} plans have the campaign id {choice!r}: "
            + ", ".join(e.path.name for e in found),
            hint="give the plan file instead: --campaign schedules/NAME.yaml",
        )
    if not found:
        raise InputFileError(
            f"no plan in {workspace / 'schedules'} has the campaign id {choice!r}",
            hint=f"plans: {_listing(entries)}; --campaign takes a campaign id or a plan file",
        )
    return found[0]


def find_plan(workspace: Path, choice: str | Path | None = None, *, template: str | None = None,
              entries: list[PlanEntry] | None = None) -> PlanEntry | None:  # fmt: skip
    """The plan a command works with: the one ``choice`` names (a plan file or a
    campaign id), else the workspace's only plan, else the one plan whose steps use
    ``template``. None when ``schedules/`` holds no plan; an error listing the plans
    when several could be meant. ``entries``: the plans, if already scanned."""
    if choice is not None:
        return _by_choice(workspace, str(choice))
    entries = scan_plans(workspace) if entries is None else entries
    if len(entries) <= 1:
        return entries[0] if entries else None
    readable = [e for e in entries if e.data is not None]
    users = [e for e in readable if template and e.uses(template)]
    if len(users) == 1:
        return users[0]
    if not template:
        why = "say which campaign is meant"
    elif users:
        why = f"{len(users)} of them use {template}: say which campaign it is for"
    else:
        why = f"none of them uses {template}: say which campaign it is for"
    ids = sorted({e.campaign_id for e in (users or readable) if e.campaign_id})
    raise InputFileError(
        f"{len(entries)} plans in {workspace / 'schedules'}; {why}",
        hint="give " + " or ".join(f"--campaign {i}" for i in ids or ["schedules/NAME.yaml"])
        + f"; plans: {_listing(entries)}",
    )


def campaign_for(workspace: Path, choice: str | Path | None = None, *,
                 template: str | None = None) -> CampaignInfo:  # fmt: skip
    """The campaign of the plan ``find_plan`` finds; its error if it cannot be read."""
    entry = find_plan(workspace, choice, template=template)
    if entry is None:
        raise InputFileError(
            f"no plan in {workspace / 'schedules'}",
            hint="write one (see schedules/ in the sample workspace), or give --campaign FILE",
        )
    return entry.info()


def default_campaign_id(workspace: Path, template: str) -> str | None:
    """The campaign an ad hoc send of ``template`` (``NAME`` or ``NAME.KIND``) is
    logged under when none is given: the only plan's, or that of the one plan whose
    steps use the template. None (outside any campaign) when there is no plan, or
    several and none uses it; an error naming the campaign ids when several do."""
    entries = scan_plans(workspace)
    if len(entries) > 1 and not any(e.data is not None and e.uses(template) for e in entries):
        return None
    entry = find_plan(workspace, template=template, entries=entries)
    if entry is None:
        return None
    if entry.campaign_id is None:
        return entry.info().id  # raises the plan's error
    return entry.campaign_id
