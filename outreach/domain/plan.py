"""A campaign plan as written: its schema, and waves and steps around launch moments.

    launch: 2014-09-05 10:00 Europe/Istanbul
    steps:
      - id: industry-email
        channel: email
        template: cop-industry
        audience: kind:industry
        at: T+0 09:00 local        # 09:00 on launch day in each recipient's zone
        public: true               # may not be seen before the embargo
        not_before: embargo        # groups that would be earlier wait for it
      - id: morning-report
        channel: report            # the campaign's report, mailed to staff (no template)
        to: [director@example.org]
        at: T+1d 08:00             # the morning after, in each wave

``at`` is ``T``, a signed number with ``d`` (calendar days in the wave's zone), ``h``
or ``m``, then optionally a wall-clock time ``HH:MM`` (in the wave's zone, or with
``local`` in each recipient's). When each firing is: ``domain.timeline``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from outreach.domain import audience as seg
from outreach.domain import channels
from outreach.domain.campaign import CampaignInfo, parse_launch
from outreach.domain.errors import InputFileError, OutreachError

_AT = re.compile(
    r"^T(?:(?P<sign>[+-])(?P<n>\d{1,3})(?P<unit>[dhm])?)?(?:\s+(?P<hh>\d{1,2}):(?P<mm>\d{2}))?(?:\s+(?P<local>local))?$"
)
_DURATION = re.compile(r"^(?P<n>\d+)\s*(?P<unit>[smhd])$")
_ID = r"^[a-z0-9][a-z0-9-]{0,62}$"


@dataclass(frozen=True)
class Offset:
    days: int = 0
    minutes: int = 0  # elapsed, after the days
    clock: time | None = None  # a wall-clock time on the resulting day
    local: bool = False  # that wall-clock time in each recipient's zone

    def __str__(self) -> str:
        text = "T"
        if self.days:
            text += f"{self.days:+d}d"
        elif self.minutes:
            text += f"{self.minutes // 60:+d}h" if self.minutes % 60 == 0 else f"{self.minutes:+d}m"
        else:
            text += "+0"
        if self.clock:
            text += f" {self.clock:%H:%M}"
        return text + (" local" if self.local else "")


def parse_at(text: str) -> Offset:
    match = _AT.match(str(text).strip())
    if not match:
        raise ValueError(
            f"{text!r} is not an offset like T-2d 09:00, T+0 10:00, T+2h or T+14d 09:00 local"
        )
    n = int(match["n"] or 0) * (-1 if match["sign"] == "-" else 1)
    unit = match["unit"] or ("d" if match["hh"] else "m")
    if match["n"] and not match["unit"] and n != 0:
        raise ValueError(f"{text!r}: say d, h or m after the number")
    clock = None
    if match["hh"]:
        hh, mm = int(match["hh"]), int(match["mm"])
        if hh > 23 or mm > 59:
            raise ValueError(f"{text!r}: {hh:02d}:{mm:02d} is not a time of day")
        clock = time(hh, mm)
    if match["local"] and clock is None:
        raise ValueError(f"{text!r}: 'local' needs a time of day, e.g. T+0 09:00 local")
    if clock is not None and unit != "d":
        raise ValueError(f"{text!r}: a time of day goes with whole days (T+1d 09:00), not hours")
    days = n if unit == "d" else 0
    minutes = n * 60 if unit == "h" else n if unit == "m" else 0
    return Offset(days, minutes, clock, bool(match["local"]))


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(str(text).strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30m, 2h or 1d")
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match["unit"]]
    return timedelta(seconds=int(match["n"]) * seconds)


# -- the file's schema ------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _check_audience(value: str) -> str:
    try:
        seg.parse(value)
    except OutreachError as exc:
        raise ValueError(exc.message.splitlines()[0]) from None
    return value


def _check_launch(value: str) -> str:
    try:
        parse_launch(value, source="")
    except InputFileError as exc:
        raise ValueError(exc.message.removeprefix(": ")) from None
    return value


class RateModel(_Model):
    per_second: float | None = Field(None, gt=0)
    per_hour: int | None = Field(None, gt=0)


class StepModel(_Model):
    id: str = Field(pattern=_ID)
    channel: str
    template: str = Field("", validate_default=True)  # none for a report step
    to: list[str] = Field(default_factory=list, validate_default=True)  # a report step's staff addresses
    audience: str = ""
    at: str
    public: bool = False
    waves: list[str] | None = None
    requires: list[str] = []
    misfire: str = "1h"
    not_before: Literal["embargo"] | None = None
    rate: RateModel | None = None

    _audience = field_validator("audience")(_check_audience)

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        if value not in channels.names():
            raise ValueError(f"unknown channel {value!r}; use one of: {', '.join(channels.names())}")
        return value

    @field_validator("template")
    @classmethod
    def _template(cls, value: str, info: ValidationInfo) -> str:
        report = info.data.get("channel") == channels.REPORT.name
        if report and value:
            raise ValueError("a report step has no template: the campaign's report is what it mails")
        if not report and not value and "channel" in info.data:
            raise ValueError("is required")
        return value

    @field_validator("to")
    @classmethod
    def _to(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if info.data.get("channel") != channels.REPORT.name:
            if value:
                raise ValueError("only a report step has 'to' (the others go to an audience)")
            return value
        if not value:
            raise ValueError("a report step needs the staff addresses it is mailed to, e.g. to: [board@example.org]")
        return list(dict.fromkeys(_staff_address(a) for a in value))

    @field_validator("audience")
    @classmethod
    def _no_audience(cls, value: str, info: ValidationInfo) -> str:
        if value and info.data.get("channel") == channels.REPORT.name:
            raise ValueError("a report step is mailed to its 'to' addresses; it takes no audience")
        return value

    @field_validator("at")
    @classmethod
    def _at(cls, value: str, info: ValidationInfo) -> str:
        if parse_at(value).local and info.data.get("channel") == channels.REPORT.name:
            raise ValueError("a report step goes to staff: give its time in the wave's zone, without 'local'")
        return value

    @field_validator("misfire")
    @classmethod
    def _misfire(cls, value: str) -> str:
        parse_duration(value)
        return value


def _staff_address(value: str) -> str:
    """A report recipient's address as email-validator normalises it (no DNS look-up)."""
    try:
        return validate_email(str(value).strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"{value!r} is not an email address: {exc}") from None


class WaveModel(_Model):
    id: str = Field(pattern=_ID)
    launch: str
    audience: str = ""

    _launch = field_validator("launch")(_check_launch)
    _audience = field_validator("audience")(_check_audience)


class CampaignModel(_Model):
    id: str = Field(pattern=_ID)
    name: str = Field(min_length=1)
    language: str = "en"
    sender: str | None = Field(None, alias="from")
    reply_to: str | None = None


class PlanModel(_Model):
    campaign: CampaignModel
    launch: str
    embargo: str | None = None
    links: dict[str, str] = {}
    waves: list[WaveModel] = []
    steps: list[StepModel] = Field(min_length=1)

    _launch = field_validator("launch")(_check_launch)

    @field_validator("embargo")
    @classmethod
    def _embargo(cls, value: str | None) -> str | None:
        return None if value is None else _check_launch(value)


# -- the plan ------------------------------------------------------------------------


@dataclass(frozen=True)
class Wave:
    id: str
    launch: datetime  # aware, in the wave's zone
    audience: str  # restriction, as a segment expression ("" = everyone)

    @property
    def zone(self) -> ZoneInfo:
        return self.launch.tzinfo  # type: ignore[return-value]


@dataclass(frozen=True)
class Step:
    id: str
    channel: str
    template: str
    audience: str
    at: Offset
    public: bool
    waves: tuple[str, ...] | None
    requires: tuple[str, ...]
    misfire: timedelta
    not_before_embargo: bool
    rate: Mapping[str, float]
    to: tuple[str, ...] = ()  # a report step's staff addresses


@dataclass(frozen=True)
class Plan:
    source: str
    campaign: CampaignInfo
    embargo: datetime  # aware
    waves: tuple[Wave, ...]
    steps: tuple[Step, ...]

    def step(self, step_id: str) -> Step:
        return next(s for s in self.steps if s.id == step_id)

    def waves_of(self, step: Step) -> list[Wave]:
        return [w for w in self.waves if step.waves is None or w.id in step.waves]


LineOf = Callable[[tuple[Any, ...]], int | None]


def load_plan(data: Any, *, source: str, line_of: LineOf | None = None) -> Plan:
    """Validate a plan file's data; every error names the file, the line and the field."""
    try:
        model = PlanModel.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors()[:12]:
            loc = tuple(error["loc"])
            line = line_of(loc) if line_of else None
            where = f"{source}:{line}" if line else source
            lines.append(f"{where}: {_field(loc, data)}: {_message(error)}")
        more = len(exc.errors()) - 12
        raise InputFileError(
            "the plan has errors:\n  "
            + "\n  ".join(lines)
            + (f"\n  ... and {more} more" if more > 0 else ""),
            hint="fix them in the file, then check it again", code="plan_invalid", source=source,
        ) from None
    return _build(model, source, line_of)


def _field(loc: tuple[Any, ...], data: Any) -> str:
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            step_id = (
                node[part].get("id")
                if isinstance(node, list) and part < len(node) and isinstance(node[part], dict)
                else None
            )
            out += f"[{step_id or part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out


def _message(error: Mapping[str, Any]) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return "unknown key (a typo?)"
    if error["type"] == "missing":
        return "is required"
    return message


def _build(model: PlanModel, source: str, line_of: LineOf | None) -> Plan:
    def fail(message: str, loc: tuple[Any, ...]) -> InputFileError:
        line = line_of(loc) if line_of else None
        return InputFileError(f"{source}:{line}: {message}" if line else f"{source}: {message}")

    c = model.campaign
    launch = parse_launch(model.launch, source=source)
    campaign = CampaignInfo(
        id=c.id, name=c.name, launch=launch, links=dict(model.links), language=c.language,
        sender=c.sender, reply_to=c.reply_to,
    )  # fmt: skip
    embargo = parse_launch(model.embargo, source=source) if model.embargo else launch
    waves = [Wave("launch", launch, "")]
    for i, w in enumerate(model.waves):
        if w.id in {x.id for x in waves}:
            raise fail(f"waves[{w.id}]: the wave id is used twice", ("waves", i, "id"))
        waves.append(Wave(w.id, parse_launch(w.launch, source=source), w.audience))
    ids = [s.id for s in model.steps]
    steps = []
    for i, s in enumerate(model.steps):
        if ids.count(s.id) > 1:
            raise fail(f"steps[{s.id}]: the step id is used twice", ("steps", i, "id"))
        for name in s.waves or []:
            if name not in {w.id for w in waves}:
                raise fail(
                    f"steps[{s.id}].waves: no wave {name!r} (waves: {', '.join(w.id for w in waves)})",
                    ("steps", i, "waves"),
                )
        for name in s.requires:
            if name not in ids:
                raise fail(f"steps[{s.id}].requires: no step {name!r}", ("steps", i, "requires"))
        rate = {k: v for k, v in (s.rate.model_dump() if s.rate else {}).items() if v is not None}
        steps.append(
            Step(
                id=s.id, channel=s.channel, template=s.template, audience=s.audience,
                at=parse_at(s.at), public=s.public, waves=tuple(s.waves) if s.waves is not None else None,
                requires=tuple(s.requires), misfire=parse_duration(s.misfire),
                not_before_embargo=s.not_before == "embargo", rate=rate, to=tuple(s.to),
            )
        )  # fmt: skip
    cycle = _cycle({s.id: s.requires for s in steps})
    if cycle:
        raise InputFileError(f"{source}: steps require each other in a loop: {' -> '.join(cycle)}")
    return Plan(source, campaign, embargo, tuple(waves), tuple(steps))


def _cycle(graph: Mapping[str, tuple[str, ...]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in graph:
        if node not in state and (found := visit(node)):
            return found
    return None
