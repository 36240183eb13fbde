"""Staff of the web pages, as values: roles, names and what a password must be."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from outreach.domain.errors import OutreachError

ROLES = ("viewer", "operator", "admin")  # each may do what the ones before it may
NAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # hashing has a cost: nobody gets to make the server hash a megabyte


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    created_at: datetime

    def may(self, role: str) -> bool:
        """Whether the user's role is ``role`` or above it."""
        return ROLES.index(self.role) >= ROLES.index(role)


def user_name(name: str) -> str:
    """A user name as stored: lower case; letters, digits and ``. _ @ -``."""
    key = name.strip().casefold()
    if not NAME.fullmatch(key):
        raise OutreachError(f"{name!r} is not a user name", code="bad_user_name",
                            hint="letters, digits and . _ @ - (up to 64), starting with a letter or digit")  # fmt: skip
    return key


def password_problem(password: str) -> str | None:
    """Why a password cannot be used, or None."""
    if len(password) < MIN_PASSWORD:
        return f"a password needs at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"a password has at most {MAX_PASSWORD} characters"
    if password != password.strip() or any(not c.isprintable() for c in password):
        return "a password may not start or end with a space, nor hold control characters"
    return None
