"""Email messages as bytes, assembled directly (RFC 5322, 2045-2047, 8058).

The standard library's ``EmailMessage`` parses and refolds every header it is given,
which costs more than rendering the message. Here the parts that are the same for a
whole step (From, List-Id, Reply-To) are encoded once, and each message adds only its
own To, Subject, Message-ID and bodies. The tests parse every message back with the
standard library's parser and check each header.

Every header value is forced onto one line here, whatever the caller passes: CR, LF
and the other control characters (and Unicode's line and paragraph separators)
become a space, so that no stored value (a display name written into the database
by hand, say) can end a header and start another one.

Address headers (From, To, Reply-To) are built from their parts: the display name
plain, quoted or as RFC 2047 encoded words, the address as it is, never one encoded
word over both (a reader could not find the address in it). For a server without
SMTPUTF8 (``utf8=False``) a domain goes in IDNA (punycode) and an address whose
local part is not ASCII cannot go at all (``AddressError``); with SMTPUTF8 the
address goes in UTF-8 (RFC 6532).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, parseaddr
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

from outreach.domain.render import RenderedEmail

_ATOM_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")
# What may not stand in a header value: C0 and C1 controls (CR, LF, TAB, NUL, NEL...),
# DEL, and the line and paragraph separators.
_LINE_BREAKING = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# A display name that needs neither quotes nor encoding: atext words and spaces.
_PLAIN_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_FOLD = 78
_MAX_LINE = 998  # RFC 5322: no line longer, whatever happens
_WORD_BYTES = 45  # UTF-8 bytes per encoded word: "=?utf-8?b?" + 60 base64 + "?=" is 72
_ONE_WORD_BYTES = 600  # a name up to this long goes as one encoded word (800 base64)


class AddressError(ValueError):
    """An address that has no ASCII form: its local part is not ASCII (or its domain
    is no IDNA name). ``address`` is the address as given."""

    def __init__(self, address: str, problem: str) -> None:
        super().__init__(f"{address}: {problem}")
        self.address = address
        self.problem = problem


@lru_cache(maxsize=4096)
def ascii_domain(domain: str) -> str:
    """The domain as DNS names it: IDNA (punycode) labels for a non-ASCII one."""
    if domain.isascii():
        return domain
    try:
        return validate_email("a@" + domain, check_deliverability=False).ascii_domain
    except EmailNotValidError as exc:
        raise AddressError(domain, f"the domain has no IDNA form ({exc})") from None


def ascii_address(addr: str) -> str:
    """``addr`` for a server without SMTPUTF8: the domain in IDNA. AddressError when
    the local part is not ASCII: such an address has no ASCII form."""
    if addr.isascii():
        return addr
    local, _at, domain = addr.rpartition("@")
    if not local.isascii():
        raise AddressError(addr, "the part before @ is not ASCII")
    return f"{local}@{ascii_domain(domain)}"


def one_line(value: str) -> str:
    """``value`` with every run of control characters (CR, LF...) made one space."""
    return value if value.isprintable() else _LINE_BREAKING.sub(" ", value)


@lru_cache(maxsize=4096)
def header_line(name: str, value: str) -> bytes:
    """``Name: value`` CRLF-terminated, on one line (``one_line``): ASCII folded at
    spaces, anything else (or a word too long for any line) as RFC 2047 encoded words."""
    value = one_line(value)
    if value.isascii():
        line = f"{name}: {value}"
        if len(line) <= _FOLD:
            return (line + "\r\n").encode("ascii")
        folded = _fold_ascii(name, value)
        if max(len(part) for part in folded.split("\r\n")) <= _MAX_LINE:
            return (folded + "\r\n").encode("ascii")
    encoded = Header(value, "utf-8", header_name=name).encode(linesep="\r\n", maxlinelen=_FOLD)
    return f"{name}: {encoded}\r\n".encode("ascii")


def _fold_ascii(name: str, value: str) -> str:
    """Fold at spaces so lines stay within 78 characters where words allow; never
    right after the colon (a parser would keep that space)."""
    words = value.split(" ")
    out, current = [], f"{name}: {words[0]}"
    for word in words[1:]:
        if len(current) + 1 + len(word) > _FOLD:
            out.append(current)
            current = " " + word
        else:
            current = f"{current} {word}"
    out.append(current)
    return "\r\n".join(out)


def address(name: str | None, addr: str, *, utf8: bool = True) -> str:
    """A mailbox for an address header, from its parts: the display name as it is when
    it is plain words, quoted when it is ASCII with specials, RFC 2047 encoded words
    when it is not ASCII; then the address as it is (with ``utf8``: the server takes
    SMTPUTF8, RFC 6532), or else with its domain in IDNA (AddressError when that
    cannot be). Both are put on one line first (``one_line``), before any encoding
    could hide a line break."""
    addr = one_line(addr)
    if not utf8 and not addr.isascii():
        addr = ascii_address(addr)
    if not name:
        return addr
    return f"{phrase(one_line(name))} <{addr}>"


def phrase(text: str) -> str:
    """A display name (or List-Id description) as a header phrase: atoms as they
    are, other ASCII as a quoted string, anything else as one RFC 2047 encoded word
    (as ``email.utils.formataddr`` writes it: the standard library's address parser
    puts a space between adjacent encoded words), or several when one would not fit
    on a line."""
    if _PLAIN_PHRASE.fullmatch(text):
        return text
    if text.isascii():
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    data = text.encode()
    if len(data) <= _ONE_WORD_BYTES:
        return _b_word(data)
    words, chunk, size = [], [], 0
    for ch in text:
        n = len(ch.encode())
        if size + n > _WORD_BYTES and chunk:
            words.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(ch)
        size += n
    words.append("".join(chunk))
    return " ".join(_b_word(w.encode()) for w in words)


def _b_word(data: bytes) -> str:
    return "=?utf-8?b?" + base64.b64encode(data).decode("ascii") + "?="


def address_line(field: str, mailbox: str) -> bytes:
    """An address header whose value ``address`` built: folded at spaces, never
    encoded whole; a UTF-8 address (SMTPUTF8) goes as UTF-8."""
    if mailbox.isascii():
        return header_line(field, mailbox)
    return (_fold_ascii(field, one_line(mailbox)) + "\r\n").encode("utf-8")


def message_id(campaign: str, step: str, contact_id: int, domain: str) -> str:
    """The same (campaign, step, contact) always gets the same Message-ID, so that a
    message sent twice can be recognised as one."""
    digest = hashlib.sha256(f"{campaign}\x1f{step}\x1f{contact_id}".encode()).hexdigest()[:16]
    return f"<{_atom(campaign)[:16]}.{digest}.{contact_id}@{domain}>"


@lru_cache(maxsize=1024)
def _atom(text: str) -> str:
    return _ATOM_UNSAFE.sub("-", text).strip("-")[:40] or "x"


@lru_cache(maxsize=8)
def _date(when: datetime) -> str:
    """The Date header's value; the same second for a whole batch, made once."""
    return format_datetime(when)


def _qp(text: str) -> bytes:
    """Quoted-printable UTF-8 with CRLF line ends, lines at most 76 characters."""
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return binascii.b2a_qp(data, istext=True).replace(b"\n", b"\r\n")


def _part(kind: bytes, text: str, eight_bit: bool) -> bytes:
    """A text part's headers, blank line and body. Where the server takes 8BITMIME
    and no line is longer than SMTP allows (998), the UTF-8 goes as it is (no
    encoding to pay for per message); otherwise (or with a NUL) quoted-printable."""
    if eight_bit:
        data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
        if b"\0" not in data and (len(data) < 998 or max(map(len, data.split(b"\n"))) < 998):
            cte = b"7bit" if data.isascii() else b"8bit"
            return (b"Content-Type: text/" + kind + b"; charset=utf-8\r\nContent-Transfer-Encoding: " + cte
                    + b"\r\n\r\n" + data.replace(b"\n", b"\r\n"))  # fmt: skip
    return (b"Content-Type: text/" + kind + b"; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable"
            b"\r\n\r\n" + _qp(text))  # fmt: skip


@dataclass(frozen=True)
class StepHeaders:
    """What every message of a step shares, encoded once: for a server that takes
    SMTPUTF8 (``fixed``) and for one that does not (``fixed_ascii``, IDNA domains;
    None when the sender or Reply-To has no ASCII form)."""

    sender: str  # bare address; the envelope sender too, unless a return path is set
    domain: str  # of the sender, in ASCII (IDNA): Message-IDs live there
    fixed: bytes  # From, Reply-To, List-Id, MIME-Version
    fixed_ascii: bytes | None = None

    @classmethod
    def make(
        cls,
        *,
        sender_name: str | None,
        sender: str,
        reply_to: str | None,
        campaign_id: str,
        campaign_name: str,
    ) -> StepHeaders:
        domain = sender.rpartition("@")[2]
        try:
            domain = ascii_domain(domain)
        except AddressError:
            domain = "invalid"  # (a sender the plan check let through) only names Message-IDs
        list_id = f"{_atom(campaign_id)}.lists.{domain}"
        tail = [header_line("List-Id", f"{phrase(one_line(campaign_name))} <{list_id}>"),
                b"MIME-Version: 1.0\r\n"]  # fmt: skip

        def fixed(utf8: bool) -> bytes:
            lines = [address_line("From", address(sender_name, sender, utf8=utf8))]
            if reply_to:
                lines.append(_reply_to(reply_to, utf8))
            return b"".join(lines + tail)

        utf8 = fixed(True)
        try:
            ascii_form: bytes | None = fixed(False)
        except AddressError:
            ascii_form = None
        return cls(sender, domain, utf8, ascii_form)


def _reply_to(value: str, utf8: bool) -> bytes:
    """Reply-To as given when it is ASCII; otherwise built from its parts."""
    value = one_line(value)
    if value.isascii():
        return header_line("Reply-To", value)
    name, addr = parseaddr(value)
    if "@" not in addr:
        return header_line("Reply-To", value)
    return address_line("Reply-To", address(name, addr, utf8=utf8))


def build(
    step: StepHeaders,
    *,
    to_name: str | None,
    to: str,
    email: RenderedEmail,
    msg_id: str,
    date: datetime,
    unsubscribe_url: str | None = None,
    unsubscribe_mailto: str | None = None,
    eight_bit: bool = False,
    utf8: bool = False,
) -> bytes:
    """The whole message, ready for SMTP DATA. ``eight_bit``: the server announced
    8BITMIME (a message with 8-bit text then goes with ``BODY=8BITMIME``); ``utf8``:
    it announced SMTPUTF8 (addresses may go in UTF-8). Without it, AddressError
    for an address that has no ASCII form."""
    fixed = step.fixed if utf8 else step.fixed_ascii
    if fixed is None:
        raise AddressError(step.sender, "the sender or Reply-To has no ASCII form")
    head = [
        fixed,
        address_line("To", address(to_name, to, utf8=utf8)),
        header_line("Subject", email.subject),
        f"Date: {_date(date.replace(microsecond=0))}\r\nMessage-ID: {one_line(msg_id)}\r\n".encode("ascii"),
    ]
    targets = []
    if unsubscribe_url:
        targets.append(f"<{unsubscribe_url}>")
    if unsubscribe_mailto:
        targets.append(f"<{unsubscribe_mailto}>")
    if targets:
        head.append(header_line("List-Unsubscribe", ", ".join(targets)))
        if unsubscribe_url:
            head.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
    if email.html is None:
        return b"".join([*head, _part(b"plain", email.text, eight_bit)])
    boundary = "=_" + hashlib.sha256(msg_id.encode()).hexdigest()[:24]
    b = boundary.encode("ascii")
    return b"".join([
        *head,
        b'Content-Type: multipart/alternative; boundary="' + b + b'"\r\n\r\n',
        b"--" + b + b"\r\n", _part(b"plain", email.text, eight_bit), b"\r\n",
        b"--" + b + b"\r\n", _part(b"html", email.html, eight_bit), b"\r\n",
        b"--" + b + b"--\r\n",
    ])  # fmt: skip
