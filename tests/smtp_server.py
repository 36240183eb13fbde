"""A real SMTP server on 127.0.0.1 for tests: records what it accepts and can be
told to misbehave (temporary and permanent refusals, dropped connections, slowness)."""

from __future__ import annotations

import asyncio
import random
import threading
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser

from aiosmtpd.controller import Controller

from outreach.channels.maildir import free_port


@dataclass
class Faults:
    temporary: float = 0.0  # chance of a 421/451 reply to DATA
    drop: float = 0.0  # chance of closing the connection instead of answering DATA
    slow: float = 0.0  # seconds to wait before answering DATA
    no_such_user: set[str] = field(default_factory=set)  # 550 5.1.1 at RCPT
    rejected: set[str] = field(default_factory=set)  # 554 5.7.1 at DATA (permanent, not a bounce)
    seed: int = 7


class Recorder:
    def __init__(self, faults: Faults | None = None, *, pipelining: bool = True) -> None:
        self.faults = faults or Faults()
        self.pipelining = pipelining  # offer PIPELINING (aiosmtpd handles it, but does not say so)
        self.pipelined_commands = 0  # commands that arrived behind another, unanswered one
        self.random = random.Random(self.faults.seed)
        self.accepted: list[tuple[str, str, bytes]] = []  # (recipient, Message-ID, raw)
        self.attempts: dict[str, int] = {}
        self.lock = threading.Lock()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if server._reader._buffer.startswith(b"DATA"):  # sent with RCPT, before its reply
            self.pipelined_commands += 1
        if address in self.faults.no_such_user:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        rcpt = envelope.rcpt_tos[0]
        with self.lock:
            self.attempts[rcpt] = self.attempts.get(rcpt, 0) + 1
            roll = self.random.random()
        if self.faults.slow:
            await asyncio.sleep(self.faults.slow)
        if rcpt in self.faults.rejected:
            return "554 5.7.1 Message rejected as spam"
        if roll < self.faults.drop:
            server.transport.close()
            return "421 4.4.2 connection dropped"
        if roll < self.faults.drop + self.faults.temporary:
            return self.random.choice(
                ["421 4.7.0 Try again later", "451 4.3.0 Temporary local problem"]
            )
        raw = envelope.original_content or envelope.content
        message = BytesParser(policy=policy.default).parsebytes(raw, headersonly=True)
        with self.lock:
            self.accepted.append((rcpt, message["Message-ID"], raw))
        return "250 2.0.0 Ok: queued"

    def message_ids(self) -> list[str]:
        with self.lock:
            return [m for _r, m, _raw in self.accepted]


class SmtpServer:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.port = free_port()
        self.controller = Controller(
            recorder, hostname="127.0.0.1", port=self.port, enable_SMTPUTF8=True
        )

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?pool=4&timeout=5"

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
