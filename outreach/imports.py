"""``contacts import``: CSV files -> validated records -> the contact store.

Files are checked whole before anything is written (readable, text in the given
encoding, a header with an email column: ``importing.sources``); then every file is
imported in one transaction, so an import either lands whole or not at all. The file
is cut into blocks of whole records (``importing.blocks``, ``importing.quotes``);
worker processes (one per core, at a lower priority) parse, validate and prepare them
while this process writes, so validation does not stand in front of the inserts on
one core (``importing.checking``). Blocks stream through a small window; what stays
is an 8-byte digest of each address, so that an address met again in one run (in a
file, or in two of its files) is reported with both lines (``importing.repeats``).
The later row wins, as if the rows were imported one after the other.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from outreach.domain.contact import escape_controls, normalize_kind
from outreach.domain.errors import InputFileError, shown
from outreach.importing.blocks import FIELD_LIMIT, read_block, read_blocks
from outreach.importing.checking import block_keys, checked_blocks, start_pool, validate_block
from outreach.importing.repeats import Repeats
from outreach.importing.sources import CsvSource, inspect_file
from outreach.ports import ContactStore

__all__ = ["FIELD_LIMIT", "MODES", "ImportReport", "Note", "Reject", "Repeat", "import_files",
           "inspect_file"]  # fmt: skip

PARALLEL_MIN_BYTES = 512 * 1024  # smaller files validate inline: a pool costs more than it saves
SHOWN_REJECTS = 20
MAX_WORKERS = 4  # validation processes: at ~6 µs a row each, four outrun the writer
MODES = ("upsert", "insert-only")
LITERAL_QUOTE = (
    'has a quote inside a cell that does not start with one (as in 5" Display): '
    "it was read as a character"
)


@dataclass(frozen=True)
class Reject:
    file: str
    line: int
    reason: str
    row: tuple[str, ...] = ()


@dataclass(frozen=True)
class Repeat:
    """An address met again: at ``file:line``, after ``earlier_file:earlier_line``
    (whose values it then updates: the later row wins)."""

    earlier_file: str
    earlier_line: int
    file: str
    line: int
    address: str  # as compared: case-folded


@dataclass(frozen=True)
class Note:
    """A line imported as read, that a person may want to check: ``file:line: text``."""

    file: str
    line: int
    text: str


@dataclass
class ImportReport:
    files: list[str] = field(default_factory=list)
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    existing: int = 0
    blank: int = 0
    rejected: int = 0
    rejects: list[Reject] = field(default_factory=list)  # the first SHOWN_REJECTS
    repeated: int = 0  # rows whose address an earlier row of the run had
    repeats: list[Repeat] = field(default_factory=list)  # the first SHOWN_REJECTS
    noted: int = 0  # lines with a quote read as a character
    notes: list[Note] = field(default_factory=list)  # the first SHOWN_REJECTS
    dry_run: bool = False


class RejectSink:
    """Keeps the first few rejects for the screen and streams all to ``--rejects``."""

    def __init__(self, report: ImportReport, path: Path | None) -> None:
        self.report = report
        self.handle = path.open("w", encoding="utf-8", newline="") if path else None
        self.writer = csv.writer(self.handle) if self.handle else None
        if self.writer:
            self.writer.writerow(["file", "line", "reason", "row"])

    def add(self, file: str, line: int, reason: str, row: tuple[str, ...]) -> None:
        """A rejected row. The reason is shown with every unprintable character
        escaped, and the row (in the file) with its control characters escaped: they
        are what a person would have to remove anyway, and a file that is printed
        must not send them to the terminal."""
        reason = shown(reason)
        self.report.rejected += 1
        if len(self.report.rejects) < SHOWN_REJECTS:
            self.report.rejects.append(Reject(file, line, reason, row))
        if self.writer:
            buffer = io.StringIO()
            csv.writer(buffer).writerow(row)
            text = escape_controls(buffer.getvalue().rstrip("\r\n"))
            self.writer.writerow([escape_controls(file), line, reason, text])

    def close(self) -> None:
        if self.handle:
            self.handle.close()


def import_files(
    store: ContactStore,
    paths: list[Path],
    *,
    mode: str = "upsert",
    dry_run: bool = False,
    encoding: str = "utf-8",
    overrides: dict[str, str] | None = None,
    default_kind: str | None = None,
    rejects_path: Path | None = None,
    workers: int | None = None,
    on_start: Callable[[int], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> ImportReport:
    if mode not in MODES:
        raise InputFileError(f"unknown --mode {mode!r}", hint=f"use one of {', '.join(MODES)}")
    if default_kind:
        default_kind = normalize_kind(default_kind)
    sources = [inspect_file(p, encoding=encoding, overrides=overrides) for p in paths]
    report = ImportReport(files=[str(p) for p in paths], dry_run=dry_run)
    total = sum(s.size for s in sources)
    if workers is None:  # a worker per core, behind the writer (see checking._start_worker);
        # more than MAX_WORKERS would wait for the one writer, holding memory
        cores = os.cpu_count() or 1
        workers = min(cores, MAX_WORKERS) if cores > 1 else 0
    pool = start_pool(workers) if workers > 0 and total >= PARALLEL_MIN_BYTES else None
    if on_start:
        on_start(total)
    sink = RejectSink(report, rejects_path)
    repeats = Repeats(SHOWN_REJECTS)
    try:
        with store.writer(dry_run=dry_run) as writer:
            for file_index, source in enumerate(sources):
                name = str(source.path)
                fn = partial(validate_block, source, default_kind, writer.preparer())
                for checked in checked_blocks(
                    read_blocks(source, on_bytes), fn, pool, window=2 * workers + 2
                ):
                    if bad := checked.error:
                        raise InputFileError(f"{shown(name)}: line {bad.line}: {bad.reason}",
                                             hint=bad.hint)  # fmt: skip
                    for line in checked.quote_lines:
                        _note(report, name, line, LITERAL_QUOTE)
                    for line, reason, row in checked.rejects:
                        sink.add(name, line, reason, row)
                    report.blank += checked.blank
                    if not checked.lines:
                        continue
                    outcome = writer.write_prepared(checked.rows, mode=mode)
                    repeats.add(file_index, checked, outcome)
                    report.inserted += outcome.inserted
                    report.updated += outcome.updated
                    report.unchanged += outcome.unchanged
                    report.existing += outcome.existing
                    for i in outcome.suppressed:
                        line = checked.lines[i]
                        sink.add(
                            name,
                            line,
                            "this address was erased on request and is "
                            "suppressed; it cannot be imported again",
                            (),
                        )
    finally:
        sink.close()
        if pool:
            pool.shutdown(cancel_futures=True)
    _report_repeats(report, repeats, sources, default_kind)
    report.rejects.sort(key=lambda r: (report.files.index(r.file), r.line))
    return report


def _note(report: ImportReport, file: str, line: int, text: str) -> None:
    report.noted += 1
    if len(report.notes) < SHOWN_REJECTS:
        report.notes.append(Note(file, line, text))


def _report_repeats(
    report: ImportReport, repeats: Repeats, sources: list[CsvSource], default_kind: str | None
) -> None:
    def read_again(file_index: int, where: tuple[int, int, int, bool]) -> list[tuple[int, str]]:
        source = sources[file_index]
        return block_keys(source, default_kind, read_block(source, *where))

    report.repeated, found = repeats.resolve(read_again)
    files = report.files
    report.repeats = [Repeat(files[earlier_file], earlier_line, files[file_index], line, key)
                      for earlier_file, earlier_line, file_index, line, key in found]  # fmt: skip
