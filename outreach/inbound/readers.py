"""Mailboxes on this machine: a Maildir folder, an mbox file, .eml files (or a folder of
them), and ``-`` for one message on standard input (a pipe from the MTA:
``bounces: "|outreach bounces ingest -"``).

Every path is checked before the first message is yielded: a wrong path stops the
reading before anything is handled. In a Maildir, ``mark_processed`` moves a message
into the Maildir++ subfolder ``.Processed`` (IMAP shows it as the folder
``Processed``, as ``ImapMailbox`` does), flagged seen; the other sources cannot keep
that, and give ``mark_processed = None``.
"""

from __future__ import annotations

import contextlib
import mailbox
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from outreach.inbound.message import InboundError, InboundMessage

PROCESSED = "Processed"


def read_paths(paths: Iterable[str | Path], *, stdin: BinaryIO | None = None,
               processed: str = PROCESSED) -> Iterator[InboundMessage]:  # fmt: skip
    """Every message of ``paths``, in order: a Maildir's ``new/`` then ``cur/`` (by file
    name, which starts with the delivery time), an mbox's messages in file order, a
    folder's ``*.eml`` files by name. ``processed`` names the Maildir++ subfolder that
    handled messages move to. Raises InboundError for a path that is not a mailbox
    here, when called, before any message is read."""
    readers = [_reader_for(str(p), stdin, processed) for p in paths]
    return (message for reader in readers for message in reader())


def _reader_for(
    path: str, stdin: BinaryIO | None, processed: str
) -> Callable[[], Iterator[InboundMessage]]:
    if path == "-":
        stream = stdin if stdin is not None else sys.stdin.buffer
        return lambda: iter([InboundMessage("stdin", stream.read())])
    where = Path(path)
    if where.is_dir():
        if (where / "cur").is_dir() and (where / "new").is_dir():
            return lambda: _maildir(where, processed)
        files = sorted(where.glob("*.eml"))
        if not files:
            raise InboundError(f"{path}: a folder that is neither a Maildir (cur/, new/) nor holds .eml files",
                               code="inbound_not_a_mailbox", path=path)  # fmt: skip
        return lambda: (InboundMessage(str(f), _read(f)) for f in files)
    if not where.is_file():
        raise InboundError(
            f"{path}: no such file or folder", code="inbound_path_missing", path=path
        )
    try:
        with where.open("rb") as handle:
            is_mbox = handle.read(5) == b"From "
    except OSError as exc:
        raise InboundError(
            f"{path}: cannot be read ({exc.strerror})", code="inbound_read", path=path
        ) from None
    if is_mbox:
        return lambda: _mbox(where)
    return lambda: iter([InboundMessage(str(where), _read(where))])


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InboundError(
            f"{path}: cannot be read ({exc.strerror})", code="inbound_read", path=str(path)
        ) from None


def _mbox(path: Path) -> Iterator[InboundMessage]:
    box = mailbox.mbox(path, create=False)
    try:
        for number, key in enumerate(box.iterkeys(), start=1):
            yield InboundMessage(f"{path} message {number}", box.get_bytes(key))
    finally:
        box.close()


def _maildir(root: Path, processed: str) -> Iterator[InboundMessage]:
    for sub in ("new", "cur"):
        try:
            names = sorted(n for n in os.listdir(root / sub) if not n.startswith("."))
        except FileNotFoundError:
            continue
        for name in names:
            path = root / sub / name
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                continue  # taken by another reader since the listing
            except OSError as exc:
                raise InboundError(f"{path}: cannot be read ({exc.strerror})", code="inbound_read",
                                   path=str(path)) from None  # fmt: skip
            yield InboundMessage(str(path), raw, _Move(root, path, processed))


class _Move:
    """Moves one Maildir message into the ``.NAME`` subfolder's ``cur/``, seen."""

    def __init__(self, root: Path, path: Path, folder: str) -> None:
        self.root, self.path, self.folder = root, path, folder

    def __call__(self) -> None:
        target = self.root / f".{self.folder}"
        if not (target / "cur").is_dir():
            for sub in ("cur", "new", "tmp"):
                (target / sub).mkdir(parents=True, exist_ok=True)
            (target / "maildirfolder").touch()
        base, _sep, info = self.path.name.partition(":2,")
        flags = "".join(sorted(set(info) | {"S"}))
        with contextlib.suppress(
            FileNotFoundError
        ):  # moved already (another reader, a second call)
            os.rename(self.path, target / "cur" / f"{base}:2,{flags}")

    def __repr__(self) -> str:
        return f"<move {self.path.name} to .{self.folder}>"
