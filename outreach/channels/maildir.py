"""The embedded delivery target for demos and rehearsals: a real SMTP server
(aiosmtpd) on 127.0.0.1 that keeps every message it accepts in a Maildir folder.

Messages travel over real SMTP, so a rehearsal exercises the same code as a launch;
they end in ``.outreach/outbox/`` instead of people's inboxes.
"""

from __future__ import annotations

import mailbox
import socket
from pathlib import Path

from aiosmtpd.controller import Controller


def maildir(folder: Path) -> mailbox.Maildir:
    """The Maildir at ``folder``, made if missing (0700). Two processes starting at
    once may both make it: ``mailbox.Maildir(create=True)`` would fail in the second."""
    for sub in ("", "tmp", "new", "cur"):
        (folder / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    return mailbox.Maildir(folder, create=False)


class _MaildirHandler:
    def __init__(self, folder: Path) -> None:
        self.box = maildir(folder)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # type: ignore[no-untyped-def]
        # aiosmtpd reads pipelined commands in order; it only does not say so
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        key = self.box.add(envelope.original_content or envelope.content)
        return f"250 2.0.0 Ok: kept as {key}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MaildirServer:
    """``with MaildirServer(folder) as server: server.url`` -> smtp://127.0.0.1:PORT"""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self._controller = Controller(
            _MaildirHandler(folder), hostname="127.0.0.1", port=self.port,
            enable_SMTPUTF8=True, data_size_limit=50 * 1024 * 1024,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?pool=4"

    def __enter__(self) -> MaildirServer:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()

    def count(self) -> int:
        return len(maildir(self.folder))
