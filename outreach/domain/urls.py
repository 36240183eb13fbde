"""The credentials in a service URL (``OUTREACH_DATABASE_URL``, ``OUTREACH_SMTP_URL``),
found the same way wherever a URL is read or shown.

A password is often pasted as it is, with ``@``, ``:``, ``/`` or ``#`` in it, where a
URL wants them percent-encoded; a URL parser then ends the password early and takes
the rest for the host, the port or a fragment, and shows it. Here the credentials
are everything between ``scheme://`` and the URL's **last** ``@``: a password may
hold any character, and an ``@`` elsewhere in the URL (a query value) is written
``%40``. A URL whose part after ``//`` starts with ``/`` (``sqlite:////path``) has
no credentials.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


@dataclass(frozen=True, repr=False)
class UrlParts:
    scheme: str  # "postgresql+psycopg"; "" when the text has no scheme://
    userinfo: str | None  # as written: "user:p@ss/w#rd", None when there is none
    rest: str  # host, port, path and query: "db.example.org:5432/outreach"

    def __repr__(self) -> str:  # never shows the password
        return f"UrlParts({mask_url(self.joined())!r})"

    @property
    def username(self) -> str | None:
        if self.userinfo is None:
            return None
        return unquote(self.userinfo.partition(":")[0]) or None

    @property
    def password(self) -> str | None:
        if self.userinfo is None or ":" not in self.userinfo:
            return None
        return unquote(self.userinfo.partition(":")[2])

    def joined(self) -> str:
        at = f"{self.userinfo}@" if self.userinfo is not None else ""
        return f"{self.scheme}://{at}{self.rest}" if self.scheme else f"{at}{self.rest}"

    def without_credentials(self) -> str:
        return f"{self.scheme}://{self.rest}" if self.scheme else self.rest


def split_url(url: str) -> UrlParts:
    """``url`` as scheme, credentials (up to the last ``@``) and the rest."""
    match = _SCHEME.match(url)
    scheme, after = (match.group(1), url[match.end() :]) if match else ("", url)
    at = after.rfind("@")
    if not match or at < 0 or after.startswith("/"):
        return UrlParts(scheme, None, after)
    return UrlParts(scheme, after[:at], after[at + 1 :])


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` whatever it holds
    (``smtp://user:***@relay:587``); the user name stays when it is plainly one."""
    parts = split_url(url)
    if parts.userinfo is None:
        return url
    user, sep, _password = parts.userinfo.partition(":")
    shown = f"{user}:***" if sep else user
    return UrlParts(parts.scheme, shown, parts.rest).joined()


def has_password(url: str) -> bool:
    return split_url(url).password is not None
