"""What keeps the web pages safe: keys of their own, the session cookie, CSRF
tokens, the limit on failed sign-ins, and the headers every response carries.

The workspace's secret key signs unsubscribe and view-online links; the web derives
its own keys from it with HMAC, so that a link's token and a cookie never share one."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SESSION_COOKIE = "outreach_session"
LOGIN_COOKIE = "outreach_login"  # the sign-in form's own CSRF proof, before any session
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"

# Pages of outreach itself: scripts and styles only from /static, never inline.
STAFF_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
             "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")  # fmt: skip
# An email or a press release as its readers see it: its inline styles and remote
# images, and no script of any kind.
DOCUMENT_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; "
                "font-src https: data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")  # fmt: skip


def derive(key: bytes, purpose: str) -> bytes:
    """A key for one purpose, from the workspace's secret key."""
    return hmac.new(key, f"outreach web: {purpose}".encode(), hashlib.sha256).digest()


@dataclass(frozen=True)
class Keys:
    """The session cookie's signer and the CSRF tokens, from one secret key."""

    secret: bytes

    @classmethod
    def from_secret(cls, secret: bytes) -> Keys:
        return cls(derive(secret, "sessions"))

    def _serializer(self) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self.secret, salt="outreach.session")

    def cookie(self, token: str) -> str:
        return self._serializer().dumps(token)

    def token(self, cookie: str | None, max_age: float) -> str | None:
        """The session token of a cookie signed here, not older than ``max_age``."""
        if not cookie:
            return None
        try:
            value = self._serializer().loads(cookie, max_age=int(max_age) + 1)
        except BadSignature:  # also SignatureExpired
            return None
        return value if isinstance(value, str) else None

    def csrf(self, proof: str) -> str:
        """The CSRF token that goes with a session token (or a sign-in form's nonce)."""
        return hmac.new(self.secret, f"csrf\x1f{proof}".encode(), hashlib.sha256).hexdigest()[:40]

    def csrf_ok(self, proof: str | None, given: object) -> bool:
        return bool(proof) and isinstance(given, str) and hmac.compare_digest(self.csrf(proof), given)  # type: ignore[arg-type]

    def login_nonce(self) -> tuple[str, str]:
        """A fresh nonce for the sign-in form: (signed, for its cookie; the plain one)."""
        nonce = secrets.token_urlsafe(16)
        return URLSafeTimedSerializer(self.secret, salt="outreach.login").dumps(nonce), nonce

    def login_proof(self, cookie: str | None) -> str | None:
        if not cookie:
            return None
        try:
            value = URLSafeTimedSerializer(self.secret, salt="outreach.login").loads(cookie, max_age=3600)
        except BadSignature:
            return None
        return value if isinstance(value, str) else None


@dataclass
class LoginLimiter:
    """Failed sign-ins counted per user name and per client address over ``window``
    seconds: at ``attempts`` for a name (or four times as many from one address: an
    office behind one address has several people) sign-ins are refused until the
    oldest failure ages out. The counts live in this process (bounded: the oldest keys
    go first)."""

    attempts: int = 5
    window: float = 900.0
    max_keys: int = 10_000
    _failures: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)

    def _limit(self, key: str) -> int:
        return self.attempts * 4 if key.startswith("ip:") else self.attempts

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def wait(self, client: str, name: str) -> float:
        """Seconds until a sign-in from ``client`` as ``name`` may be tried (0: now)."""
        now = time.monotonic()
        waits = [times[0] + self.window - now for key in (f"ip:{client}", f"name:{name.casefold()}")
                 if len(times := self._recent(key, now)) >= self._limit(key)]  # fmt: skip
        return max(waits, default=0.0)

    def failed(self, client: str, name: str) -> None:
        now = time.monotonic()
        for key in (f"ip:{client}", f"name:{name.casefold()}"):
            times = self._recent(key, now)
            times.append(now)
            self._failures[key] = times
            self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    def succeeded(self, name: str) -> None:
        self._failures.pop(f"name:{name.casefold()}", None)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of this site, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


class SecurityHeaders:
    """Pure ASGI middleware: every response gets the security headers (a response that
    sets its own Content-Security-Policy or Cache-Control keeps it)."""

    def __init__(self, app: ASGIApp, *, https: bool = False) -> None:
        self.app = app
        self.headers = _HEADERS + ([(b"strict-transport-security", b"max-age=31536000")] if https else [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                have = {name.lower() for name, _ in headers}
                for name, value in self.headers:
                    if name not in have:
                        headers.append((name, value))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


_HEADERS = [
    (b"content-security-policy", STAFF_CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    (b"cache-control", b"no-store"),
]


_LINK = re.compile(r"^(/[uv]/(?:[^/?]+/)+)[^/?]+")


def redact_path(path: str) -> str:
    """A request path as a log may keep it: an unsubscribe or view-online link's
    token (its last part) masked."""
    return _LINK.sub(r"\1***", path)


class RedactLinks(logging.Filter):
    """For uvicorn's access log: link tokens never reach a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_path(args[2]), *args[3:])
        return True


class BodyLimit:
    """Pure ASGI middleware: a request body over ``limit`` bytes is refused (413 when
    its length is announced; a body sent in chunks is cut off there), so that nobody
    makes the server read or parse a body of any size before anything is checked."""

    def __init__(self, app: ASGIApp, *, limit: int = 256 * 1024) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.limit:
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")]})  # fmt: skip
            await send({"type": "http.response.body", "body": b"request body too large"})
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # the page's error handler answers 413
                    raise HTTPException(413, "request body too large")
            return message

        await self.app(scope, limited, send)
