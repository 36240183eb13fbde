"""VERP: a return path per delivery, so that a bounce names the delivery it is about.

A message for delivery 42 goes out with the envelope sender (MAIL FROM)
``bounces+42-TOKEN@example.org`` instead of ``bounces@example.org``; every bounce,
delay notice and auto-reply comes back to that address, and the mailbox that receives
it records it (``Delivered-To``, ``X-Original-To``). The relay must deliver
``bounces+anything`` to ``bounces`` (Postfix: ``recipient_delimiter = +``).

TOKEN is the HMAC of the delivery id (``outreach.links.sign`` with the workspace's
secret key), written in lowercase base32: some servers fold the case of local parts,
so the token only uses characters that survive it (``a-z``, ``2-7``; the delivery id
in decimal). An address whose token does not verify (guessed, altered, from another
key) names no delivery.
"""

from __future__ import annotations

import base64
import re

from outreach.links import sign, verify

_PURPOSE = "verp"
_SIG_CHARS = 29  # 18 bytes of HMAC (links.sign) in unpadded base32
_TOKEN = re.compile(rf"^(?P<id>[0-9]{{1,18}})-(?P<sig>[a-z2-7]{{{_SIG_CHARS}}})$")
_MAX_LOCAL = 64  # RFC 5321 4.5.3.1.1


def _split(address: str) -> tuple[str, str]:
    """``local@domain`` of an address as written (``<...>`` and spaces taken off)."""
    text = address.strip().removeprefix("<").removesuffix(">").strip()
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"not an address: {address!r}")
    return local, domain


def _signature(key: bytes, delivery_id: int) -> str:
    raw = base64.urlsafe_b64decode(sign(key, _PURPOSE, str(delivery_id)))
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def verp_address(return_path: str, delivery_id: int, key: bytes) -> str:
    """``local+ID-TOKEN@domain`` for ``return_path`` ``local@domain``.

    >>> verp_address("bounces@example.org", 42, b"k")  # doctest: +ELLIPSIS
    'bounces+42-...@example.org'
    """
    if delivery_id < 0:
        raise ValueError("a delivery id is not negative")
    local, domain = _split(return_path)
    if "+" in local:
        raise ValueError(f"the return path's local part already holds '+': {return_path!r}")
    verp_local = f"{local}+{delivery_id}-{_signature(key, delivery_id)}"
    if len(verp_local) > _MAX_LOCAL:
        raise ValueError(f"the return path's local part is too long for VERP: {local!r}")
    return f"{verp_local}@{domain}"


def verp_delivery(address: str, return_path: str, key: bytes) -> int | None:
    """The delivery id that ``address`` names, or None when it is not a VERP form of
    ``return_path`` or its token does not verify. Case is ignored throughout.
    Raises ValueError only for a ``return_path`` that is not an address."""
    local, domain = _split(return_path)
    try:
        got_local, got_domain = _split(address)
    except ValueError:
        return None
    if got_domain.lower() != domain.lower():
        return None
    prefix = f"{local}+".lower()
    got_local = got_local.lower()
    if not got_local.startswith(prefix):
        return None
    match = _TOKEN.match(got_local[len(prefix) :])
    if match is None:
        return None
    delivery_id = int(match["id"])
    try:
        digest = base64.b32decode(match["sig"].upper() + "===")
    except ValueError:
        return None
    if base64.b32encode(digest).decode("ascii").rstrip("=").lower() != match["sig"]:
        return None  # a last character whose unused bits were changed
    urlsafe = base64.urlsafe_b64encode(digest).decode("ascii")
    return delivery_id if verify(key, urlsafe, _PURPOSE, str(delivery_id)) else None


def delivery_of(
    candidates: tuple[str, ...] | list[str], return_path: str, key: bytes
) -> int | None:
    """The delivery named by the first candidate address that is a verified VERP form
    of ``return_path`` (give it ``Finding.envelope_recipients``)."""
    for address in candidates:
        found = verp_delivery(address, return_path, key)
        if found is not None:
            return found
    return None
