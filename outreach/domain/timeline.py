"""When a plan's steps fire: every firing of every step in every wave as an exact UTC
instant, a ``local`` step fanned out per recipient zone, public steps checked
against the embargo, launches moved by ``reschedule``. Pure: the database says
which zones an audience has (``zone_counts``), this module says when each firing is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from outreach.domain.plan import Offset, Plan, Step, Wave


def instant(wave: Wave, offset: Offset, zone: ZoneInfo | None = None) -> datetime:
    """The UTC instant of ``offset`` from ``wave``'s launch; with a wall-clock time,
    in ``zone`` (a recipient's, for local steps) or else the wave's zone. Days are
    calendar days in the wave's zone, so a DST change in between moves nothing."""
    launch_day = wave.launch.date()
    if offset.clock is not None:
        day = launch_day + timedelta(days=offset.days)
        local = datetime.combine(day, offset.clock).replace(tzinfo=zone or wave.zone)
        return local.astimezone(UTC)
    # the launch day keeps the launch's fold (the first or second of a repeated hour)
    shifted = (wave.launch.replace(tzinfo=None) + timedelta(days=offset.days)).replace(
        tzinfo=wave.zone, fold=wave.launch.fold if offset.days == 0 else 0
    )
    return shifted.astimezone(UTC) + timedelta(minutes=offset.minutes)


@dataclass(frozen=True)
class Firing:
    step: Step
    wave: Wave
    at: datetime  # UTC
    audience: str  # the step's, the wave's and the zone group's, as one expression
    zones: tuple[str, ...] = ()  # a local step's recipients' zones in this group
    clamped_from: datetime | None = None  # when not_before: embargo moved it

    @property
    def key(self) -> str:
        """campaign-unique: step, wave and instant."""
        wave = "" if self.wave.id == "launch" else f"@{self.wave.id}"
        return f"{self.step.id}{wave}@{self.at:%Y%m%dT%H%MZ}"


@dataclass
class EmbargoBreach:
    step: str
    zone: str
    local: datetime
    at: datetime
    embargo: datetime

    def __str__(self) -> str:
        return (
            f"steps[{self.step}] fires at {self.local:%H:%M on %d %b %Y} in {self.zone}, which is "
            f"{self.at:%Y-%m-%d %H:%M} UTC, before the embargo at {self.embargo:%Y-%m-%d %H:%M} UTC"
        )


@dataclass
class Timeline:
    firings: list[Firing] = field(default_factory=list)
    breaches: list[EmbargoBreach] = field(default_factory=list)


def audience_of(step: Step, wave: Wave) -> str:
    parts = [f"({p})" for p in (step.audience, wave.audience) if p.strip()]
    return " ".join(parts)


def timeline(plan: Plan, zone_counts: Callable[[str], Mapping[str | None, int]]) -> Timeline:
    """Every firing of every step in every wave, in time order. ``zone_counts(expr)``
    tells how many contacts of an audience are in each time zone (None: no zone)."""
    out = Timeline()
    embargo = plan.embargo.astimezone(UTC)
    for step in plan.steps:
        for wave in plan.waves_of(step):
            base = audience_of(step, wave)
            groups: list[tuple[datetime, tuple[str, ...], str]] = []
            if step.at.local:
                by_instant: dict[datetime, list[str]] = {}
                for zone_name in zone_counts(base):
                    name = zone_name or str(wave.zone)
                    try:
                        zone = ZoneInfo(name)
                    except (ZoneInfoNotFoundError, ValueError):
                        zone, name = wave.zone, str(wave.zone)
                    by_instant.setdefault(instant(wave, step.at, zone), []).append(zone_name or "")
                for at, zones in sorted(by_instant.items()):
                    named = sorted(z for z in zones if z)
                    term = f"tz:{','.join(named)}" if named else ""
                    if "" in zones:
                        term = f"({term} OR -has:tz)" if term else "-has:tz"
                    groups.append(
                        (
                            at,
                            tuple(sorted(set(named + ([str(wave.zone)] if "" in zones else [])))),
                            term,
                        )
                    )
            else:
                groups.append((instant(wave, step.at), (), ""))
            merged: dict[datetime, tuple[list[str], list[str], datetime | None]] = {}
            for at, zones, term in groups:
                clamped = None
                if at < embargo and step.not_before_embargo:
                    clamped, at = at, embargo  # held to the embargo, public or not
                elif at < embargo and step.public:
                    for zone_name in zones or (str(wave.zone),):
                        zone = ZoneInfo(zone_name)
                        out.breaches.append(
                            EmbargoBreach(step.id, zone_name, at.astimezone(zone), at, embargo)
                        )
                group = merged.setdefault(at, ([], [], clamped))
                group[0].extend(zones)
                group[1].append(term)
                if clamped and (group[2] is None or clamped < group[2]):
                    merged[at] = (group[0], group[1], clamped)
            for at, (zones, terms, clamped) in merged.items():
                # groups clamped to the embargo fire together: any of their zones
                term = terms[0] if len(terms) == 1 else " OR ".join(f"({t})" for t in terms if t)
                if term and len(terms) > 1:
                    term = f"({term})"
                expr = " ".join(p for p in (base, term) if p)
                out.firings.append(Firing(step, wave, at, expr, tuple(sorted(set(zones))), clamped))
    out.firings.sort(key=lambda f: (f.at, f.step.id, f.wave.id))
    return out


def with_launches(plan: Plan, overrides: Mapping[str, datetime]) -> Plan:
    """The plan with some waves launching at other moments (``reschedule``); the
    first wave's moment is the campaign's launch. The embargo keeps its distance from
    the launch (in elapsed time, whatever zone each is written in), unless an
    ``embargo`` override gives it."""
    if not overrides:
        return plan
    waves = tuple(replace(w, launch=overrides.get(w.id, w.launch)) for w in plan.waves)
    campaign = plan.campaign
    embargo = plan.embargo
    if "launch" in overrides:
        moved = overrides["launch"]
        campaign = replace(campaign, launch=moved)
        before = plan.campaign.launch.astimezone(UTC) - plan.embargo.astimezone(UTC)
        embargo = (moved.astimezone(UTC) - before).astimezone(plan.embargo.tzinfo)
    if "embargo" in overrides:
        embargo = overrides["embargo"]
    return replace(plan, waves=waves, campaign=campaign, embargo=embargo)


def launch_days(plan: Plan) -> list[date]:
    return sorted({w.launch.date() for w in plan.waves})


def zones_at(
    wave: Wave, offset: Offset, instants: list[datetime], this: datetime, zones: list[str | None],
    *, hold_until: datetime | None = None,
) -> list[str | None]:  # fmt: skip
    """Which of ``zones`` (as the audience has them now) a local step's firing at
    ``this`` covers: each zone goes to the first planned instant at or after its own
    (the last one if none), so a zone that appeared since the plan was scheduled is
    sent with the next firing rather than missed."""
    planned = sorted(instants)
    out = []
    for name in zones:
        try:
            zone = ZoneInfo(name) if name else wave.zone
        except (ZoneInfoNotFoundError, ValueError):
            zone = wave.zone
        at = instant(wave, offset, zone)
        if hold_until is not None and at < hold_until:
            at = hold_until
        slot = next((i for i in planned if i >= at), planned[-1])
        if slot == this:
            out.append(name)
    return out


def zone_term(zones: list[str | None]) -> str:
    """A segment term for contacts in ``zones`` (None: contacts with no zone)."""
    named = sorted(z for z in zones if z)
    term = f"tz:{','.join(named)}" if named else ""
    if None in zones:
        term = f"({term} OR -has:tz)" if term else "-has:tz"
    return term
