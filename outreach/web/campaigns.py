"""Campaigns: every scheduled one with its approval, next firing and counts; one
campaign's timeline (planned against actual), counts per step and wave, failures by
reason and what was published; its report; and what staff may do to it, with the
CLI's rules (``outreach.control``): approve and cancel (admin), pause and resume
(operator)."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from outreach import control, review
from outreach.review.html import status_svg, timeline_svg
from outreach.review.render import lag
from outreach.web.app import web_of
from outreach.web.auth import staff
from outreach.web.security import DOCUMENT_CSP

DONE = {
    "approved": "Approved: held steps within their grace have fired.",
    "paused": "Paused: nothing more goes out until it is resumed.",
    "resumed": "Resumed.",
    "cancelled": "Cancelled: its jobs are gone and unsent deliveries skipped.",
}


def _summary(status: review.CampaignStatus, stored: dict[str, Any]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for row in status.steps:
        for key, n in row.counts.items():
            counts[key] = counts.get(key, 0) + n
    upcoming = [r.next_firing for r in status.steps if r.next_firing is not None]
    return {"id": status.id, "name": status.name, "state": stored["status"], "problem": status.problem,
            "approved_by": status.approved_by, "approved_at": status.approved_at,
            "scheduled_by": stored.get("scheduled_by"), "counts": dict(sorted(counts.items())),
            "next_firing": min(upcoming, default=None), "steps": len(status.steps)}  # fmt: skip


@staff("viewer")
def campaigns(request: Request) -> Response:
    services = web_of(request).services
    rows = [_summary(c, services.outbox.campaign(c.id) or {"status": "?"})
            for c in review.campaign_status(services)]  # fmt: skip
    return web_of(request).page(request, "campaigns.html", campaigns=rows)


@staff("viewer")
def campaign(request: Request) -> Response:
    web = web_of(request)
    cid = request.path_params["campaign"]
    report = review.campaign_report(web.services, cid)
    statuses = review.campaign_status(web.services, cid)
    stored = web.services.outbox.campaign(cid) or {"status": "?"}
    summary = _summary(statuses[0], stored) if statuses else None
    firing = {r.step.key: r.next_firing for s in statuses for r in s.steps}
    done = DONE.get(request.query_params.get("done", ""))
    # the report's own charts (inline SVG, escaped where they quote anything)
    charts = Markup(timeline_svg(report) + status_svg(report))
    return web.page(request, "campaign.html", report=report, summary=summary, firing=firing,
                    done=done, lag=lag, charts=charts)  # fmt: skip


@staff("viewer")
def report(request: Request) -> Response:
    """The report as a page of its own (``review.render_report``'s html)."""
    services = web_of(request).services
    page = review.render_report(review.campaign_report(services, request.path_params["campaign"]), "html")
    return HTMLResponse(page, headers={"content-security-policy": DOCUMENT_CSP})


def _back(cid: str, done: str) -> Response:
    return RedirectResponse(f"/campaigns/{cid}?done={done}", status_code=303)


@staff("admin")
def approve(request: Request) -> Response:
    cid = request.path_params["campaign"]
    control.approve_campaign(web_of(request).services, cid, request.state.user.name)
    return _back(cid, "approved")


@staff("admin")
def cancel(request: Request) -> Response:
    cid = request.path_params["campaign"]
    control.cancel_campaign(web_of(request).services, cid)
    return _back(cid, "cancelled")


@staff("operator")
def pause(request: Request) -> Response:
    cid = request.path_params["campaign"]
    control.pause_campaign(web_of(request).services, cid)
    return _back(cid, "paused")


@staff("operator")
def resume(request: Request) -> Response:
    cid = request.path_params["campaign"]
    control.resume_campaign(web_of(request).services, cid)
    return _back(cid, "resumed")


ROUTES = [
    Route("/campaigns", campaigns, methods=["GET"]),
    Route("/campaigns/{campaign}", campaign, methods=["GET"]),
    Route("/campaigns/{campaign}/report", report, methods=["GET"]),
    Route("/campaigns/{campaign}/approve", approve, methods=["POST"]),
    Route("/campaigns/{campaign}/pause", pause, methods=["POST"]),
    Route("/campaigns/{campaign}/resume", resume, methods=["POST"]),
    Route("/campaigns/{campaign}/cancel", cancel, methods=["POST"]),
]
