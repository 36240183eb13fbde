"""The standard reports: delivery status notifications (DSN, RFC 3464, and its
internationalised form RFC 6533) and abuse feedback reports (ARF, RFC 5965), read
field by field from a message parsed with the standard library (compat32).

Each reader returns the recipients the report is about; the report part and the
returned message (``message/rfc822``, ``text/rfc822-headers`` and their ``global``
forms) are found by walking the MIME tree, wherever a mail system nested them.
"""

from __future__ import annotations

import re
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses

from outreach.inbound.finding import Kind, Recipient

DSN_TYPES = ("message/delivery-status", "message/global-delivery-status")
ARF_TYPE = "message/feedback-report"
MDN_TYPES = ("message/disposition-notification", "message/global-disposition-notification")
RETURNED_MESSAGE = ("message/rfc822", "message/global")
RETURNED_HEADERS = ("text/rfc822-headers", "message/global-headers")

STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_ANGLED = re.compile(r"<[^<>\s]+>")
_DIAGNOSTIC_LIMIT = 1000


class ReportError(ValueError):
    """A report that names what it is but cannot be read as one."""


def header(msg: Message, name: str) -> str | None:
    """A header's value on one line (folding undone, runs of spaces as one), or None."""
    value = msg.get(name)
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def message_id_of(value: str | None) -> str | None:
    """The first ``<...>`` of a Message-ID-like field; the bare value when it has none."""
    if not value:
        return None
    found = _ANGLED.search(value)
    if found:
        return found.group(0)
    bare = value.strip()
    return f"<{bare}>" if bare and " " not in bare and "@" in bare else None


def bare_address(value: str | None) -> str | None:
    """``rfc822; <a@b>`` or ``<a@b>`` or ``Name <a@b>`` -> ``a@b``."""
    if not value:
        return None
    _kind, sep, rest = value.partition(";")
    text = (rest if sep else value).strip()
    if "<" in text and ">" in text:
        text = text[text.index("<") + 1 : text.rindex(">")]
    text = text.strip().strip("<>").strip()
    return text if "@" in text and " " not in text else None


def first_part(msg: Message, types: tuple[str, ...]) -> Message | None:
    for part in msg.walk():
        if part.get_content_type() in types:
            return part
    return None


def returned_headers(msg: Message) -> Message | None:
    """The header block of the message that came back, from a ``message/rfc822`` part
    (or ``message/global``) or a ``text/rfc822-headers`` part (or ``message/global-headers``)."""
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in RETURNED_MESSAGE:
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
            if isinstance(payload, str):
                return HeaderParser().parsestr(payload, headersonly=True)
        elif ctype in RETURNED_HEADERS:
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                return HeaderParser().parsestr(payload.decode("utf-8", "replace"), headersonly=True)
    return None


def _blocks(part: Message) -> list[Message]:
    """The field blocks of a ``message/*-status`` or feedback part: compat32 parses
    ``delivery-status`` into a list of blocks and any other ``message/*`` type into one
    message whose body holds the blocks after the first."""
    payload = part.get_payload()
    if not isinstance(payload, list):
        text = payload if isinstance(payload, str) else ""
        return _split_blocks(text)
    blocks: list[Message] = [block for block in payload if isinstance(block, Message)]
    if part.get_content_type() != "message/delivery-status" and blocks:
        rest = blocks[0].get_payload()
        if isinstance(rest, str) and rest.strip():
            blocks = [blocks[0], *_split_blocks(rest)]
    return blocks


def _split_blocks(text: str) -> list[Message]:
    parser = HeaderParser()
    chunks = re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n").strip("\n"))
    return [parser.parsestr(chunk, headersonly=True) for chunk in chunks if chunk.strip()]


def _status(block: Message) -> str | None:
    for name in ("Status", "Diagnostic-Code"):
        value = header(block, name)
        found = STATUS.search(value) if value else None
        if found:
            return ".".join(found.groups())
    return None


def _diagnostic(block: Message) -> str | None:
    text = header(block, "Diagnostic-Code")
    return text[:_DIAGNOSTIC_LIMIT] if text else None


def _failure_kind(action: str, status: str | None) -> Kind | None:
    """Hard for ``failed`` (or no action) with a 5.x.x (or no) status; soft for
    ``delayed`` or a 4.x.x; None for a success (delivered, relayed, expanded)."""
    status_class = status[0] if status else None
    if action.startswith("delayed"):
        return Kind.SOFT
    if action.startswith(("fail", "error")):  # opensmtpd writes "error"
        return Kind.SOFT if status_class == "4" else Kind.HARD
    if not action:
        return {"5": Kind.HARD, "4": Kind.SOFT}.get(status_class or "")
    return None


def read_dsn(part: Message) -> tuple[list[Recipient], int, str | None]:
    """The failed and delayed recipients of a delivery-status part, how many recipient
    blocks it held (successes too) and its Original-Envelope-Id."""
    blocks = _blocks(part)
    if not blocks:
        raise ReportError("a delivery-status part with no fields")
    envid = header(blocks[0], "Original-Envelope-Id")
    recipients: list[Recipient] = []
    seen = 0
    for block in blocks:
        final = bare_address(header(block, "Final-Recipient"))
        original = bare_address(header(block, "Original-Recipient")) or bare_address(
            header(block, "X-Actual-Recipient")
        )
        if final is None and original is None:
            continue  # the per-message block, or a recipient block without an address
        seen += 1
        action = (header(block, "Action") or "").lower()
        status = _status(block)
        kind = _failure_kind(action, status)
        if kind is None:
            continue
        address = final or original
        assert address is not None
        recipients.append(Recipient(
            address=address, kind=kind, final_recipient=final, original_recipient=original,
            action=action.split()[0] if action else None, status=status, diagnostic=_diagnostic(block),
        ))  # fmt: skip
    return recipients, seen, envid


def mdn_original_id(part: Message) -> str | None:
    """The Original-Message-ID of a disposition notification part."""
    for block in _blocks(part):
        found = message_id_of(header(block, "Original-Message-ID"))
        if found:
            return found
    return None


def read_arf(
    part: Message, returned: Message | None
) -> tuple[list[Recipient], str | None, str | None]:
    """The complained recipients of a feedback-report part (its Original-Rcpt-To, else
    the returned message's To), its Feedback-Type and Original-Mail-From."""
    blocks = _blocks(part)
    if not blocks:
        raise ReportError("a feedback-report part with no fields")
    fields = blocks[0]
    feedback_type = (header(fields, "Feedback-Type") or "").lower() or None
    mail_from = bare_address(header(fields, "Original-Mail-From"))
    addresses = [
        a for a in (bare_address(str(v)) for v in fields.get_all("Original-Rcpt-To") or []) if a
    ]
    if not addresses and returned is not None:
        tos = [str(v) for v in returned.get_all("To") or []]
        addresses = [addr for _name, addr in getaddresses(tos) if "@" in addr]
    recipients = [
        Recipient(address=a, kind=Kind.COMPLAINT, original_recipient=a, action="complained",
                  diagnostic=feedback_type)
        for a in dict.fromkeys(addresses)
    ]  # fmt: skip
    return recipients, feedback_type, mail_from
