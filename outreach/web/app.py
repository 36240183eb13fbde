"""The web application: ``create_app(services)`` wires the routes of every page module,
the security headers and the error pages. Every route is either public (a handful,
named in ``auth.public``) or for signed-in staff with a role; a route that is neither
stops the application from being made at all."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from outreach.app import Services
from outreach.domain.errors import InputFileError, NotFoundError, OutreachError
from outreach.links import secret_key
from outreach.ports import Consent, Users
from outreach.web.security import BodyLimit, Keys, LoginLimiter, SecurityHeaders

HERE = Path(__file__).parent


@dataclass
class Web:
    """What every page needs: the services, the staff store, keys, the templates."""

    services: Services
    users: Users
    consent: Consent
    keys: Keys
    link_key: bytes  # the links' own key (unsubscribe, view online), never the cookies'
    limiter: LoginLimiter
    pages: jinja2.Environment
    secure: bool  # cookies only over HTTPS: public_url is https
    lifetime: float  # seconds a sign-in lasts

    def page(self, request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
        user = getattr(request.state, "user", None)
        html = self.pages.get_template(name).render(
            user=user, csrf=getattr(request.state, "csrf", ""), path=request.url.path, **values)  # fmt: skip
        return HTMLResponse(html, status_code=status)


def web_of(request: Request) -> Web:
    return request.app.state.web  # type: ignore[no-any-return]


def when(value: datetime | None, seconds: bool = False) -> str:
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def _pages() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )  # fmt: skip
    env.filters["when"] = when
    return env


def routes() -> list[BaseRoute]:
    from outreach.web import auth, campaigns, contacts, deliveries, log, public

    static = Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static")
    return [*public.ROUTES, *auth.ROUTES, *campaigns.ROUTES, *log.ROUTES, *contacts.ROUTES,
            *deliveries.ROUTES, static]  # fmt: skip


def create_app(services: Services) -> Starlette:
    """The ASGI application for ``services``' database and settings."""
    from outreach.web.auth import check_access

    settings = services.settings
    table = routes()
    check_access(table)
    app = Starlette(
        routes=table,
        middleware=[Middleware(SecurityHeaders, https=settings.public_url.startswith("https:")),
                    Middleware(BodyLimit)],
        exception_handlers={HTTPException: _http_error, OutreachError: _refused},  # type: ignore[dict-item]
    )  # fmt: skip
    key = secret_key(settings)
    app.state.web = Web(
        services=services,
        users=services.users, consent=services.consent,
        keys=Keys.from_secret(key), link_key=key,
        limiter=LoginLimiter(attempts=settings.login_attempts),
        pages=_pages(), secure=settings.public_url.startswith("https:"),
        lifetime=settings.session_lifetime,
    )  # fmt: skip
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    titles = {404: "Not found", 405: "Not allowed", 400: "Bad request", 413: "Too large"}
    said = exc.detail if exc.status_code == 400 else None  # ours: it names what was not understood
    return web_of(request).page(request, "error.html", exc.status_code,
                                title=titles.get(exc.status_code, "Error"), message=said)  # fmt: skip


async def _refused(request: Request, exc: Exception) -> Response:
    """What a lower layer refused, in its words (escaped like everything else)."""
    assert isinstance(exc, OutreachError)
    code = getattr(exc, "code", None)
    status = 404 if isinstance(exc, NotFoundError) else 400 if isinstance(exc, InputFileError) else 409
    title = {404: "Not found", 400: "Not understood"}.get(status, "Refused")
    return web_of(request).page(request, "error.html", status, title=title,
                                message=PHRASES.get(code or "", exc.message))  # fmt: skip


# What the lower layers refuse, said for a person at a web page (else their message).
PHRASES = {
    "four_eyes": "You scheduled this campaign, so someone else must approve it "
                 "(four-eyes approval is on in the settings).",
}
