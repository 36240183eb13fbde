"""What ``outreach schedule`` stores of a campaign: the plan file's text and the
campaign it describes, and the source of every template its steps can use (their
language variants, layouts and partials), with one hash over all of it. Approval is
of this; firing, sending, retries and rehearsals read it, never the files, so a
machine with only the database can send, and editing a file changes nothing until
the plan is scheduled again."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from outreach.confined import outside
from outreach.domain.campaign import CampaignInfo, parse_launch
from outreach.domain.plan import Plan


def template_sources(workspace: Path, names: Iterable[str]) -> dict[str, str]:
    """{path inside templates/: source} of the templates named (every variant and
    kind) and of every layout and partial; links leading outside are left out (the
    check refuses them)."""
    root = workspace / "templates"
    used = set(names)
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*.j2")) if root.is_dir() else []:
        rel = path.relative_to(root)
        if outside(path, workspace):
            continue
        if rel.parts[0] in ("_layouts", "_partials") or (len(rel.parts) == 1 and path.name.split(".")[0] in used):
            out["/".join(rel.parts)] = path.read_text("utf-8")
    return out


def digest(plan_text: str, templates: Mapping[str, str]) -> str:
    h = hashlib.sha256(plan_text.encode("utf-8"))
    for rel in sorted(templates):
        h.update(rel.encode() + b"\0" + templates[rel].encode("utf-8") + b"\0")
    return h.hexdigest()


def take(workspace: Path, plan_file: Path, plan: Plan) -> dict[str, Any]:
    """The snapshot of a plan as its files are now."""
    text = plan_file.read_text("utf-8")
    templates = template_sources(workspace, {s.template for s in plan.steps})
    c = plan.campaign
    return {
        "hash": digest(text, templates),
        "plan_file": str(plan_file),
        "plan": text,
        "campaign": {"id": c.id, "name": c.name, "launch": f"{c.launch:%Y-%m-%d %H:%M} {c.zone}",
                     "links": dict(c.links), "language": c.language, "sender": c.sender,
                     "reply_to": c.reply_to},
        "templates": templates,
    }


def campaign_of(snapshot: Mapping[str, Any], overrides: Mapping[str, str] | None = None) -> CampaignInfo:
    """The campaign templates see, as scheduled (and moved by ``reschedule``)."""
    c = snapshot["campaign"]
    launch = (overrides or {}).get("launch") or c["launch"]
    return CampaignInfo(id=c["id"], name=c["name"], launch=parse_launch(launch, source="launch"),
                        links=dict(c["links"]), language=c["language"], sender=c["sender"],
                        reply_to=c["reply_to"])  # fmt: skip


def differences(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    """What changed between two snapshots, file by file."""
    if old is None:
        return []
    out = ["the plan"] if old.get("plan") != new["plan"] else []
    before, after = old.get("templates", {}), new["templates"]
    for rel in sorted(set(before) | set(after)):
        if rel not in before:
            out.append(f"templates/{rel} (new)")
        elif rel not in after:
            out.append(f"templates/{rel} (gone)")
        elif before[rel] != after[rel]:
            out.append(f"templates/{rel}")
    return out
