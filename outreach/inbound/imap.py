"""The bounce mailbox over IMAP (imap-tools on imaplib).

``ImapMailbox("imaps://bounces@mail.example.org:993/INBOX", password)`` reads the
folder's unseen messages without marking them seen (``BODY.PEEK``); each message's
``mark_processed`` flags it seen and moves it to the folder ``Processed`` (created when
missing). A process that stops before marking leaves the message where it was, unseen:
the next run reads it again, and its content hash makes it one event.

URLs: ``imaps://user@host[:993]/FOLDER`` (TLS), ``imap://user@host[:143]/FOLDER?starttls=true``
(STARTTLS). Plain ``imap://`` without STARTTLS is refused unless the host is a loopback
address (a test server): it would send the password in clear. The user name may be
percent-encoded (``bounces%40example.org``); the password is never in the URL and
never in a message, an error or a repr.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import socket
import ssl
from collections.abc import Iterator
from functools import partial
from urllib.parse import parse_qsl, unquote, urlsplit

from imap_tools import BaseMailBox, MailBox, MailBoxStartTls, MailBoxUnencrypted
from imap_tools.errors import ImapToolsError

from outreach.domain.urls import split_url
from outreach.inbound.message import InboundError, InboundMessage
from outreach.inbound.readers import PROCESSED
from outreach.links import is_loopback_host

_UID = re.compile(rb"\bUID (\d+)")
_QUERY = {"starttls", "timeout"}
_URL_HINT = "imaps://user@host:993/INBOX, or imap://user@host:143/INBOX?starttls=true"


class ImapMailbox:
    """One IMAP folder of bounces. Use as a context manager, or ``connect``/``close``."""

    def __init__(self, url: str, password: str, *, processed: str = PROCESSED, batch: int = 50,
                 ssl_context: ssl.SSLContext | None = None) -> None:  # fmt: skip
        parts = split_url(url)
        self.url = parts.without_credentials() if parts.password is not None else url
        if parts.password is not None:
            raise InboundError(f"{self.url}: give the IMAP password apart, not in the URL",
                               code="imap_url", hint=_URL_HINT)  # fmt: skip
        if parts.scheme not in ("imap", "imaps"):
            raise InboundError(f"{url}: an IMAP URL starts with imaps:// or imap://", code="imap_url",
                               hint=_URL_HINT)  # fmt: skip
        split = urlsplit(f"{parts.scheme}://{parts.rest}")
        query = dict(parse_qsl(split.query))
        if set(query) - _QUERY or not split.hostname or not parts.username:
            raise InboundError(f"{url}: an IMAP URL names its user and host, and may say only "
                               f"{', '.join(sorted(_QUERY))}", code="imap_url", hint=_URL_HINT)  # fmt: skip
        self.user = parts.username
        self.host = split.hostname
        self.tls = (
            "tls"
            if parts.scheme == "imaps"
            else "starttls"
            if _yes(query.get("starttls"))
            else "none"
        )
        self.port = split.port or (993 if self.tls == "tls" else 143)
        self.folder = unquote(split.path.lstrip("/")) or "INBOX"
        self.timeout = float(query.get("timeout", 30))
        if self.tls == "none" and not is_loopback_host(self.host):
            raise InboundError(f"{url}: plain IMAP would send the password in clear to {self.host}",
                               code="imap_insecure", hint="use imaps://, or imap://...?starttls=true")  # fmt: skip
        self.processed = processed
        self.batch = batch
        self._password = password
        self._ssl_context = ssl_context
        self._box: BaseMailBox | None = None

    def __repr__(self) -> str:
        return f"ImapMailbox({self.url!r})"

    def __enter__(self) -> ImapMailbox:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connection ---------------------------------------------------------------

    def connect(self) -> None:
        """Log in, select the folder, create the processed folder when missing."""
        try:
            if self.tls == "tls":
                box: BaseMailBox = MailBox(
                    self.host, self.port, timeout=self.timeout, ssl_context=self._ssl_context
                )
            elif self.tls == "starttls":
                box = MailBoxStartTls(
                    self.host, self.port, timeout=self.timeout, ssl_context=self._ssl_context
                )
            else:
                box = MailBoxUnencrypted(self.host, self.port, timeout=self.timeout)
        except (OSError, imaplib.IMAP4.error, ImapToolsError) as exc:
            raise self._error("imap_connect", "cannot connect", exc) from None
        try:
            box.login(self.user, self._password, initial_folder=None)
        except (OSError, imaplib.IMAP4.error, ImapToolsError) as exc:
            _quietly_close(box)
            raise self._error(
                "imap_login", f"the server refuses the login of {self.user}", exc
            ) from None
        try:
            if not box.folder.exists(self.processed):
                box.folder.create(self.processed)
            box.folder.set(self.folder)
        except (OSError, imaplib.IMAP4.error, ImapToolsError) as exc:
            _quietly_close(box)
            raise self._error("imap_folder", f"cannot open the folder {self.folder} or {self.processed}",
                              exc) from None  # fmt: skip
        self._box = box

    def close(self) -> None:
        if self._box is not None:
            box, self._box = self._box, None
            _quietly_close(box)

    # -- reading ------------------------------------------------------------------

    def messages(
        self, limit: int | None = None, *, unseen: bool = True
    ) -> Iterator[InboundMessage]:
        """The folder's unseen messages (``unseen=False``: all of them, for a folder
        that a person also reads), oldest first, fetched ``batch`` at a time without
        marking them seen."""
        box = self._connected()
        try:
            uids = box.uids("UNSEEN" if unseen else "ALL")
        except (OSError, imaplib.IMAP4.error, ImapToolsError) as exc:
            raise self._error("imap_command", "cannot search the folder", exc) from None
        uids = sorted(uids, key=int)[:limit]
        for start in range(0, len(uids), self.batch):
            for uid, raw in self._fetch(box, uids[start : start + self.batch]):
                yield InboundMessage(f"{self.url} uid {uid}", raw, partial(self._mark, uid))

    def _fetch(self, box: BaseMailBox, uids: list[str]) -> list[tuple[str, bytes]]:
        try:
            status, data = box.client.uid("FETCH", ",".join(uids), "(BODY.PEEK[])")
        except (OSError, imaplib.IMAP4.error, ImapToolsError) as exc:
            raise self._error("imap_command", "cannot fetch messages", exc) from None
        if status != "OK":
            raise self._error("imap_command", "cannot fetch messages", _said(data))
        found: list[tuple[str, bytes]] = []
        for index, item in enumerate(data):
            if not isinstance(item, tuple):
                continue
            meta, raw = item
            uid = _UID.search(meta)
            after = data[index + 1] if index + 1 < len(data) else b""
            if uid is None and isinstance(after, bytes):
                uid = _UID.search(after)  # a server that sends UID after the literal
            if uid is not None:
                found.append((uid.group(1).decode("ascii"), raw))
        return found

    def _mark(self, uid: str) -> None:
        box = self._connected()
        try:
            status, data = box.client.uid("STORE", uid, "+FLAGS.SILENT", r"(\Seen)")
            if status != "OK":
                raise self._error("imap_command", f"cannot flag message {uid}", _said(data))
            box.move(uid, self.processed)
        except (OSError, imaplib.IMAP4.error, ImapToolsError) as exc:
            raise self._error(
                "imap_command", f"cannot move message {uid} to {self.processed}", exc
            ) from None

    def _connected(self) -> BaseMailBox:
        if self._box is None:
            raise InboundError(f"{self.url}: not connected", code="imap_command")
        return self._box

    def _error(self, code: str, what: str, cause: object) -> InboundError:
        said = str(cause) if not isinstance(cause, socket.timeout) else "timed out"
        if self._password:
            said = said.replace(self._password, "***")
        return InboundError(f"{self.url}: {what} ({said[:300]})", code=code, url=self.url)


def _said(data: object) -> str:
    if isinstance(data, list):
        return " ".join(
            d.decode("utf-8", "replace") if isinstance(d, bytes) else str(d) for d in data
        )
    return str(data)


def _yes(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "on")


def _quietly_close(box: BaseMailBox) -> None:
    try:
        box.logout()
    except (OSError, imaplib.IMAP4.error, ImapToolsError):
        with contextlib.suppress(OSError):
            box.client.shutdown()
