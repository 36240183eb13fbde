"""A campaign report as one self-contained HTML file: inline CSS, inline SVG charts
(sends over time against the planned instants; each step's deliveries by status),
no script, nothing fetched. Everything shown is escaped (Jinja2's autoescape for the
page, ``html.escape`` for the SVG text made here): addresses, names and server replies
are untrusted. Only http(s) addresses become links."""

from __future__ import annotations

from datetime import datetime, timedelta
from html import escape
from importlib import resources

from jinja2 import Environment, StrictUndefined
from markupsafe import Markup

from outreach.review import render
from outreach.review.report import CampaignReport

COLORS = {"sent": "#2e7d32", "failed": "#c62828", "deferred": "#ef6c00", "skipped": "#8d8d8d",
          "uncertain": "#6a1b9a", "pending": "#90a4ae"}  # fmt: skip
PLANNED = "#1565c0"


def render_html(report: CampaignReport) -> str:
    env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = render.when
    env.filters["lag"] = render.lag
    env.filters["link"] = link
    source = resources.files("outreach.review").joinpath("report.html.j2").read_text("utf-8")
    return env.from_string(source).render(
        r=report, head=render.heading(report), sections=render.sections(report),
        timeline=Markup(timeline_svg(report)), statuses=Markup(status_svg(report)), colors=COLORS,
        planned_color=PLANNED,
    )  # fmt: skip


def link(url: str | None) -> Markup:
    """An http(s) address as a link, anything else as escaped text."""
    if not url:
        return Markup("")
    if url.startswith(("https://", "http://")):
        return Markup('<a href="{0}" rel="noreferrer">{0}</a>').format(url)
    return Markup("{0}").format(url)


# -- charts -----------------------------------------------------------------------------

W, H = 960, 280
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 28, 44


def _label(t: datetime, span: timedelta) -> str:
    if span <= timedelta(hours=1):
        return f"{t:%H:%M:%S}"
    if span <= timedelta(days=2):
        return f"{t:%d %b %H:%M}"
    return f"{t:%d %b}"


def timeline_svg(report: CampaignReport) -> str:
    """Sends per span of time as bars, each planned instant a dashed line (hover: the
    step and its instant)."""
    planned = report.planned_instants
    if not report.timeline and not planned:
        return '<p class="none">Nothing planned or sent yet.</p>'
    size = timedelta(seconds=report.bucket_seconds)
    moments = [t for t, _ in planned] + [t for t, _ in report.timeline] + [t + size for t, _ in report.timeline]
    t0, t1 = min(moments), max(moments)
    pad = max((t1 - t0) * 0.02, size)
    t0, t1 = t0 - pad, t1 + pad
    span = t1 - t0
    top = max((n for _, n in report.timeline), default=0) or 1
    inner_w, inner_h = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(t: datetime) -> float:
        return LEFT + inner_w * ((t - t0) / span)

    def y(n: float) -> float:
        return TOP + inner_h * (1 - n / top)

    out = [f'<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
           f'aria-label="sends over time against the plan">',
           f'<rect x="{LEFT}" y="{TOP}" width="{inner_w}" height="{inner_h}" fill="#fafafa" stroke="#ddd"/>']  # fmt: skip
    for n in sorted({0, top // 2, top}):
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(n):.1f}" y2="{y(n):.1f}" stroke="#e0e0e0"/>'
                   f'<text x="{LEFT - 6}" y="{y(n) + 4:.1f}" text-anchor="end">{n:,}</text>')  # fmt: skip
    for i, anchor in enumerate(("start", "middle", "middle", "middle", "middle", "end")):
        t = t0 + span * (i / 5)
        out.append(f'<text x="{x(t):.1f}" y="{H - BOTTOM + 16}" text-anchor="{anchor}">{escape(_label(t, span))}</text>')
    for start, n in report.timeline:
        left, right = x(start), x(start + size)
        width = max(right - left - 1, 1.5)
        out.append(f'<rect class="bar" x="{left:.1f}" y="{y(n):.1f}" width="{width:.1f}" '
                   f'height="{TOP + inner_h - y(n):.1f}" fill="{COLORS["sent"]}"><title>'
                   f'{escape(render.when(start))} UTC: {n:,} sent</title></rect>')  # fmt: skip
    for at, key in planned:
        px = x(at)
        out.append(f'<g class="planned"><line x1="{px:.1f}" x2="{px:.1f}" y1="{TOP}" y2="{TOP + inner_h}" '
                   f'stroke="{PLANNED}" stroke-dasharray="4 3"/><path d="M{px - 4:.1f},{TOP - 8} '
                   f'L{px + 4:.1f},{TOP - 8} L{px:.1f},{TOP} Z" fill="{PLANNED}"/><title>planned: '
                   f'{escape(key)} at {escape(render.when(at))} UTC</title></g>')  # fmt: skip
    bucket = render.lag(size).lstrip("+")
    out.append(f'<text x="{LEFT}" y="{H - 8}">UTC; bars: sends per {escape(bucket)}; '
               f'dashed: a planned instant (hover for its step)</text></svg>')  # fmt: skip
    return "".join(out)


def status_svg(report: CampaignReport) -> str:
    """Each plan step (and wave) as a bar of its deliveries, stacked by status."""
    rows = [r for r in report.steps if r.planned]
    if not rows:
        return '<p class="none">No deliveries yet.</p>'
    label_w, bar_h, gap = 260, 18, 8
    width = W - label_w - RIGHT - 60
    top = max(r.planned for r in rows)
    height = TOP + len(rows) * (bar_h + gap) + 8
    out = [f'<svg class="chart" viewBox="0 0 {W} {height}" width="{W}" height="{height}" role="img" '
           f'aria-label="deliveries of each step by status">']  # fmt: skip
    lx = label_w
    for name, color in COLORS.items():
        out.append(f'<rect x="{lx}" y="6" width="12" height="12" fill="{color}"/>'
                   f'<text x="{lx + 16}" y="16">{name}</text>')  # fmt: skip
        lx += 26 + 8 * len(name)
    for i, r in enumerate(rows):
        y = TOP + i * (bar_h + gap)
        name = r.step + (f" @{r.wave}" if r.wave and r.wave != "launch" else "")
        out.append(f'<text x="{label_w - 8}" y="{y + bar_h - 5}" text-anchor="end">{escape(name)}</text>')
        x = float(label_w)
        parts = [(s, r.n(s)) for s in ("sent", "failed", "deferred", "skipped", "uncertain")]
        for status, n in [*parts, ("pending", r.pending)]:
            if not n:
                continue
            w = width * n / top
            out.append(f'<rect x="{x:.1f}" y="{y}" width="{max(w, 1):.1f}" height="{bar_h}" '
                       f'fill="{COLORS[status]}"><title>{escape(name)}: {n:,} {status}</title></rect>')  # fmt: skip
            x += w
        out.append(f'<text x="{x + 6:.1f}" y="{y + bar_h - 5}">{r.planned:,}</text>')
    out.append("</svg>")
    return "".join(out)
