"""Links in messages that point back at outreach: unsubscribe and view online.

Each carries an HMAC of what it names, so that nobody can unsubscribe someone else
by editing a URL. The key comes from OUTREACH_SECRET_KEY; without it, one is made
once and kept in the workspace's state folder (never in git).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from outreach.config import Settings

_KEY_FILE = "secret_key"


def secret_key(settings: Settings) -> bytes:
    if settings.secret_key:
        return settings.secret_key.encode("utf-8")
    path = settings.state_dir / _KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
    return Path(path).read_text().strip().encode("utf-8")


def sign(key: bytes, *parts: str) -> str:
    digest = hmac.new(key, "\x1f".join(parts).encode("utf-8"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode("ascii")


def verify(key: bytes, token: str, *parts: str) -> bool:
    return hmac.compare_digest(sign(key, *parts), token)


class Links:
    def __init__(self, settings: Settings) -> None:
        self.base = settings.public_url.rstrip("/")
        self.key = secret_key(settings)

    def unsubscribe(self, campaign: str, contact_id: int) -> str:
        token = sign(self.key, "unsubscribe", campaign, str(contact_id))
        return f"{self.base}/u/{campaign}/{contact_id}/{token}"

    def view_online(self, campaign: str, step: str, contact_id: int) -> str:
        token = sign(self.key, "view", campaign, step, str(contact_id))
        return f"{self.base}/v/{campaign}/{step}/{contact_id}/{token}"

    def for_contact(self, campaign: str, step: str, contact_id: int) -> dict[str, str]:
        return {
            "unsubscribe_url": self.unsubscribe(campaign, contact_id),
            "view_in_browser_url": self.view_online(campaign, step, contact_id),
        }
