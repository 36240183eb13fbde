"""Staff of the web pages: accounts with a role and an argon2 hash of their password
(never the password), their sign-ins (only a SHA-256 of each session's token is kept,
so a copy of the database opens no session), and who scheduled a campaign (the
four-eyes rule reads it)."""

from __future__ import annotations

import functools
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from outreach.db.models import campaigns, users, utcnow, web_sessions
from outreach.db.patience import Patience, patient
from outreach.db.repository import Repository
from outreach.domain.errors import NotFoundError, OutreachError
from outreach.domain.users import MAX_PASSWORD, ROLES, User, password_problem, user_name

# OWASP's argon2id parameters (19 MiB, 2 passes, 1 lane): argon2-cffi's default takes
# 64 MiB a hash, which a server signing people in pays in peak memory. A hash made with
# other parameters still verifies, and is made again at its next sign-in.
_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)


@functools.cache
def _dummy() -> str:
    """Verified against when the name is unknown, so that the answer takes as long."""
    return _hasher.hash(secrets.token_urlsafe(16))


def _checked(password: str) -> str:
    problem = password_problem(password)
    if problem:
        raise OutreachError(problem, code="bad_password")
    return _hasher.hash(password)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def _user(row) -> User:  # type: ignore[no-untyped-def]
    return User(row.id, row.name, row.role, row.created_at)


@patient
@dataclass
class SqlUsers(Repository):
    engine: Engine
    clock: Callable[[], datetime] = utcnow
    patience: Patience = field(default_factory=lambda: Patience(limit=10.0))


    # -- accounts ----------------------------------------------------------------------
    def add(self, name: str, role: str, password: str) -> User:
        key = user_name(name)
        if role not in ROLES:
            raise OutreachError(f"no role {role!r}", code="bad_role", hint=f"roles: {', '.join(ROLES)}")
        hashed = _checked(password)
        now = self.clock()
        try:
            with self._write() as conn, conn.begin():
                conn.execute(insert(users).values(name=key, role=role, password_hash=hashed,
                                                  created_at=now, updated_at=now))  # fmt: skip
        except IntegrityError:
            raise OutreachError(f"there is a user {key} already", code="user_exists", user=key) from None
        found = self.get(key)
        assert found is not None
        return found

    def get(self, name: str) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.name == name.strip().casefold())).first()
        return _user(row) if row else None

    def require(self, name: str) -> User:
        """The user of that name, or an error that names the known ones."""
        found = self.get(name)
        if found is None:
            raise self._unknown(name)
        return found

    def all(self) -> list[User]:
        with self.engine.connect() as conn:
            return [_user(r) for r in conn.execute(select(users).order_by(users.c.name))]

    def set_password(self, name: str, password: str) -> None:
        """A new password; every session of the user ends."""
        hashed = _checked(password)
        with self._write() as conn, conn.begin():
            row = conn.execute(select(users.c.id).where(users.c.name == name.strip().casefold())).first()
            if row is None:
                raise self._unknown(name)
            conn.execute(update(users).where(users.c.id == row.id)
                         .values(password_hash=hashed, updated_at=self.clock()))  # fmt: skip
            conn.execute(delete(web_sessions).where(web_sessions.c.user_id == row.id))

    def remove(self, name: str) -> None:
        """The user goes, and every session of theirs with them."""
        with self._write() as conn, conn.begin():
            gone = conn.execute(delete(users).where(users.c.name == name.strip().casefold())).rowcount
            if not gone:
                raise self._unknown(name)

    def _unknown(self, name: str) -> NotFoundError:
        known = [u.name for u in self.all()]
        return NotFoundError(f"no user {name!r}" + (f" (users: {', '.join(known)})" if known else " (there is none yet)"),
                             code="unknown_user", user=name)  # fmt: skip

    def authenticate(self, name: str, password: str) -> User | None:
        """The user, when the password is theirs; None otherwise (an unknown name takes
        as long to refuse as a wrong password)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.name == name.strip().casefold())).first()
        hashed = row.password_hash if row is not None else _dummy()
        try:
            _hasher.verify(hashed, password[:MAX_PASSWORD])
        except (VerificationError, InvalidHashError):
            return None
        if row is None:
            return None
        if _hasher.check_needs_rehash(hashed):  # the same text as verified
            with self._write() as conn, conn.begin():
                conn.execute(update(users).where(users.c.id == row.id, users.c.password_hash == hashed)
                             .values(password_hash=_hasher.hash(password[:MAX_PASSWORD])))  # fmt: skip
        return _user(row)

    # -- sign-ins ----------------------------------------------------------------------
    def open_session(self, user: User, lifetime: float) -> str:
        """A new session for ``user`` lasting ``lifetime`` seconds: its token (kept only
        as a hash). Expired sessions are swept away."""
        token = secrets.token_urlsafe(32)
        now = self.clock()
        with self._write() as conn, conn.begin():
            conn.execute(delete(web_sessions).where(web_sessions.c.expires_at <= now))
            conn.execute(insert(web_sessions).values(
                id=_digest(token), user_id=user.id, created_at=now,
                expires_at=now + timedelta(seconds=lifetime)))  # fmt: skip
        return token

    def session_user(self, token: str) -> User | None:
        """The user of a session that has not expired (nor been closed)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(users).join(web_sessions, web_sessions.c.user_id == users.c.id)
                .where(web_sessions.c.id == _digest(token), web_sessions.c.expires_at > self.clock())
            ).first()  # fmt: skip
        return _user(row) if row else None

    def close_session(self, token: str) -> None:
        with self._write() as conn, conn.begin():
            conn.execute(delete(web_sessions).where(web_sessions.c.id == _digest(token)))

    def ping(self) -> None:
        """A read that needs the database up and its schema current (a health check)."""
        with self.engine.connect() as conn:
            conn.execute(select(users.c.id).limit(1)).all()

    # -- who scheduled a campaign -----------------------------------------------------
    def set_scheduled_by(self, campaign_id: str, by: str) -> None:
        with self._write() as conn, conn.begin():
            conn.execute(update(campaigns).where(campaigns.c.id == campaign_id).values(scheduled_by=by))
