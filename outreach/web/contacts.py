"""A contact: their fields, their consent status with its whole history, and
everything sent to them (the log's events for their address, newest first, a page at
a time)."""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from outreach import review
from outreach.web.app import web_of
from outreach.web.auth import staff
from outreach.web.log import PAGE, before_of


@staff("viewer")
def find(request: Request) -> Response:
    """Look a contact up by address."""
    web = web_of(request)
    address = request.query_params.get("email", "").strip()
    if address and web.services.contacts.get(address) is not None:
        return RedirectResponse(f"/contacts/{quote(address, safe='@')}", status_code=303)
    return web.page(request, "contacts.html", address=address, missing=bool(address))


@staff("viewer")
def contact(request: Request) -> Response:
    web = web_of(request)
    address = request.path_params["address"]
    found = web.services.contacts.get(address)
    if found is None:
        return web.page(request, "contacts.html", 404, address=address, missing=True)
    history = web.consent.history(found.id)
    events, cursor = review.log_page(web.services, review.LogFilter(contact=found.email),
                                     before=before_of(request), limit=PAGE)  # fmt: skip
    here = f"/contacts/{quote(found.email, safe='@')}"
    return web.page(request, "contact.html", contact=found, history=history, events=events,
                    older=f"{here}?before={cursor}" if cursor is not None else None,
                    detail=review.detail)  # fmt: skip


ROUTES = [
    Route("/contacts", find, methods=["GET"]),
    Route("/contacts/{address:path}", contact, methods=["GET"]),
]
