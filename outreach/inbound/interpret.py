"""What a message that came back to the bounce address is: ``interpret(raw) -> Finding``.

Pure: bytes in, a value out, no I/O, never an exception (a message that cannot be read
is ``unparseable`` with the reason). In order:

1. **Reports** (``multipart/report``, wherever nested):
   - a DSN (RFC 3464; RFC 6533's ``message/global-delivery-status`` too): per recipient,
     ``Action: failed`` with a 5.x.x status (or none) is **hard**; ``Action: delayed`` or
     a 4.x.x status is **soft**; delivered / relayed / expanded are successes. The
     finding is hard when any recipient is, soft when only delays, ``not_a_bounce``
     when it reports only successes.
   - an ARF report (RFC 5965) is a **complaint** about its ``Original-Rcpt-To``, else
     the returned message's ``To``.
   - a read receipt (MDN, RFC 8098) is ``not_a_bounce``.
   - a ``multipart/report`` whose report part is missing (a truncated message) is
     ``unparseable``.
2. **Auto-replies** (RFC 3834): ``Auto-Submitted`` other than ``no``, ``X-Autoreply``,
   ``X-Autorespond``, ``X-Autoresponder``, ``X-Vacation``, ``Precedence: auto_reply``,
   ``X-POST-MessageClass: 9; Autoresponder``, ``X-FC-MachineGenerated`` — unless the
   message comes from a mail system (Postfix marks its bounces ``Auto-Submitted``).
   They never suppress anyone.
3. **Non-standard bounces** from a mail system (From ``MAILER-DAEMON``, ``postmaster``
   or "Mail Delivery System"; an ``X-Failed-Recipients`` field; a bounce-like subject;
   a null return path): flufl.bounce's detectors (``all_failures``: permanent
   addresses are hard, temporary ones soft), tried in this order, the first that finds
   an address wins: DSN, Exim, Sina, Yahoo!, Yale, SMTP32 (IMail), Postfix (also
   Keftamail, BNS Postfix, SMTP_Gateway), qmail (QSBMF and its variants), GroupWise,
   Microsoft SMTPSVC, Caiwireless, Microsoft Exchange ("did not reach the following
   recipient(s)"), Netscape Messaging Server, AOL, SimpleMatch (about fifty known
   sentences of sendmail, Exchange, Lotus, Hotmail, GMX, mail.ru, ...), SimpleWarning
   (delay warnings: soft) and LLNL. A message from a mail system that none of them
   reads is ``unparseable``: a person should look at it.
4. An out-of-office subject (English, French, German, Spanish, Italian, Portuguese,
   Dutch, Nordic, ...) without the headers is an **auto_reply**.
5. Everything else (a person's answer) is ``not_a_bounce``.

``Finding.content_hash`` recognises one message read twice, whatever carried it: the
sha256 of what its sender wrote and no mailbox changes, namely the Message-ID, Date,
From, To and Subject values and the body, with CRLF read as LF, mbox's ``>From ``
quoting undone and trailing blank lines dropped. The header fields added on the way in
(Return-Path, Delivered-To, X-Original-To, Received, Status, X-UID, Content-Length, an
mbox ``From `` line, ...) are not part of it, so the same bounce fetched over IMAP, read
from a Maildir file and from an mbox has one hash.
"""

from __future__ import annotations

import hashlib
import logging
import re
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from email.utils import parseaddr

from flufl.bounce import all_failures

from outreach.inbound.finding import Finding, Kind, Recipient
from outreach.inbound.reports import (
    ARF_TYPE,
    DSN_TYPES,
    MDN_TYPES,
    STATUS,
    ReportError,
    bare_address,
    first_part,
    header,
    mdn_original_id,
    message_id_of,
    read_arf,
    read_dsn,
    returned_headers,
)

# flufl.bounce logs a detector's exception with its traceback before re-raising it;
# that exception becomes an unparseable finding here, and the traceback reaches a
# handler only when the application configures one.
logging.getLogger("flufl.bounce").addHandler(logging.NullHandler())

_HASHED_HEADERS = (b"message-id", b"date", b"from", b"to", b"subject")
_ENVELOPE_HEADERS = ("X-Original-To", "Delivered-To", "Envelope-To", "X-Envelope-To")
_REASON_LIMIT = 300
_DIAGNOSTIC_LIMIT = 1000
_SCAN_LIMIT = 256 * 1024

_MAIL_SYSTEMS = {"mailer-daemon", "mailer_daemon", "mailerdaemon", "mail-daemon", "mdaemon", "postmaster",
                 "mail.daemon", "mailerdeamon"}  # fmt: skip
_MAIL_SYSTEM_NAMES = re.compile(r"mail delivery (sub)?system|mailer.?daemon|postmaster", re.I)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|returned mail|failure notice|delivery (status notification|failure|has failed|report"
    r"|problem|notification)|mail delivery failed|could not be delivered|non-?deliver"
    r"|warning: could not send|delayed mail|mail system error|permanent error|returned to sender",
    re.I,
)  # fmt: skip
_OUT_OF_OFFICE = re.compile(
    r"out[- ]of[- ](the[- ])?office|\booo\b|automatic reply|auto(matic)?[- ]?(reply|response|antwort)"
    r"|autoreply|away from (the|my) (office|desk)|on (vacation|holiday|leave)|vacation (reply|notice|message)"
    r"|abwesenheit|r[ée]ponse automatique|absent du bureau|fuera de la oficina|respuesta autom[áa]tica"
    r"|risposta automatica|fuori (sede|ufficio)|resposta autom[áa]tica|fora do escrit[óo]rio"
    r"|automatisch antwoord|afwezig|autosvar|fr[åa]nvaro|automaattinen vastaus|poissa"
    r"|nieobecno|自動応答|自动回复|不在",
    re.I,
)  # fmt: skip
_ADDRESS = re.compile(r"[^\s<>,;:()\[\]]+@[^\s<>,;:()\[\]]+")
_INLINE_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^<>\s]+>)", re.I | re.M)
_INLINE_RETURN_PATH = re.compile(rb"^Return-Path:[ \t]*<([^<>\s]+@[^<>\s]+)>", re.I | re.M)
_REPORT_TYPES = {"delivery-status", "feedback-report", "disposition-notification",
                 "global-delivery-status"}  # fmt: skip


def content_hash(raw: bytes) -> str:
    """sha256 hex of what the message's sender wrote (see the module's docstring)."""
    text = raw.replace(b"\r\n", b"\n")
    if text.startswith(b"From "):  # an mbox separator line
        text = text.partition(b"\n")[2]
    head, sep, body = text.partition(b"\n\n")
    if not sep:
        head, body = b"", text
    values: dict[bytes, bytes] = {}
    for field in re.split(rb"\n(?![ \t])", head):
        name, colon, value = field.partition(b":")
        name = name.strip().lower()
        if colon and name in _HASHED_HEADERS and name not in values:
            values[name] = b" ".join(value.split())
    body = re.sub(rb"(?m)^>(>*From )", rb"\1", body).rstrip(b"\n")
    digest = hashlib.sha256()
    for name in _HASHED_HEADERS:
        digest.update(values.get(name, b"") + b"\0")
    digest.update(b"\0" + body)
    return digest.hexdigest()


def interpret(raw: bytes) -> Finding:
    """Read one message that came back (see the module's docstring). Never raises."""
    digest = content_hash(raw)
    try:
        return _interpret(raw, digest)
    except Exception as exc:  # any failure to read it is a finding, not a crash
        why = f"{type(exc).__name__}: {exc}"
        return Finding(Kind.UNPARSEABLE, f"could not be read ({why[:_REASON_LIMIT]})", digest)


def _interpret(raw: bytes, digest: str) -> Finding:
    msg = message_from_bytes(raw)
    if not any(msg.get(name) is not None for name in ("From", "Date", "Subject", "Message-ID")):
        return Finding(Kind.UNPARSEABLE, "not a mail message: no From, Date, Subject or Message-ID field",
                       digest)  # fmt: skip
    base = _Base(msg, digest)
    report = first_part(msg, (*DSN_TYPES, ARF_TYPE, *MDN_TYPES))
    if report is not None:
        return _from_report(base, msg, report)
    from_system = _from_mail_system(msg)
    if _claims_report(msg):
        # a report without its report part: read what is left as a bounce, else say so
        found = _flufl(base, msg)
        if found is not None:
            return found
        defects = sorted({type(d).__name__ for p in msg.walk() for d in p.defects})
        damage = f"; its MIME structure is damaged ({', '.join(defects)})" if defects else ""
        return base.finding(
            Kind.UNPARSEABLE, f"a report without its report part: truncated?{damage}"
        )
    if not from_system and _auto_reply_header(msg):
        return _auto_reply(base, msg, "an automatic reply (RFC 3834 or autoresponder headers)")
    if from_system or _null_sender(msg):
        found = _flufl(base, msg)
        if found is not None:
            return found
        if from_system:
            return base.finding(
                Kind.UNPARSEABLE, "from a mail system, but no failed recipient could be read"
            )
    if _OUT_OF_OFFICE.search(_subject(msg)):
        return _auto_reply(base, msg, "an out-of-office subject")
    if _null_sender(msg):
        return base.finding(Kind.UNPARSEABLE, "sent with a null return path, as bounces are, but no "
                            "failed recipient could be read")  # fmt: skip
    return base.finding(Kind.NOT_A_BOUNCE, "no report, bounce or automatic reply")


class _Base:
    """What every finding of one message carries."""

    def __init__(self, msg: Message, digest: str) -> None:
        self.digest = digest
        self.message_id = message_id_of(header(msg, "Message-ID"))
        envelope: list[str] = []
        for name in _ENVELOPE_HEADERS:
            for value in msg.get_all(name) or []:
                address = bare_address(str(value))
                if address:
                    envelope.append(address)
        self.envelope = envelope
        # the To of a bounce or an auto-reply is usually the envelope sender it answers
        # (a candidate only: delivery_of verifies it, so a plain pattern reads it)
        self.to = [a for v in msg.get_all("To") or [] for a in _ADDRESS.findall(str(v))]

    def finding(self, kind: Kind, reason: str, recipients: list[Recipient] | None = None, *,
                also_envelope: list[str] | None = None, format: str = "", original_message_id: str | None = None,
                feedback_type: str | None = None, envelope_id: str | None = None) -> Finding:  # fmt: skip
        envelope = tuple(dict.fromkeys([*self.envelope, *(also_envelope or []), *self.to]))
        return Finding(kind, reason, self.digest, message_id=self.message_id, recipients=tuple(recipients or ()),
                       original_message_id=original_message_id, envelope_recipients=envelope,
                       format=format, feedback_type=feedback_type, envelope_id=envelope_id)  # fmt: skip


def _from_report(base: _Base, msg: Message, part: Message) -> Finding:
    ctype = part.get_content_type()
    returned = returned_headers(msg)
    original_id = message_id_of(header(returned, "Message-ID")) if returned is not None else None
    returned_path = bare_address(header(returned, "Return-Path")) if returned is not None else None
    also = [returned_path] if returned_path else []
    if ctype in MDN_TYPES:
        return base.finding(Kind.NOT_A_BOUNCE, "a read receipt (MDN)", format="mdn",
                            original_message_id=original_id or mdn_original_id(part))  # fmt: skip
    try:
        if ctype == ARF_TYPE:
            complained, feedback_type, mail_from = read_arf(part, returned)
            reason = f"ARF feedback report ({feedback_type or 'no Feedback-Type'})"
            if not complained:
                reason += "; it names no recipient (redacted?)"
            return base.finding(Kind.COMPLAINT, reason, complained, original_message_id=original_id,
                                format="arf", feedback_type=feedback_type,
                                also_envelope=[a for a in (mail_from, returned_path) if a])  # fmt: skip
        recipients, blocks, envid = read_dsn(part)
    except ReportError as exc:
        return base.finding(Kind.UNPARSEABLE, str(exc), original_message_id=original_id)
    if blocks == 0:
        return base.finding(Kind.UNPARSEABLE, "a delivery status report that names no recipient",
                            original_message_id=original_id, envelope_id=envid)  # fmt: skip
    if not recipients:
        return base.finding(Kind.NOT_A_BOUNCE, "a delivery status report of success",
                            original_message_id=original_id, envelope_id=envid, format="dsn")  # fmt: skip
    hard = sum(r.kind is Kind.HARD for r in recipients)
    soft = len(recipients) - hard
    kind = Kind.HARD if hard else Kind.SOFT
    reason = "DSN: " + ", ".join(
        f"{n} {w}" for n, w in ((hard, "failed"), (soft, "delayed or 4.x.x")) if n
    )
    return base.finding(kind, reason, recipients, original_message_id=original_id, envelope_id=envid,
                        format="dsn", also_envelope=also)  # fmt: skip


def _flufl(base: _Base, msg: Message) -> Finding | None:
    temporary, permanent = all_failures(msg)
    if not temporary and not permanent:
        return None
    text = _plain_text(msg)
    recipients = []
    for addresses, kind, action in (
        (permanent, Kind.HARD, "failed"),
        (temporary - permanent, Kind.SOFT, "delayed"),
    ):
        for address in sorted(a.decode("ascii", "replace") for a in addresses):
            status, diagnostic = _told_about(text, address)
            # the same rule as a DSN's: a 4.x.x status is a temporary failure
            own = Kind.SOFT if status and status.startswith("4") else kind
            recipients.append(Recipient(address, own, final_recipient=address, action=action, status=status,
                                        diagnostic=diagnostic))  # fmt: skip
    hard = sum(r.kind is Kind.HARD for r in recipients)
    soft = len(recipients) - hard
    original_id, return_path = _returned_inline(msg)
    kind = Kind.HARD if hard else Kind.SOFT
    reason = f"a non-standard bounce read by flufl.bounce: {hard} failed, {soft} delayed or 4.x.x"
    return base.finding(kind, reason, recipients, original_message_id=original_id, format="flufl.bounce",
                        also_envelope=[return_path] if return_path else [])  # fmt: skip


def _plain_text(msg: Message) -> str:
    """The text of the bounce's first text/plain part (its explanation), or ""."""
    for part in msg.walk():
        if part.get_content_type() == "text/plain":
            body = part.get_payload(decode=True)
            if isinstance(body, bytes):
                return body[:_SCAN_LIMIT].decode("utf-8", "replace").replace("\r\n", "\n")
    return ""


def _told_about(text: str, address: str) -> tuple[str | None, str | None]:
    """The enhanced status code and the words next to ``address`` in a bounce's text:
    the paragraph from the line that names it to the next blank line."""
    at = text.lower().find(address.lower())
    if at < 0:
        return None, None
    start = text.rfind("\n", 0, at) + 1
    end = text.find("\n\n", at)
    paragraph = " ".join(text[start : end if end >= 0 else len(text)].split())[:_DIAGNOSTIC_LIMIT]
    found = STATUS.search(paragraph)
    return (".".join(found.groups()) if found else None), paragraph or None


def _returned_inline(msg: Message) -> tuple[str | None, str | None]:
    """The returned message's Message-ID and Return-Path: from its own part, else from
    the text of the bounce (qmail, Postfix and others quote it after a separator)."""
    returned = returned_headers(msg)
    if returned is not None and returned.get("Message-ID"):
        return_path = bare_address(header(returned, "Return-Path"))
        return message_id_of(header(returned, "Message-ID")), return_path
    for part in msg.walk():
        if part.is_multipart() or part.get_content_maintype() not in ("text", "message"):
            continue
        body = part.get_payload(decode=True)
        if not isinstance(body, bytes):
            continue
        found = _INLINE_MESSAGE_ID.search(body, 0, _SCAN_LIMIT)
        if found:
            path = _INLINE_RETURN_PATH.search(body, 0, _SCAN_LIMIT)
            return_path = path.group(1).decode("ascii", "replace") if path else None
            return found.group(1).decode("ascii", "replace"), return_path
    return None, None


def _auto_reply(base: _Base, msg: Message, reason: str) -> Finding:
    sender = parseaddr(header(msg, "From") or "")[1]
    recipients = (
        [Recipient(sender, Kind.AUTO_REPLY, final_recipient=sender)] if "@" in sender else []
    )
    original = message_id_of(header(msg, "In-Reply-To"))
    if original is None:
        references = re.findall(r"<[^<>\s]+>", header(msg, "References") or "")
        original = references[-1] if references else None
    return base.finding(
        Kind.AUTO_REPLY, reason, recipients, original_message_id=original, format="auto-reply"
    )


def _claims_report(msg: Message) -> bool:
    if msg.get_content_type() != "multipart/report":
        return False
    report_type = msg.get_param("report-type")
    return isinstance(report_type, str) and report_type.lower() in _REPORT_TYPES


def _auto_reply_header(msg: Message) -> bool:
    submitted = (header(msg, "Auto-Submitted") or "").lower()
    if submitted and submitted.split(";")[0].strip() != "no":
        return True
    if any(msg.get(name) is not None for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder",
                                                  "X-Vacation", "X-FC-MachineGenerated")):  # fmt: skip
        return True
    precedence = (header(msg, "Precedence") or header(msg, "X-Precedence") or "").lower()
    if precedence.replace("-", "_") == "auto_reply":
        return True
    return "autoresponder" in (header(msg, "X-POST-MessageClass") or "").lower()


def _from_mail_system(msg: Message) -> bool:
    if msg.get("X-Failed-Recipients") is not None:
        return True
    sender = header(msg, "From") or ""
    locals_ = {a.rpartition("@")[0].strip('"').lower() for a in _ADDRESS.findall(sender)}
    if locals_ & _MAIL_SYSTEMS or _MAIL_SYSTEM_NAMES.search(sender):
        return True
    return bool(_BOUNCE_SUBJECT.search(_subject(msg)))


def _null_sender(msg: Message) -> bool:
    values = [str(v).strip() for v in msg.get_all("Return-Path") or []]
    return bool(values) and values[0] in ("<>", "")


def _subject(msg: Message) -> str:
    value = header(msg, "Subject") or ""
    if "=?" in value:
        try:
            return str(make_header(decode_header(value)))
        except (ValueError, LookupError, UnicodeError):
            return value
    return value
