"""The routes anyone may use, and only these: the unsubscribe link (RFC 8058 one-click
included), the view-in-browser link, the newsroom, and the health check. A link's
HMAC is its proof: a forged, altered or unknown one gets 404 and changes nothing."""

from __future__ import annotations

import logging
import re
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route

from outreach.domain.errors import OutreachError
from outreach.domain.render import RenderedEmail
from outreach.links import verify
from outreach.rendering import render_email
from outreach.web.app import Web, web_of
from outreach.web.auth import public
from outreach.web.security import DOCUMENT_CSP

log = logging.getLogger("outreach.web")
_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.(html|atom)")
_TYPES = {"html": "text/html; charset=utf-8", "atom": "application/atom+xml; charset=utf-8"}


def _not_found(request: Request) -> Response:
    return web_of(request).page(request, "error.html", 404, title="Not found",
                                message="This link is not valid (it may have been cut or changed).")  # fmt: skip


def masked(address: str) -> str:
    """An address as a page for whoever holds the link shows it: a***@example.org."""
    local, _at, domain = address.rpartition("@")
    return f"{local[:1]}***@{domain}" if local else address


# -- unsubscribe ---------------------------------------------------------------------------


def _unsubscribe_link(request: Request) -> tuple[str, int] | None:
    """(campaign, contact id) of a genuine unsubscribe link, else None."""
    campaign, contact_id = request.path_params["campaign"], request.path_params["contact_id"]
    token = request.path_params["token"]
    if not verify(web_of(request).link_key, token, "unsubscribe", campaign, str(contact_id)):
        return None
    return campaign, contact_id


def _recipient(web: Web, campaign: str, contact_id: int) -> dict[str, Any] | None:
    address = web.consent.address(contact_id)
    contact = web.services.contacts.get(address) if address else None
    if contact is None:
        return None
    stored = web.services.outbox.campaign(campaign)
    return {"address": masked(contact.email), "state": contact.status,
            "campaign": stored["name"] if stored else campaign}  # fmt: skip


@public
async def unsubscribe_page(request: Request) -> Response:
    """The link opened: a page with a button. Nothing changes (mail scanners fetch links)."""
    link = _unsubscribe_link(request)
    web = web_of(request)
    found = await run_in_threadpool(_recipient, web, *link) if link else None
    if found is None:
        return _not_found(request)
    return web.page(request, "unsubscribe.html", **found, done=False)


@public
async def unsubscribe(request: Request) -> Response:
    """RFC 8058 one-click (``List-Unsubscribe=One-Click``, sent by the mail provider), or
    the page's button: unsubscribed at once; again, nothing more happens."""
    link = _unsubscribe_link(request)
    if link is None:
        return _not_found(request)
    form = await request.form()
    if form.get("List-Unsubscribe") == "One-Click" or (
            not form and b"List-Unsubscribe=One-Click" in await request.body()):  # fmt: skip
        via = "one-click"
    elif form.get("unsubscribe") == "yes":
        via = "page"
    else:
        return PlainTextResponse("expected List-Unsubscribe=One-Click", status_code=400)
    web = web_of(request)
    done = await run_in_threadpool(web.consent.unsubscribe, link[1], link[0], via)
    if done is None:
        return _not_found(request)
    found = await run_in_threadpool(_recipient, web, *link)
    return web.page(request, "unsubscribe.html", **(found or {}), done=True)


# -- the email as its recipient got it -------------------------------------------------------


def _render(web: Web, campaign: str, step_key: str, contact_id: int) -> RenderedEmail | None:
    services = web.services
    step = services.outbox.step_by_key(campaign, step_key)
    address = web.consent.address(contact_id)
    contact = services.contacts.get(address) if address else None
    if step is None or step.channel != "email" or contact is None:
        return None
    # the templates as they are stored now (a long-running server must see a new
    # snapshot): the services' caches are left out, the rest shared
    fresh = services.fresh()
    urls = services.links.for_contact(campaign, step.key, contact.id)
    return render_email(fresh.library_for(step), step, fresh.campaign(campaign), contact, urls)


@public
async def view_online(request: Request) -> Response:
    campaign, step_key = request.path_params["campaign"], request.path_params["step"]
    contact_id, token = request.path_params["contact_id"], request.path_params["token"]
    web = web_of(request)
    if not verify(web.link_key, token, "view", campaign, step_key, str(contact_id)):
        return _not_found(request)
    try:
        email = await run_in_threadpool(_render, web, campaign, step_key, contact_id)
    except OutreachError as exc:
        log.warning("view online: %s %s cannot be rendered: %s", campaign, step_key, exc.message)
        return web.page(request, "error.html", 503, title="Not available",
                        message="This message cannot be shown at the moment.")  # fmt: skip
    if email is None:
        return _not_found(request)
    if email.html is not None:
        return HTMLResponse(email.html, headers={"content-security-policy": DOCUMENT_CSP})
    return web.page(request, "email_text.html", email=email)


# -- the newsroom, as published ----------------------------------------------------------


@public
def newsroom(request: Request) -> Response:
    folder, _url = web_of(request).services.settings.newsroom
    name = request.path_params.get("name", "index.html")
    match = _FILE.fullmatch(name)
    path = folder / name
    try:
        inside = path.resolve().parent == folder.resolve() and path.is_file()
    except OSError:
        inside = False
    if match is None or not inside:
        return web_of(request).page(request, "error.html", 404, title="Not found",
                                    message="Nothing is published at this address.")  # fmt: skip
    return FileResponse(path, media_type=_TYPES[match[1]],
                        headers={"content-security-policy": DOCUMENT_CSP, "cache-control": "public, max-age=60"})  # fmt: skip


@public
def newsroom_root(request: Request) -> Response:
    return RedirectResponse("/newsroom/", status_code=301)


@public
async def healthz(request: Request) -> Response:
    """200 when the database answers (schema included), else 503; no details."""
    try:
        await run_in_threadpool(web_of(request).services.healthy)
    except Exception as exc:  # any failure is "not healthy"; the log says which
        log.warning("health check: the database does not answer: %s", type(exc).__name__)
        return PlainTextResponse("database unavailable", status_code=503)
    return PlainTextResponse("ok")


ROUTES = [
    Route("/u/{campaign}/{contact_id:int}/{token}", unsubscribe_page, methods=["GET"]),
    Route("/u/{campaign}/{contact_id:int}/{token}", unsubscribe, methods=["POST"]),
    Route("/v/{campaign}/{step}/{contact_id:int}/{token}", view_online, methods=["GET"]),
    Route("/newsroom", newsroom_root, methods=["GET"]),
    Route("/newsroom/", newsroom, methods=["GET"]),
    Route("/newsroom/{name}", newsroom, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
]
