"""A campaign report as text: a plain table, Markdown, CSV, JSON (HTML: ``review.html``).

What contacts and servers wrote (addresses, SMTP replies, X errors) is untrusted: in the
plain table its control characters are shown escaped, in Markdown it is escaped for
Markdown and for the HTML a Markdown viewer would make of it."""

from __future__ import annotations

import csv
import html
import io
import json
import re
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from outreach.domain.errors import OutreachError, shown
from outreach.review.report import LOST, CampaignReport, ReasonCount, StepReport

FORMATS = ("table", "markdown", "csv", "json", "html")


def render_report(report: CampaignReport, fmt: str) -> str:
    """The report as ``table`` (plain text), ``markdown``, ``csv``, ``json`` or ``html``."""
    if fmt == "html":
        from outreach.review.html import render_html

        return render_html(report)
    renderers: dict[str, Callable[[CampaignReport], str]] = {
        "table": _text, "markdown": _markdown, "csv": _csv, "json": _json}  # fmt: skip
    if fmt not in renderers:
        raise OutreachError(f"no report format {fmt!r}", code="unknown_format", format=fmt,
                            hint=f"formats: {', '.join(FORMATS)}")  # fmt: skip
    return renderers[fmt](report)


# -- values as people read them ---------------------------------------------------------


def when(value: datetime | None) -> str:
    return "" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"


def lag(value: timedelta | None) -> str:
    """A signed, short duration: +4s, +2m 05s, -1h 30m, +3d 2h."""
    if value is None:
        return ""
    seconds = round(value.total_seconds())
    sign, s = ("-" if seconds < 0 else "+"), abs(seconds)
    d, rest = divmod(s, 86400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    if d:
        return f"{sign}{d}d {h}h"
    if h:
        return f"{sign}{h}h {m:02d}m"
    return f"{sign}{m}m {sec:02d}s" if m else f"{sign}{sec}s"


STEP_COLUMNS = ("step", "wave", "channel", "planned at (UTC)", "planned", "sent", "failed",
                "deferred", "skipped", "uncertain", "pending", *LOST, "first send", "lag",
                "last send", "lag ")  # fmt: skip


def step_cells(row: StepReport) -> list[str]:
    first = f"{row.step} ({row.firings} firings)" if row.firings > 1 else row.step
    return [first, row.wave or "", row.channel, when(row.planned_at), f"{row.planned:,}",
            *(f"{row.n(s):,}" for s in ("sent", "failed", "deferred", "skipped", "uncertain")),
            f"{row.pending:,}", *(f"{row.lost.get(k, 0):,}" for k in LOST),
            when(row.first_sent), lag(row.first_lag), when(row.last_sent), lag(row.last_lag)]  # fmt: skip


def total_cells(report: CampaignReport) -> list[str]:
    t = report.totals
    numbers = [t.get(k, 0) for k in ("planned", "sent", "failed", "deferred", "skipped", "uncertain")]
    pending = t.get("queued", 0) + t.get("sending", 0)
    return ["total", "", "", "", *(f"{n:,}" for n in numbers), f"{pending:,}",
            *(f"{t.get(k, 0):,}" for k in LOST), "", "", "", ""]  # fmt: skip


REASON_COLUMNS = ("step", "wave", "count", "code", "stage", "reply", "reason")


def reason_cells(r: ReasonCount) -> list[str]:
    return [r.step, r.wave or "", f"{r.count:,}", "" if r.code is None else str(r.code), r.stage,
            r.reply, r.reason]  # fmt: skip


PUBLISHED_COLUMNS = ("step", "wave", "channel", "part", "at (UTC)", "post id", "link")


def published_cells(report: CampaignReport) -> list[list[str]]:
    return [[p.step, p.wave or "", p.channel, str(p.part + 1), when(p.at), p.post_id or "", p.url or ""]
            for p in report.published]  # fmt: skip


def heading(report: CampaignReport) -> list[str]:
    approval = (f"approved by {report.approved_by} at {when(report.approved_at)} UTC"
                if report.approved_by else "not approved")  # fmt: skip
    return [f"Campaign {report.campaign}: {report.name}",
            f"{report.status}, {approval}; report of {when(report.generated_at)} UTC",
            f"newsroom: {report.newsroom}"]  # fmt: skip


def sections(report: CampaignReport) -> list[tuple[str, Sequence[str], list[list[str]]]]:
    """The report's tables: (title, columns, rows)."""
    steps = [step_cells(r) for r in report.steps] + [total_cells(report)]
    return [
        ("Steps, per plan step and wave", STEP_COLUMNS, steps),
        ("Failures, by reason", REASON_COLUMNS, [reason_cells(r) for r in report.failures]),
        ("Skipped (suppressed), by reason", (*REASON_COLUMNS[:3], "reason"),
         [[*reason_cells(r)[:3], r.reason] for r in report.skips]),
        ("Published: X posts and press releases", PUBLISHED_COLUMNS, published_cells(report)),
    ]  # fmt: skip


# -- plain text -------------------------------------------------------------------------


def _text(report: CampaignReport) -> str:
    lines = [shown(h) for h in heading(report)]
    for title, columns, rows in sections(report):
        lines += ["", title]
        if not rows:
            lines.append("  (none)")
            continue
        cells = [list(columns)] + [[shown(c) for c in row] for row in rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
        for r in cells:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines) + "\n"


# -- Markdown ---------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#])")


def md(text: str) -> str:
    """A table cell: one line, Markdown's and HTML's special characters escaped."""
    one_line = " ".join(shown(text).split())
    return _MD_SPECIAL.sub(r"\\\1", html.escape(one_line, quote=False))


def _markdown(report: CampaignReport) -> str:
    head = heading(report)
    lines = [f"# {md(head[0])}", "", md(head[1]), "", f"Newsroom: {md(report.newsroom)}"]
    for title, columns, rows in sections(report):
        lines += ["", f"## {title}", ""]
        if not rows:
            lines.append("None.")
            continue
        lines.append("| " + " | ".join(md(c) for c in columns) + " |")
        lines.append("|" + "|".join("---" for _ in columns) + "|")
        lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# -- CSV: one row per plan step and wave ------------------------------------------------

CSV_COLUMNS = ("campaign", "step", "wave", "channel", "template", "status", "firings",
               "planned_at", "planned", "sent", "failed", "deferred", "skipped", "uncertain",
               "pending", *LOST, "first_sent", "last_sent", "first_lag_s", "last_lag_s",
               "skip_reasons", "failure_reasons", "post_ids", "links")  # fmt: skip


def _reason_text(r: ReasonCount) -> str:
    words = " ".join(p for p in (str(r.code or ""), r.reply) if p)
    return f"{r.count}x " + "; ".join(p for p in (words, r.reason) if p)


def _csv(report: CampaignReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in report.steps:
        posts = _of(report.published, r)
        writer.writerow([
            report.campaign, r.step, r.wave or "", r.channel, r.template, r.status, r.firings,
            r.planned_at.isoformat(), r.planned,
            *(r.n(s) for s in ("sent", "failed", "deferred", "skipped", "uncertain")), r.pending,
            *(r.lost.get(k, 0) for k in LOST),
            r.first_sent.isoformat() if r.first_sent else "", r.last_sent.isoformat() if r.last_sent else "",
            _seconds(r.first_lag), _seconds(r.last_lag),
            " | ".join(_reason_text(x) for x in _of(report.skips, r)),
            " | ".join(_reason_text(x) for x in _of(report.failures, r)),
            " ".join(p.post_id or "" for p in posts).strip(), " ".join(p.url or "" for p in posts).strip(),
        ])  # fmt: skip
    return out.getvalue()


def _of(items: Sequence[Any], row: StepReport) -> list[Any]:
    """What of ``items`` (reasons, published posts) belongs to ``row``'s step and wave."""
    return [x for x in items if x.step == row.step and x.wave == row.wave]


def _seconds(value: timedelta | None) -> str:
    return "" if value is None else f"{value.total_seconds():.3f}"


# -- JSON -------------------------------------------------------------------------------


def _step_json(r: StepReport) -> dict[str, Any]:
    return {
        "step": r.step, "wave": r.wave, "channel": r.channel, "template": r.template,
        "status": r.status, "firings": r.firings, "planned_at": r.planned_at.isoformat(),
        "planned": r.planned, "counts": r.counts, "pending": r.pending,
        **{k: r.lost.get(k, 0) for k in LOST},
        "first_sent": r.first_sent.isoformat() if r.first_sent else None,
        "last_sent": r.last_sent.isoformat() if r.last_sent else None,
        "first_lag_s": r.first_lag.total_seconds() if r.first_lag is not None else None,
        "last_lag_s": r.last_lag.total_seconds() if r.last_lag is not None else None,
    }  # fmt: skip


def report_json(report: CampaignReport) -> dict[str, Any]:
    """The report as plain JSON values (what ``--format json`` prints)."""
    def reason(r: ReasonCount) -> dict[str, Any]:
        return {"step": r.step, "wave": r.wave, "count": r.count, "code": r.code, "stage": r.stage,
                "reply": r.reply, "reason": r.reason}  # fmt: skip

    return {
        "campaign": report.campaign, "name": report.name, "status": report.status,
        "approved_by": report.approved_by,
        "approved_at": report.approved_at.isoformat() if report.approved_at else None,
        "generated_at": report.generated_at.isoformat(), "newsroom": report.newsroom,
        "totals": report.totals,
        "steps": [_step_json(r) for r in report.steps],
        "firings": [_step_json(r) for r in report.firings],
        "failures": [reason(r) for r in report.failures],
        "skips": [reason(r) for r in report.skips],
        "published": [{"step": p.step, "wave": p.wave, "channel": p.channel, "part": p.part,
                       "at": p.at.isoformat(), "post_id": p.post_id, "url": p.url} for p in report.published],
        "timeline": {"bucket_s": report.bucket_seconds,
                     "sent": [[t.isoformat(), n] for t, n in report.timeline]},
    }  # fmt: skip


def _json(report: CampaignReport) -> str:
    return json.dumps(report_json(report), ensure_ascii=False, indent=1) + "\n"
