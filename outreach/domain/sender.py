"""Who an email is from: one address, with an optional display name."""

from __future__ import annotations

from email.utils import parseaddr

from outreach.domain.errors import ConfigError

HINT = ('set OUTREACH_FROM, email.from in outreach.toml or campaign.from in the plan, '
        'e.g. "COP team" <cop@example.org> (quote a name that has a comma)')  # fmt: skip


def sender_problem(given: str | None) -> str | None:
    """Why ``given`` cannot be the From of an email, or None."""
    if not given:
        return "no sender address for email"
    _name, addr = parseaddr(given)
    if not addr or "@" not in addr or any(ch in given for ch in "\r\n"):
        return f"the sender {given!r} is not one email address"
    return None


def parse_sender(given: str | None) -> tuple[str | None, str]:
    """(display name or None, address); ConfigError when it is not one address."""
    problem = sender_problem(given)
    if problem:
        raise ConfigError(problem, hint=HINT)
    name, addr = parseaddr(given or "")
    return name or None, addr
