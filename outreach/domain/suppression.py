"""What is kept of an erased address: a hash, keyed with the workspace's secret."""

from __future__ import annotations

import hashlib
import hmac

from outreach.domain.contact import email_key


def suppression_hash(email: str, key: bytes | None = None) -> str:
    """What the suppression list keeps of an erased address: no address, only a hash.

    With ``key`` (the workspace's secret key), HMAC-SHA256: without the key nobody can
    tell whether a given address is on the list. Without it, the unkeyed SHA-256 that
    erasures stored before keyed hashes; anyone with a list of addresses can match
    those, so they are no longer written, only still honoured.
    """
    data = email_key(email).encode("utf-8")
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def suppression_hashes(email: str, key: bytes | None) -> tuple[str, ...]:
    """Every form in which a suppression of ``email`` may be stored: keyed (when there
    is a key) and unkeyed (as older erasures stored it)."""
    if key is None:
        return (suppression_hash(email),)
    return (suppression_hash(email, key), suppression_hash(email))
