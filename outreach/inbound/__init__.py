"""Mail that comes back: bounces (DSN, RFC 3464, and the non-standard formats),
complaints (ARF, RFC 5965) and automatic replies (RFC 3834), read from a mailbox and
interpreted. No database, settings or CLI here: the caller stores the findings.

    from outreach.inbound import ImapMailbox, interpret, delivery_of

    with ImapMailbox("imaps://bounces@mail.example.org/INBOX", password) as box:
        for message in box.messages():
            finding = interpret(message.raw)           # never raises
            delivery = delivery_of(finding.envelope_recipients, "bounces@example.org", key)
            ...store (finding.content_hash makes a message read twice one event)...
            message.mark_processed()                   # only once it is stored

``read_paths(["/var/mail/bounces", "old.mbox", "-"])`` yields the same messages from a
Maildir, an mbox, .eml files or standard input. ``verp_address`` gives a delivery its
own return path, ``verp_delivery`` reads it back (None for a token that does not verify).
"""

from outreach.inbound.finding import Finding, Kind, Recipient
from outreach.inbound.imap import ImapMailbox
from outreach.inbound.interpret import content_hash, interpret
from outreach.inbound.message import InboundError, InboundMessage
from outreach.inbound.readers import PROCESSED, read_paths
from outreach.inbound.verp import delivery_of, verp_address, verp_delivery

__all__ = [
    "PROCESSED",
    "Finding",
    "ImapMailbox",
    "InboundError",
    "InboundMessage",
    "Kind",
    "Recipient",
    "content_hash",
    "delivery_of",
    "interpret",
    "read_paths",
    "verp_address",
    "verp_delivery",
]
