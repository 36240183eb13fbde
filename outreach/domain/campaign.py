"""What templates know of a campaign: its name, launch moment and links.

Read from the ``campaign`` part of a plan file (``schedules/NAME.yaml``); the
plan's waves and steps are ``outreach.domain.plan``'s.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from outreach.domain.errors import InputFileError


@dataclass(frozen=True)
class CampaignInfo:
    id: str
    name: str
    launch: datetime  # aware, in the launch's zone
    links: dict[str, str] = field(default_factory=dict)
    language: str = "en"  # of the default template variants
    sender: str | None = None  # From, e.g. "COP team <cop@example.org>"
    reply_to: str | None = None

    @property
    def zone(self) -> str:
        return str(self.launch.tzinfo)

    def context(self, contact_zone: str | None) -> dict[str, Any]:
        """The ``campaign`` value templates see, for a recipient in ``contact_zone``."""
        local = self.launch
        if contact_zone:
            with contextlib.suppress(ZoneInfoNotFoundError):
                local = self.launch.astimezone(ZoneInfo(contact_zone))
        return {
            "id": self.id,
            "name": self.name,
            "launch": self.launch,
            "launch_local": local,
            "launch_utc": self.launch.astimezone(UTC),
            "timezone": self.zone,
            "links": dict(self.links),
        }


def parse_launch(text: str, *, source: str = "plan") -> datetime:
    """``2014-09-05 10:00 Europe/Istanbul`` -> an aware datetime in that zone.

    A wall time that the zone skips (clocks going forward) or has twice (clocks going
    back) is refused, naming the instants it could mean: nothing is moved silently. A
    UTC offset on the time (``2014-10-26 01:30+01:00 Europe/London``) picks one of
    the two instants of a time that happens twice.
    """
    parts = str(text).split()
    if len(parts) != 3:
        raise InputFileError(
            f"{source}: launch {text!r} is not 'YYYY-MM-DD HH:MM Zone/Name'",
            hint="for example: launch: 2014-09-05 10:00 Europe/Istanbul",
        )
    try:
        zone = ZoneInfo(parts[2])
    except (ZoneInfoNotFoundError, ValueError):
        raise InputFileError(f"{source}: unknown time zone {parts[2]!r} in launch") from None
    try:
        given = datetime.fromisoformat(f"{parts[0]} {parts[1]}")
    except ValueError:
        raise InputFileError(f"{source}: launch {text!r} has no valid date and time") from None
    naive = given.replace(tzinfo=None)
    first, second = naive.replace(tzinfo=zone, fold=0), naive.replace(tzinfo=zone, fold=1)
    offsets = (first.utcoffset(), second.utcoffset())
    wall = f"{naive:%Y-%m-%d %H:%M} {parts[2]}"
    if offsets[0] == offsets[1]:
        if given.tzinfo is not None and given.utcoffset() != offsets[0]:
            raise InputFileError(
                f"{source}: {text} gives the offset {_offset(given)}, but {wall} is "
                f"at {_offset(first)}",
                hint=f"write {naive:%Y-%m-%d %H:%M} {parts[2]} without an offset",
            )
        return first
    # fold=0 reads the wall time with the offset before the change, fold=1 after it
    ordered = sorted((first, second), key=lambda c: c.astimezone(UTC))
    utc = [c.astimezone(UTC) for c in ordered]
    both = _times(utc, naive, " UTC")
    if all(u.astimezone(zone).replace(tzinfo=None) != naive for u in utc):  # a gap
        local = _times([u.astimezone(zone) for u in utc], naive, "")
        raise InputFileError(
            f"{source}: {wall} does not exist (the clocks in {parts[2]} skip that time): "
            f"{both}? Write the local time of the one you mean: {local}"
        )
    if given.tzinfo is not None:
        for candidate in ordered:
            if candidate.utcoffset() == given.utcoffset():
                return candidate
    choices = " or ".join(f"{naive:%Y-%m-%d %H:%M}{_offset(c)} {parts[2]}" for c in ordered)
    raise InputFileError(
        f"{source}: {wall} happens twice (the clocks in {parts[2]} go back over it): "
        f"{both}? Give the UTC offset of the one you mean: {choices}"
    )


def _times(moments: list[datetime], day: datetime, suffix: str) -> str:
    """``00:30 UTC or 01:30 UTC``; with the dates when one is not ``day``'s."""
    dated = any(m.date() != day.date() for m in moments)
    form = "%Y-%m-%d %H:%M" if dated else "%H:%M"
    return " or ".join(f"{m:{form}}{suffix}" for m in moments)


def _offset(moment: datetime) -> str:
    """``+01:00``: the UTC offset of an aware datetime."""
    return moment.isoformat(timespec="minutes")[-6:]


def campaign_from_plan(data: dict[str, Any], *, source: str) -> CampaignInfo:
    head = data.get("campaign")
    if not isinstance(head, dict):
        raise InputFileError(
            f"{source}: no 'campaign:' section", hint="campaign: {id: ..., name: ...}"
        )
    for key in ("id", "name"):
        if not head.get(key):
            raise InputFileError(f"{source}: campaign.{key} is missing")
    if "launch" not in data:
        raise InputFileError(
            f"{source}: no 'launch:' line", hint="launch: 2014-09-05 10:00 Europe/Istanbul"
        )
    links = data.get("links") or {}
    if not isinstance(links, dict):
        raise InputFileError(f"{source}: links must be name: URL pairs")
    return CampaignInfo(
        id=str(head["id"]),
        name=str(head["name"]),
        launch=parse_launch(data["launch"], source=source),
        links={str(k): str(v) for k, v in links.items()},
        language=str(head.get("language") or "en"),
        sender=str(head["from"]) if head.get("from") else None,
        reply_to=str(head["reply_to"]) if head.get("reply_to") else None,
    )


def slugify(text: str) -> str:
    """A name for a file or an address: cop-2014-press-release."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.casefold()).strip("-")
    return slug[:80] or "release"
