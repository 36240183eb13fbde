"""A real SMTP server on 127.0.0.1 for tests: records what it accepts and can be
told to misbehave (temporary and permanent refusals, dropped connections, slowness;
a relay that refuses us at EHLO, AUTH, MAIL FROM or RCPT TO; a reply lost or late
after the server took the message), with or without PIPELINING and SMTPUTF8."""

from __future__ import annotations

import asyncio
import random
import threading
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from outreach.channels.maildir import free_port


@dataclass
class Faults:
    temporary: float = 0.0  # chance of a 421/451 reply to DATA
    drop: float = 0.0  # chance of closing the connection instead of answering DATA
    slow: float = 0.0  # seconds to wait before answering DATA
    no_such_user: set[str] = field(default_factory=set)  # 550 5.1.1 at RCPT
    rejected: set[str] = field(default_factory=set)  # 554 5.7.1 at DATA (permanent, not a bounce)
    # the relay refuses us: every EHLO, MAIL FROM, RCPT TO, or message answered with this
    ehlo_reply: str | None = None  # e.g. "554 5.7.1 Access denied"
    mail_reply: str | None = None  # e.g. "553 Sender address rejected"
    rcpt_reply: str | None = None  # e.g. "550 Relay access denied"
    data_reply: str | None = None  # after the final dot, e.g. "554 5.7.1 Message refused"
    replies: dict[str, str] = field(default_factory=dict)  # recipient -> its answer to RCPT TO
    data_replies: dict[str, str] = field(default_factory=dict)  # recipient -> the answer to its message
    # the first message to each of these is taken, then the reply is lost (the
    # connection closes after the final dot) or comes late_by seconds late
    lose_reply: set[str] = field(default_factory=set)
    late_reply: set[str] = field(default_factory=set)
    late_by: float = 3.0
    seed: int = 7


class Recorder:
    def __init__(self, faults: Faults | None = None, *, pipelining: bool = True) -> None:
        self.faults = faults or Faults()
        self.pipelining = pipelining  # offer PIPELINING (aiosmtpd handles it, but does not say so)
        self.pipelined_commands = 0  # commands that arrived behind another, unanswered one
        self.random = random.Random(self.faults.seed)
        self.accepted: list[tuple[str, str, bytes]] = []  # (recipient, Message-ID, raw)
        self.envelopes: list[tuple[str, list[str], str]] = []  # (MAIL FROM, its options, RCPT TO) taken
        self.attempts: dict[str, int] = {}
        self.lock = threading.Lock()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        if self.faults.ehlo_reply:
            return [self.faults.ehlo_reply]
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if server._reader._buffer.startswith(b"DATA"):  # sent with RCPT, before its reply
            self.pipelined_commands += 1
        if address in self.faults.no_such_user:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if address in self.faults.replies:
            return self.faults.replies[address]
        if self.faults.rcpt_reply:
            return self.faults.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.faults.mail_reply:
            return self.faults.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        rcpt = envelope.rcpt_tos[0]
        with self.lock:
            self.attempts[rcpt] = self.attempts.get(rcpt, 0) + 1
            first = self.attempts[rcpt] == 1
            roll = self.random.random()
        if self.faults.data_reply or rcpt in self.faults.data_replies:
            return self.faults.data_replies.get(rcpt) or self.faults.data_reply
        if first and rcpt in self.faults.lose_reply | self.faults.late_reply:
            self._take(envelope)
            if rcpt in self.faults.lose_reply:
                server.transport.close()  # taken, and the reply is lost
                return "250 2.0.0 Ok: queued (never heard)"
            await asyncio.sleep(self.faults.late_by)
            return "250 2.0.0 Ok: queued (late)"
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
        self._take(envelope)
        return "250 2.0.0 Ok: queued"

    def _take(self, envelope) -> None:  # type: ignore[no-untyped-def]
        raw = envelope.original_content or envelope.content
        message = BytesParser(policy=policy.default).parsebytes(raw, headersonly=True)
        with self.lock:
            self.accepted.append((envelope.rcpt_tos[0], message["Message-ID"], raw))
            self.envelopes.append((envelope.mail_from, list(envelope.mail_options), envelope.rcpt_tos[0]))

    def message_ids(self) -> list[str]:
        with self.lock:
            return [m for _r, m, _raw in self.accepted]


class SmtpServer:
    """``smtputf8``: offer SMTPUTF8; ``login``: (user, password) that AUTH requires
    (offered without TLS here; a wrong one gets 535 5.7.8)."""

    def __init__(self, recorder: Recorder, *, smtputf8: bool = True,
                 login: tuple[str, str] | None = None) -> None:  # fmt: skip
        self.recorder = recorder
        self.port = free_port()
        auth = {}
        if login is not None:
            expected = LoginPassword(login[0].encode(), login[1].encode())

            def authenticator(server, session, envelope, mechanism, data):  # type: ignore[no-untyped-def]
                return AuthResult(success=data == expected, handled=False)

            auth = {"authenticator": authenticator, "auth_required": True, "auth_require_tls": False}
        self.controller = Controller(
            recorder, hostname="127.0.0.1", port=self.port, enable_SMTPUTF8=smtputf8, **auth
        )

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?pool=4&timeout=5"

    def url_with(self, *, user: str = "", password: str = "", timeout: float = 5) -> str:
        who = f"{user}:{password}@" if user else ""
        return f"smtp://{who}127.0.0.1:{self.port}?pool=4&timeout={timeout:g}"

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


class Refuser:
    """A server that refuses every connection in its greeting (``554 ...``), as a
    relay that will not serve this client does: ``with Refuser() as url: ...``."""

    def __init__(self, greeting: str = "554 5.7.1 No SMTP service for you") -> None:
        import socketserver

        line = greeting.encode() + b"\r\n"

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.sendall(line)
                while self.request.recv(1024):  # until the client goes
                    self.request.sendall(b"503 5.5.1 No SMTP service\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"smtp://127.0.0.1:{self.server.server_address[1]}?pool=4&timeout=5"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
