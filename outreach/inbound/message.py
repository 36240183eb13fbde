"""What every mailbox reader yields, and the error they raise."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from outreach.domain.errors import OutreachError


class InboundError(OutreachError):
    """A mailbox cannot be read: a path that is not there or not a mailbox, an IMAP URL
    that is wrong, a server that refuses. ``code`` names which; never holds a password.

    Codes: inbound_path_missing, inbound_not_a_mailbox, inbound_read, imap_url,
    imap_insecure, imap_connect, imap_login, imap_folder, imap_command."""


@dataclass(frozen=True)
class InboundMessage:
    """One message as its mailbox holds it.

    ``mark_processed`` is None where the source cannot keep that a message was handled
    (an mbox file, an .eml file, stdin); there, reading again gives the same messages,
    which ``Finding.content_hash`` recognises. Call it only once the message's finding
    is stored: a crash before that reads the message again."""

    source: str  # where it is: "/var/mail/bounces/new/1409900409.M1P2.host", "imap://u@h:993/INBOX uid 17"
    raw: bytes = field(repr=False)
    mark_processed: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        return f"InboundMessage({self.source!r}, {len(self.raw)} bytes)"
