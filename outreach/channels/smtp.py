"""SMTP through a pool of reused connections (aiosmtplib; with PIPELINING when the
server offers it, see ``smtp_pipeline``).

``OUTREACH_SMTP_URL`` says where: ``smtp://user:pass@host:587?starttls=true``,
``smtps://user:pass@host:465``, ``smtp://127.0.0.1:2525``; ``?pool=8`` sets the
number of connections and ``?timeout=30`` the seconds to wait for the server.
The password never appears in a log line, an event or an error message.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from outreach.channels.smtp_pipeline import Pipeline, ServerGone
from outreach.domain.errors import ConfigError
from outreach.ports import SendResult

_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


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
    try:
        parts = urlsplit(url)
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
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,
        pool=max(1, pool),
        timeout=timeout,
    )


def classify(code: int | None, text: str) -> tuple[bool, bool]:
    """(permanent, bounce) for an SMTP error reply: 5xx is permanent; 5.1.x (bad
    mailbox or address) also means the address bounces."""
    enhanced = _ENHANCED.search(text or "")
    permanent = (code or 0) >= 500
    bounce = permanent and (
        (code in (550, 551, 553) and enhanced is None)
        or bool(enhanced and enhanced.group(1) == "5" and enhanced.group(2) == "1")
    )
    return permanent, bounce


class SmtpPool:
    """``ports.EmailChannel``: N connections, each used by one message at a time,
    opened when first needed and opened again when the server closes one."""

    def __init__(self, target: SmtpTarget) -> None:
        self.target = target
        self.local = False  # the embedded Maildir target: no relay limits apply
        self.eight_bit = False  # the server announced 8BITMIME: text may go unencoded
        self._idle: asyncio.LifoQueue[aiosmtplib.SMTP | Pipeline | None] = asyncio.LifoQueue()
        for _ in range(target.pool):
            self._idle.put_nowait(None)

    @property
    def size(self) -> int:
        return self.target.pool

    def _client(self) -> aiosmtplib.SMTP:
        t = self.target
        return aiosmtplib.SMTP(
            hostname=t.host, port=t.port, username=t.username, password=t.password,
            use_tls=t.tls == "tls", start_tls=t.tls == "starttls",
            timeout=t.timeout, validate_certs=t.host not in ("127.0.0.1", "localhost"),
        )  # fmt: skip

    async def send(self, sender: str, recipient: str, message: bytes) -> SendResult:
        """One message, one transaction: MAIL, RCPT, DATA on a pooled connection.

        The addresses were validated when the contact was stored, so they go out as
        ``<address>`` without aiosmtplib's ``sendmail`` parsing them again (which cost
        more than the rest of the transaction); replies are checked here.
        """
        client = await self._idle.get()
        start = time.perf_counter()
        try:
            if client is None or not client.is_connected:
                client = self._client()
                await client.connect()
                await client.ehlo()
                self.eight_bit = client.supports_extension("8bitmime")
                if client.supports_extension("pipelining"):
                    client = Pipeline.take_over(client, self.target.timeout)
            options = b" SMTPUTF8" if not (sender + recipient).isascii() else b""
            if not message.isascii():  # built with 8-bit text parts (see eight_bit)
                options += b" BODY=8BITMIME"
            if isinstance(client, Pipeline):
                return await self._pipelined(client, sender, recipient, message, options, start)
            reply = await client.execute_command(
                b"MAIL", b"FROM:<" + sender.encode() + b">" + options
            )
            if reply.code != 250:
                return await self._refused(client, reply.code, reply.message, start)
            reply = await client.execute_command(b"RCPT", b"TO:<" + recipient.encode() + b">")
            if reply.code not in (250, 251):
                return await self._refused(client, reply.code, reply.message, start)
            reply = await client.data(message)
            return SendResult(
                True, code=reply.code, text=_short(reply.message), duration_ms=_ms(start)
            )
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == 421:  # the server is closing this connection
                client = await _drop(client)
            else:
                await _reset(client)
            permanent, bounce = classify(exc.code, exc.message)
            return SendResult(False, permanent, exc.code, _short(exc.message), bounce, _ms(start))
        except (TimeoutError, aiosmtplib.SMTPException, OSError, ValueError) as exc:
            client = await _drop(client)
            return SendResult(
                False, False, None, _short(f"{type(exc).__name__}: {exc}"), False, _ms(start)
            )
        finally:
            self._idle.put_nowait(client)

    async def _pipelined(self, pipe: Pipeline, sender: str, recipient: str, message: bytes,
                         options: bytes, start: float) -> SendResult:  # fmt: skip
        try:
            code, text = await pipe.send(sender.encode(), recipient.encode(), message, options)
        except (ServerGone, TimeoutError, OSError) as exc:
            pipe.close()
            return SendResult(False, False, None, _short(f"{type(exc).__name__}: {exc}"), False, _ms(start))
        if code == 250:
            return SendResult(True, code=code, text=_short(text), duration_ms=_ms(start))
        if code == 421:  # the server is closing this connection
            pipe.close()
        permanent, bounce = classify(code, text)
        return SendResult(False, permanent, code, _short(text), bounce, _ms(start))

    @staticmethod
    async def _refused(client: aiosmtplib.SMTP, code: int, text: str, start: float) -> SendResult:
        if code == 421:
            await _drop(client)
        else:
            await _reset(client)
        permanent, bounce = classify(code, text)
        return SendResult(False, permanent, code, _short(text), bounce, _ms(start))

    async def close(self) -> None:
        while not self._idle.empty():
            client = self._idle.get_nowait()
            if isinstance(client, Pipeline):
                await client.quit()
            elif client is not None and client.is_connected:
                try:
                    await client.quit()
                except (aiosmtplib.SMTPException, OSError, RuntimeError, ValueError):
                    client.close()
        for _ in range(self.target.pool):
            self._idle.put_nowait(None)


async def _drop(client: aiosmtplib.SMTP | None) -> None:
    if client is not None:
        client.close()


async def _reset(client: aiosmtplib.SMTP) -> None:
    """RSET after a refused transaction, so the connection can carry the next one."""
    try:
        await client.rset()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        client.close()


def _short(text: str) -> str:
    return " ".join(str(text).split())[:300]


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)
