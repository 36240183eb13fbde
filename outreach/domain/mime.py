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
"""

from __future__ import annotations

import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr
from functools import lru_cache

from outreach.domain.render import RenderedEmail

_ATOM_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")
# What may not stand in a header value: C0 and C1 controls (CR, LF, TAB, NUL, NEL...),
# DEL, and the line and paragraph separators.
_LINE_BREAKING = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# A display name that needs neither quotes nor encoding: atext words and spaces.
_PLAIN_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_FOLD = 78
_MAX_LINE = 998  # RFC 5322: no line longer, whatever happens


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


def address(name: str | None, addr: str) -> str:
    """A mailbox for a header: the display name as it is when it is plain words,
    quoted when it has specials, RFC 2047-encoded when it is not ASCII. (An address
    with a non-ASCII local part goes as UTF-8: SMTPUTF8, RFC 6532.) Both are put on
    one line first (``one_line``), before any encoding could hide a line break."""
    addr = one_line(addr)
    if not name:
        return addr
    name = one_line(name)
    if not addr.isascii():
        return f"{name} <{addr}>"
    if _PLAIN_PHRASE.fullmatch(name):
        return f"{name} <{addr}>"
    return formataddr((name, addr), charset="utf-8")


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
    """What every message of a step shares, encoded once."""

    sender: str  # bare address, also the envelope sender
    domain: str  # of the sender: Message-IDs live there
    fixed: bytes  # From, Reply-To, List-Id, MIME-Version

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
        lines = [header_line("From", address(sender_name, sender))]
        if reply_to:
            lines.append(header_line("Reply-To", reply_to))
        list_id = f"{_atom(campaign_id)}.lists.{domain}"
        lines.append(header_line("List-Id", f"{campaign_name} <{list_id}>"))
        lines.append(b"MIME-Version: 1.0\r\n")
        return cls(sender, domain, b"".join(lines))


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
) -> bytes:
    """The whole message, ready for SMTP DATA. ``eight_bit``: the server announced
    8BITMIME (a message with 8-bit text then goes with ``BODY=8BITMIME``)."""
    head = [
        step.fixed,
        header_line("To", address(to_name, to)),
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
