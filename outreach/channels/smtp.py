"""SMTP through a pool of reused connections (aiosmtplib; with PIPELINING when the
server offers it, see ``smtp_pipeline``).

``OUTREACH_SMTP_URL`` says where: ``smtp://user:pass@host:587?starttls=true``,
``smtps://user:pass@host:465``, ``smtp://127.0.0.1:2525``; ``?pool=8`` sets the
number of connections and ``?timeout=30`` the seconds to wait for the server.
The password never appears in a log line, an event or an error message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import aiosmtplib

from outreach.channels.smtp_pipeline import OutcomeUnknown, Pipeline
from outreach.domain.errors import ConfigError
from outreach.domain.mime import AddressError, ascii_address
from outreach.domain.urls import split_url
from outreach.ports import SendResult

_ENHANCED = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})\b")  # where a reply's text starts


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: str = "none"  # none | starttls | tls
    pool: int = 8
    timeout: float = 30.0

    def __repr__(self) -> str:  # never show the password
        return f"SmtpTarget({self.safe_url})"

    @property
    def safe_url(self) -> str:
        scheme = "smtps" if self.tls == "tls" else "smtp"
        user = f"{self.username}:***@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def parse_smtp_url(url: str) -> SmtpTarget:
    credentials = split_url(url)  # up to the last @: a password may hold @ : / #
    try:
        parts = urlsplit(credentials.without_credentials())
        port = parts.port
    except ValueError:
        raise ConfigError(
            "OUTREACH_SMTP_URL is not a URL", hint="smtp://user:password@host:587?starttls=true"
        ) from None
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ConfigError(
            f"OUTREACH_SMTP_URL must start with smtp:// or smtps:// and name a host (got {parts.scheme or 'no'} scheme)",
            hint="smtp://user:password@host:587?starttls=true",
        )
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"starttls", "pool", "timeout"}
    if unknown:
        raise ConfigError(
            f"OUTREACH_SMTP_URL: unknown option(s) {', '.join(sorted(unknown))}",
            hint="starttls, pool, timeout",
        )
    tls = (
        "tls"
        if parts.scheme == "smtps"
        else "starttls"
        if query.get("starttls", "").lower() in ("1", "true", "yes")
        else "none"
    )
    try:
        pool = int(query.get("pool", 8))
        timeout = float(query.get("timeout", 30))
    except ValueError:
        raise ConfigError("OUTREACH_SMTP_URL: pool and timeout are numbers") from None
    return SmtpTarget(
        host=parts.hostname,
        port=port or (465 if tls == "tls" else 587 if tls == "starttls" else 25),
        username=credentials.username,
        password=credentials.password or None,
        tls=tls,
        pool=max(1, pool),
        timeout=timeout,
    )


def judge(code: int | None, text: str, stage: str) -> str:
    """What an SMTP error reply means, by the command it answers (``stage``):

    - ``temporary``: 4xx (or no code): try again later;
    - ``refused``: the relay refuses us, not this recipient: any 5xx at connect, EHLO,
      STARTTLS, AUTH or MAIL FROM, and at RCPT a refusal to relay (5.7.x, or "relay"
      without a 5.1.x code), or of the sender (5.1.7, 5.1.8, "sender");
    - ``bounce``: a recipient-specific answer to RCPT: 5.1.x, or 550/551/553 without
      an enhanced code whose text names the mailbox ("User unknown", "No such user",
      "mailbox unavailable" ...): the address does not exist;
    - ``failed``: any other 5xx: this message to this recipient cannot go (a DATA
      refusal such as "554 5.7.1 rejected as spam" is the message's, never a bounce).
    """
    if code is None or code < 500:
        return "temporary"
    if stage not in ("RCPT", "DATA", "end of data"):
        return "refused"
    if stage != "RCPT":
        return "failed"
    text = text or ""
    enhanced = _ENHANCED.match(text)
    if enhanced is not None:
        subject = (enhanced.group(2), enhanced.group(3))
        if subject[0] == "7" or subject in (("1", "7"), ("1", "8")):  # security; the sender
            return "refused"
        if subject[0] == "1":  # addressing: this mailbox or its domain
            return "bounce"
    if _US.search(text):
        return "refused"
    if enhanced is None and code in (550, 551, 553) and _NO_MAILBOX.search(text):
        return "bounce"
    return "failed"


# what a refusal of us (not of one recipient) says at RCPT
_US = re.compile(r"\brelay|\bsender\b", re.IGNORECASE)
# how common servers say that a mailbox does not exist, without an enhanced code
_NO_MAILBOX = re.compile(
    r"user unknown|unknown (user|mailbox|recipient|address)|no such (user|mailbox|recipient|address|account)"
    r"|mailbox (unavailable|not found|unknown|does ?n[o']t exist)|user not (found|local)"
    r"|(recipient|address|account|user) (does ?n[o']t exist|not found)|invalid (mailbox|recipient)",
    re.IGNORECASE,
)

Compose = Callable[[bool, bool], bytes]  # (eight_bit, utf8) -> the message's bytes


class SmtpPool:
    """``ports.EmailChannel``: N connections, each used by one message at a time,
    opened when first needed and opened again when the server closes one. ``local``:
    the embedded Maildir target, to which no relay's limits apply."""

    def __init__(self, target: SmtpTarget, *, local: bool = False) -> None:
        self.target = target
        self.local = local
        self.eight_bit = False  # the last server connected to announced 8BITMIME
        self._idle: asyncio.LifoQueue[Pipeline | None] = asyncio.LifoQueue()
        for _ in range(target.pool):
            self._idle.put_nowait(None)

    @property
    def size(self) -> int:
        return self.target.pool

    def _client(self) -> aiosmtplib.SMTP:
        t = self.target
        return aiosmtplib.SMTP(
            hostname=t.host, port=t.port, use_tls=t.tls == "tls", start_tls=t.tls == "starttls",
            timeout=t.timeout, validate_certs=t.host not in ("127.0.0.1", "localhost"),
        )  # fmt: skip

    async def _open(self) -> Pipeline:
        """A new connection: greeting, (STARTTLS,) EHLO, AUTH; each refusal raised
        as ``_Refused`` with the command it answers."""
        client = self._client()
        stage = "connect"
        try:
            await client.connect()  # the greeting (and with STARTTLS, EHLO and STARTTLS)
            stage = "EHLO"
            await client.ehlo()
            if self.target.username:
                stage = "AUTH"
                await client.login(self.target.username, self.target.password or "")
        except aiosmtplib.SMTPResponseException as exc:
            client.close()
            if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
                stage = "connect"
            elif isinstance(exc, aiosmtplib.SMTPHeloError):
                stage = "EHLO"
            elif stage == "connect":
                stage = "STARTTLS" if self.target.tls == "starttls" else "EHLO"
            raise _Refused(exc.code, exc.message, stage) from None
        except aiosmtplib.SMTPNotSupported as exc:  # AUTH asked for, not offered
            client.close()
            raise _Refused(530, f"no AUTH: {exc}", "AUTH") from None
        pipe = Pipeline.take_over(client, self.target.timeout)
        self.eight_bit = pipe.eight_bit
        return pipe

    async def send(self, sender: str, recipient: str, message: bytes | Compose) -> SendResult:
        """One message, one transaction on a pooled connection. ``message`` is the
        message's bytes, or a function that builds them for what the connection's
        server offers (8BITMIME, SMTPUTF8).

        The addresses were validated when the contact was stored, so they go out as
        ``<address>`` as they are where the server offers SMTPUTF8, else with IDNA
        domains; an address whose local part is not ASCII then fails (not a bounce).
        """
        pipe = await self._idle.get()
        start = time.perf_counter()
        try:
            if pipe is None or not pipe.is_connected:
                pipe = None
                pipe = await self._open()
            envelope = _envelope(pipe, sender, recipient, message)
            if isinstance(envelope, SendResult):
                return dataclasses.replace(envelope, duration_ms=_ms(start))
            mail_from, rcpt_to, data = envelope
            options = b" SMTPUTF8" if pipe.smtputf8 and not _head(data).isascii() else b""
            if not data.isascii():  # built with 8-bit text parts (see eight_bit)
                options += b" BODY=8BITMIME"
            reply = await pipe.send(mail_from, rcpt_to, data, options)
        except _Refused as exc:
            return _failure(exc.code, exc.text, exc.stage, start)
        except OutcomeUnknown as exc:
            return SendResult(False, text=_short(str(exc)), duration_ms=_ms(start), uncertain=True)
        except ValueError as exc:  # an address with a line break: it can never go
            return SendResult(False, True, None, _short(str(exc)), duration_ms=_ms(start), stage="RCPT")
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            if pipe is not None:
                pipe.close()
            return SendResult(False, False, None, _short(f"{type(exc).__name__}: {exc}"), False, _ms(start))
        finally:
            self._idle.put_nowait(pipe)
        if reply.code == 250:
            return SendResult(True, code=250, text=_short(reply.text), duration_ms=_ms(start), stage=reply.stage)
        return _failure(reply.code, reply.text, reply.stage, start)

    async def close(self) -> None:
        while not self._idle.empty():
            pipe = self._idle.get_nowait()
            if pipe is not None:
                await pipe.quit()
        for _ in range(self.target.pool):
            self._idle.put_nowait(None)


class _Refused(Exception):
    def __init__(self, code: int, text: str, stage: str) -> None:
        super().__init__(code, text, stage)
        self.code, self.text, self.stage = code, text, stage


def _envelope(pipe: Pipeline, sender: str, recipient: str,
              message: bytes | Compose) -> tuple[bytes, bytes, bytes] | SendResult:  # fmt: skip
    """MAIL FROM and RCPT TO as this server takes them, and the message built for it;
    or why it cannot go there."""
    utf8 = pipe.smtputf8
    if utf8 or (sender.isascii() and recipient.isascii()):
        mail_from, rcpt_to = sender, recipient
    else:
        try:
            mail_from = ascii_address(sender)
        except AddressError as exc:
            raise _Refused(553, f"the sender {sender} has no ASCII form ({exc.problem}) and the relay "
                                "does not offer SMTPUTF8", "MAIL") from None  # fmt: skip
        try:
            rcpt_to = ascii_address(recipient)
        except AddressError as exc:
            return SendResult(False, True, None, f"{recipient}: {exc.problem} and the relay does not "
                              "offer SMTPUTF8 (RFC 6531): this address cannot go through it", stage="RCPT")  # fmt: skip
    try:
        data = message(pipe.eight_bit, utf8) if callable(message) else message
    except AddressError as exc:
        raise _Refused(553, f"the sender or Reply-To has no ASCII form ({exc.problem}) and the relay "
                            "does not offer SMTPUTF8", "MAIL") from None  # fmt: skip
    return mail_from.encode(), rcpt_to.encode(), data


def _head(message: bytes) -> bytes:
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[:end]


def _failure(code: int | None, text: str, stage: str, start: float) -> SendResult:
    kind = judge(code, text, stage)
    return SendResult(
        False, permanent=kind != "temporary", code=code, text=_short(text), bounce=kind == "bounce",
        duration_ms=_ms(start), stage=stage, refused=kind == "refused",
    )  # fmt: skip


def _short(text: str) -> str:
    return " ".join(str(text).split())[:300]


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)
