"""SMTP transactions with PIPELINING (RFC 2920) on a connection aiosmtplib opened.

aiosmtplib connects, secures (TLS or STARTTLS), authenticates and says EHLO; it
then waits for the reply to each command before sending the next, four round
trips and four parses per message. When the server offers PIPELINING, this
protocol takes the connection over (``transport.set_protocol``) and sends MAIL,
RCPT and DATA in one write, then the message: two round trips. It does nothing
else: no connection set-up, no TLS, no authentication of its own.
"""

from __future__ import annotations

import asyncio
from collections import deque

import aiosmtplib

Reply = tuple[int, str]
_MAX_REPLY = 64 * 1024


class ServerGone(ConnectionError):
    pass


class Pipeline(asyncio.Protocol):
    def __init__(self, transport: asyncio.Transport, timeout: float) -> None:
        self.transport = transport
        self.timeout = timeout
        self._buffer = bytearray()
        self._lines: list[bytes] = []  # the lines of a multi-line reply so far
        self._replies: deque[Reply] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._lost: Exception | None = None

    @classmethod
    def take_over(cls, client: aiosmtplib.SMTP, timeout: float) -> Pipeline:
        transport = client.protocol.transport  # type: ignore[union-attr]
        pipeline = cls(transport, timeout)
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
    async def _reply(self) -> Reply:
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
        """One transaction; the reply that decides it (250 when delivered). A refused
        transaction is reset, so the connection can carry the next one. Raises
        TimeoutError when the server takes longer than ``timeout`` in all."""
        if b"\r" in sender + recipient or b"\n" in sender + recipient:
            raise ValueError("an address holds a line break")
        async with asyncio.timeout(self.timeout):
            return await self._transaction(sender, recipient, message, options)

    async def _transaction(self, sender: bytes, recipient: bytes, message: bytes, options: bytes) -> Reply:
        await self._write(b"MAIL FROM:<" + sender + b">" + options + b"\r\nRCPT TO:<" + recipient + b">\r\nDATA\r\n")
        mail, rcpt, data = await self._reply(), await self._reply(), await self._reply()
        refused = mail if mail[0] != 250 else rcpt if rcpt[0] not in (250, 251) else None
        if data[0] == 354:
            if refused is None:
                body = (b"." + message if message.startswith(b".") else message).replace(b"\r\n.", b"\r\n..")
                await self._write(body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n")
                return await self._reply()
            await self._write(b".\r\n")  # the server took DATA without a recipient: end it empty
            await self._reply()
        elif refused is None:
            refused = data
        await self._write(b"RSET\r\n")
        await self._reply()
        return refused

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
