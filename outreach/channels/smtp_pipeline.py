"""SMTP transactions on a connection aiosmtplib opened (RFC 5321; with PIPELINING,
RFC 2920, when the server offers it).

aiosmtplib connects, secures (TLS or STARTTLS), says EHLO and authenticates; this
protocol then takes the connection over (``transport.set_protocol``) and runs each
transaction itself. Where the server offers PIPELINING, MAIL, RCPT and DATA go in
one write, then the message: two round trips; otherwise one command at a time. It
does nothing else: no connection set-up, no TLS, no authentication of its own.

Every reply comes back with the command it answers (``Reply.stage``), so that a
refusal is attributed to what it refuses. Once the message and its final dot are
written, a connection lost or a reply that does not come in time leaves the outcome
unknown (the server may have taken the message): ``OutcomeUnknown``, never a
plain failure.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import NamedTuple

import aiosmtplib

_MAX_REPLY = 64 * 1024
_PIPELINED = ("MAIL", "RCPT", "DATA")  # the commands of one write, in order


class Reply(NamedTuple):
    code: int
    text: str
    stage: str = ""  # the command it answers: MAIL, RCPT, DATA, or "end of data"


class ServerGone(ConnectionError):
    pass


class OutcomeUnknown(Exception):
    """The message went out whole, final dot included, but no reply came: the server
    may have taken it (connection lost or timed out after the dot)."""


class Pipeline(asyncio.Protocol):
    def __init__(self, transport: asyncio.Transport, timeout: float, *, pipelining: bool = True,
                 eight_bit: bool = False, smtputf8: bool = False) -> None:  # fmt: skip
        self.transport = transport
        self.timeout = timeout
        self.pipelining = pipelining  # the server offers PIPELINING
        self.eight_bit = eight_bit  # ... 8BITMIME
        self.smtputf8 = smtputf8  # ... SMTPUTF8
        self._dot = False  # this transaction's message and final dot were written
        self._reset = False  # this transaction was refused: RSET before the next
        self._buffer = bytearray()
        self._lines: list[bytes] = []  # the lines of a multi-line reply so far
        self._replies: deque[tuple[int, str]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._lost: Exception | None = None

    @classmethod
    def take_over(cls, client: aiosmtplib.SMTP, timeout: float) -> Pipeline:
        """The connection of ``client`` (connected, EHLO said), with what its server
        offers."""
        transport = client.protocol.transport  # type: ignore[union-attr]
        pipeline = cls(
            transport, timeout, pipelining=client.supports_extension("pipelining"),
            eight_bit=client.supports_extension("8bitmime"),
            smtputf8=client.supports_extension("smtputf8"),
        )  # fmt: skip
        transport.set_protocol(pipeline)
        return pipeline

    @property
    def is_connected(self) -> bool:
        return self._lost is None and not self.transport.is_closing()

    # -- asyncio.Protocol ----------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > _MAX_REPLY:
                    self._fail(ServerGone("the server's reply is too long"))
                return
            line = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            self._lines.append(line)
            if line[3:4] == b"-":
                continue
            lines, self._lines = self._lines, []
            try:
                code = int(lines[0][:3])
            except ValueError:
                self._fail(ServerGone(f"not an SMTP reply: {lines[0][:80]!r}"))
                return
            text = "\n".join(x[4:].strip().decode("utf-8", "replace") for x in lines)
            self._replies.append((code, text))
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ServerGone(f"the server closed the connection{f': {exc}' if exc else ''}"))

    def eof_received(self) -> bool:
        self._fail(ServerGone("the server closed the connection"))
        return False

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    def _fail(self, exc: Exception) -> None:
        if self._lost is None:
            self._lost = exc
        for future in (self._waiter, self._writable):
            if future is not None and not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: nobody may be waiting
        self.transport.close()

    # -- talking -------------------------------------------------------------------------
    async def _reply(self) -> tuple[int, str]:
        """The next reply (the caller bounds the wait: one timer per transaction)."""
        while not self._replies:
            if self._lost is not None:
                raise self._lost
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._replies.popleft()

    async def _write(self, data: bytes) -> None:
        if self._lost is not None:
            raise self._lost
        self.transport.write(data)
        if self._writable is not None:
            await self._writable

    async def send(self, sender: bytes, recipient: bytes, message: bytes, options: bytes = b"") -> Reply:
        """One transaction; the reply that decides it (250 when delivered), with the
        command it answers. A refused transaction is reset, so the connection can
        carry the next one. Raises OutcomeUnknown when the connection is lost or the
        server takes longer than ``timeout`` (in all) after the final dot; before it,
        ServerGone or TimeoutError. Either closes the connection."""
        if b"\r" in sender + recipient or b"\n" in sender + recipient:
            raise ValueError("an address holds a line break")
        self._dot = self._reset = False
        run = self._pipelined if self.pipelining else self._lockstep
        try:
            async with asyncio.timeout(self.timeout):
                reply = await run(sender, recipient, message, options)
        except (ServerGone, TimeoutError, OSError) as exc:
            self.close()
            if self._dot:
                what = "no reply in time" if isinstance(exc, TimeoutError) else str(exc)
                raise OutcomeUnknown(f"after the message's final dot: {what}") from exc
            raise
        if reply.code == 421:  # the server is closing this connection
            self.close()
        elif self._reset:
            await self._rset()
        return reply

    async def _pipelined(self, sender: bytes, recipient: bytes, message: bytes, options: bytes) -> Reply:
        await self._write(b"MAIL FROM:<" + sender + b">" + options + b"\r\nRCPT TO:<" + recipient + b">\r\nDATA\r\n")
        got: list[tuple[int, str]] = []
        try:
            for stage in _PIPELINED:
                got.append(await self._reply())
                if got[-1][0] == 421:
                    return Reply(*got[-1], stage)
        except ServerGone:  # a refusal, then the server hung up: the refusal decides
            for (code, text), stage in zip(got, _PIPELINED, strict=False):
                if code not in (250, 251, 354):
                    return Reply(code, text, stage)
            raise
        mail, rcpt, data = got
        if mail[0] == 250 and rcpt[0] in (250, 251) and data[0] == 354:
            return await self._message(message)
        refused = (Reply(*mail, "MAIL") if mail[0] != 250 else Reply(*rcpt, "RCPT") if rcpt[0] not in (250, 251)
                   else Reply(*data, "DATA"))  # fmt: skip
        if data[0] == 354:  # the server took DATA without a recipient: end it empty
            await self._write(b".\r\n")
            await self._reply()
        self._reset = True
        return refused

    async def _lockstep(self, sender: bytes, recipient: bytes, message: bytes, options: bytes) -> Reply:
        """One command at a time, for a server that does not offer PIPELINING."""
        commands = ((b"MAIL FROM:<" + sender + b">" + options, "MAIL", (250,)),
                    (b"RCPT TO:<" + recipient + b">", "RCPT", (250, 251)), (b"DATA", "DATA", (354,)))  # fmt: skip
        for command, stage, good in commands:
            await self._write(command + b"\r\n")
            reply = Reply(*await self._reply(), stage)
            if reply.code not in good:
                self._reset = True
                return reply
        return await self._message(message)

    async def _message(self, message: bytes) -> Reply:
        """The message, dot-stuffed, and its final dot; the server's verdict."""
        if self._lost is not None:
            raise self._lost
        body = (b"." + message if message.startswith(b".") else message).replace(b"\r\n.", b"\r\n..")
        self._dot = True  # from here on, a lost reply leaves the outcome unknown
        await self._write(body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        return Reply(*await self._reply(), "end of data")

    async def _rset(self) -> None:
        """After a refused transaction: RSET, so the connection can carry the next one
        (closed when that fails)."""
        try:
            await self._write(b"RSET\r\n")
            async with asyncio.timeout(self.timeout):
                await self._reply()
        except (ServerGone, TimeoutError, OSError):
            self.close()

    async def quit(self) -> None:
        try:
            await self._write(b"QUIT\r\n")
            async with asyncio.timeout(2):
                await self._reply()
        except (OSError, TimeoutError, ServerGone):
            pass
        finally:
            self.transport.close()

    def close(self) -> None:
        self.transport.close()
