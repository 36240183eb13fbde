"""Links in messages that point back at outreach: unsubscribe and view online.

Each carries an HMAC of what it names, so that nobody can unsubscribe someone else
by editing a URL. The key comes from OUTREACH_SECRET_KEY; without it, one is made
once and kept in the workspace's state folder (never in git).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from outreach.config import Settings
from outreach.domain.urls import split_url

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


def is_loopback_host(host: str | None) -> bool:
    """localhost (and names under .localhost), 127.0.0.0/8, ::1 and ::ffff:127.x."""
    if not host:
        return False
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


def _host(url: str) -> str | None:
    try:
        return urlsplit(split_url(url).without_credentials()).hostname
    except ValueError:
        return None


def loopback_link_warning(settings: Settings) -> str | None:
    """A warning when unsubscribe and view-online links would point at this machine
    (public_url on a loopback address) while mail goes out through a relay elsewhere:
    recipients could not open them. None when the links are public or the mail stays
    local (no relay, or a relay on a loopback address)."""
    if not settings.smtp_url or not is_loopback_host(_host(settings.public_url)):
        return None
    relay = _host(settings.smtp_url)
    if relay is None or is_loopback_host(relay):
        return None
    origin = settings.origin.get("public_url", "default")
    origin = "the default" if origin == "default" else f"from {origin}"
    return (
        f"unsubscribe and view-online links point at {settings.public_url} (public_url, {origin}), "
        f"an address on this machine, while mail goes out through {relay}: recipients cannot "
        "open them. Set OUTREACH_PUBLIC_URL (or public_url under [web] in outreach.toml) to "
        "the address where outreach's web pages are served."
    )
