"""Who may use a route: ``public`` for the few that recipients and monitors use, and
``staff(role)`` for the rest. A staff route answers an anonymous request with the
sign-in page (a page asked for by a browser) or 401, and a state-changing request
without the session's CSRF token, or from a role too low, with 403, before the page's
own code runs. Signing in and out."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from outreach.domain.users import ROLES
from outreach.web.app import web_of
from outreach.web.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    safe_next,
)

Endpoint = Callable[[Request], Any]
SAFE = ("GET", "HEAD")


def public(endpoint: Endpoint) -> Endpoint:
    """A route anyone may use: it proves what it does by itself (a signed link)."""
    endpoint.access = "public"  # type: ignore[attr-defined]
    return endpoint


def staff(role: str = "viewer") -> Callable[[Endpoint], Endpoint]:
    """A route for signed-in staff whose role is ``role`` or above."""
    assert role in ROLES

    def decorate(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            web = web_of(request)
            token = web.keys.token(request.cookies.get(SESSION_COOKIE), web.lifetime)
            user = await run_in_threadpool(web.users.session_user, token) if token else None
            if user is None or token is None:
                return _anonymous(request)
            request.state.user = user
            request.state.session = token
            request.state.csrf = web.keys.csrf(token)
            if request.method not in SAFE:
                form = await request.form()
                given = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
                if not web.keys.csrf_ok(token, given):
                    return web.page(request, "error.html", 403, title="Refused",
                                    message="This form has expired or did not come from outreach: "
                                    "reload the page and try again.")  # fmt: skip
            if not user.may(role):
                return web.page(request, "error.html", 403, title="Not allowed",
                                message=f"This needs the role {role}; {user.name} is {user.role}.")  # fmt: skip
            if inspect.iscoroutinefunction(endpoint):
                return await endpoint(request)  # type: ignore[no-any-return]
            return await run_in_threadpool(endpoint, request)  # type: ignore[no-any-return]

        guarded.access = role  # type: ignore[attr-defined]
        return guarded

    return decorate


def _anonymous(request: Request) -> Response:
    if request.method in SAFE and "text/html" in request.headers.get("accept", ""):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
    return PlainTextResponse("sign in first: /login", status_code=401)


def access_of(route: BaseRoute) -> str | None:
    """``public``, a role, or None for a route that says neither."""
    if isinstance(route, Mount):
        return "public" if route.path == "/static" else None
    return getattr(getattr(route, "endpoint", None), "access", None)


def check_access(table: Sequence[BaseRoute]) -> None:
    """Every route says who may use it; the application is not made otherwise."""
    unsaid = [getattr(r, "path", repr(r)) for r in table if access_of(r) is None]
    if unsaid:
        raise RuntimeError(f"routes that say neither public nor staff: {', '.join(unsaid)}")


# -- signing in and out ------------------------------------------------------------------


@public
async def login_form(request: Request) -> Response:
    web = web_of(request)
    token = web.keys.token(request.cookies.get(SESSION_COOKIE), web.lifetime)
    if token and await run_in_threadpool(web.users.session_user, token):
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    return _form(request, 200, None)


def _form(request: Request, status: int, error: str | None, headers: dict[str, str] | None = None,
          destination: str | None = None) -> Response:  # fmt: skip
    """The sign-in form; ``destination``: where to go once signed in (what a posted
    form asked for; else the query string's ``next``)."""
    web = web_of(request)
    signed, nonce = web.keys.login_nonce()
    wanted = destination or request.query_params.get("next")
    response = web.page(request, "login.html", status, error=error, login_csrf=web.keys.csrf(nonce),
                        next=safe_next(wanted))  # fmt: skip
    response.set_cookie(LOGIN_COOKIE, signed, max_age=3600, httponly=True, samesite="lax",
                        secure=web.secure, path="/login")  # fmt: skip
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


@public
async def login(request: Request) -> Response:
    """Sign in: the form's CSRF proof, the limit on failures, then the password."""
    web = web_of(request)
    form = await request.form()
    # where to go once signed in, kept through a failed try (the form posts to /login)
    destination = str(form.get("next") or "") or request.query_params.get("next", "")
    proof = web.keys.login_proof(request.cookies.get(LOGIN_COOKIE))
    if not web.keys.csrf_ok(proof, form.get(CSRF_FIELD)):
        return _form(request, 403, "The sign-in form expired: try again.", destination=destination)
    name = str(form.get("name") or "").strip()[:64]
    password = str(form.get("password") or "")
    client = request.client.host if request.client else "unknown"
    wait = web.limiter.wait(client, name)
    if wait > 0:
        return _form(request, 429, f"Too many failed sign-ins: try again in {int(wait) // 60 + 1} minute(s).",
                     {"Retry-After": str(int(wait) + 1)}, destination=destination)  # fmt: skip
    user = await run_in_threadpool(web.users.authenticate, name, password) if name and password else None
    if user is None:
        web.limiter.failed(client, name)
        return _form(request, 401, "Wrong name or password.", destination=destination)
    web.limiter.succeeded(name)
    token = await run_in_threadpool(web.users.open_session, user, web.lifetime)
    response = RedirectResponse(safe_next(destination), status_code=303)
    response.set_cookie(SESSION_COOKIE, web.keys.cookie(token), max_age=int(web.lifetime) + 1,
                        httponly=True, samesite="lax", secure=web.secure, path="/")  # fmt: skip
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@staff("viewer")
async def logout(request: Request) -> Response:
    web = web_of(request)
    await run_in_threadpool(web.users.close_session, request.state.session)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=web.secure)
    return response


@staff("viewer")
def home(request: Request) -> Response:
    return RedirectResponse("/campaigns", status_code=303)


ROUTES = [
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/", home, methods=["GET"]),
]

__all__ = ["ROUTES", "access_of", "check_access", "public", "staff"]
