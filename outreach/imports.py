"""``contacts import``: CSV files -> validated records -> the contact store.

Files are checked whole before anything is written (readable, text in the given
encoding, a header with an email column); then every file is imported in one
transaction, so an import either lands whole or not at all. Rows are validated in
worker processes while the main process writes, so validation does not stand in
front of the inserts on one core. Memory stays flat: rows stream through a small
window of chunks.
"""

from __future__ import annotations

import codecs
import csv
import io
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from outreach.domain.columns import ColumnMap, map_columns
from outreach.domain.contact import ContactRecord, check_text, normalize_contact, normalize_kind
from outreach.domain.errors import ContactValueError, InputFileError
from outreach.ports import ContactStore

CHUNK_ROWS = 2000
PARALLEL_MIN_BYTES = 512 * 1024  # smaller files validate inline: a pool costs more than it saves
SHOWN_REJECTS = 20
MODES = ("upsert", "insert-only")


@dataclass(frozen=True)
class Reject:
    file: str
    line: int
    reason: str
    row: tuple[str, ...] = ()


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
    dry_run: bool = False

    @property
    def rows(self) -> int:
        return self.inserted + self.updated + self.unchanged + self.existing + self.rejected


@dataclass(frozen=True)
class CsvSource:
    path: Path
    encoding: str
    delimiter: str
    columns: ColumnMap
    size: int


def inspect_file(
    path: Path, *, encoding: str = "utf-8", overrides: dict[str, str] | None = None
) -> CsvSource:
    """Check a file whole before anything is imported; raise ``InputFileError`` if it is
    not a readable CSV in ``encoding`` with an email column."""
    name = str(path)
    try:
        size = path.stat().st_size
        handle = path.open("rb")
    except FileNotFoundError:
        raise InputFileError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise InputFileError(f"{name}: is a folder, not a CSV file") from None
    except PermissionError:
        raise InputFileError(f"{name}: not readable (permission denied)") from None
    codec = _codec(encoding)
    decoder = codecs.getincrementaldecoder(codec)(errors="strict")
    head = b""
    lines_before = 0
    with handle:
        while block := handle.read(1 << 20):
            if b"\x00" in block and codec.startswith("utf-8"):
                raise InputFileError(
                    f"{name}: is not a CSV file (it holds binary data)",
                    hint="export the sheet as CSV (UTF-8) and import that file",
                )
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                line = lines_before + block[: exc.start].count(b"\n") + 1
                raise InputFileError(
                    f"{name}: line {line} is not valid {encoding} (byte 0x{block[exc.start]:02x})",
                    hint="if the file was saved by Excel or an older system, try "
                    "--encoding cp1252 (or --encoding latin-1)",
                ) from None
            if len(head) < 65536:
                head += block[:65536]
            lines_before += block.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise InputFileError(
                f"{name}: ends in the middle of a character; it is not valid {encoding}",
                hint="try --encoding cp1252 (or --encoding latin-1)",
            ) from None
    text = head.decode(codec, errors="ignore")
    if not text.strip():
        raise InputFileError(f"{name}: is empty", hint="a CSV file starts with a header line")
    delimiter = _sniff_delimiter(text)
    header = next(csv.reader(io.StringIO(text), delimiter=delimiter), [])
    columns = map_columns([h.strip() for h in header], overrides, source=name)
    return CsvSource(path, codec, delimiter, columns, size)


def _codec(encoding: str) -> str:
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise InputFileError(
            f"unknown encoding {encoding!r}", hint="use utf-8, cp1252 or latin-1"
        ) from None
    return "utf-8-sig" if info.name in ("utf-8", "utf-8-sig") else info.name


def _sniff_delimiter(text: str) -> str:
    """Comma, semicolon or tab: whichever the header line has most of, outside quotes."""
    counts = {",": 0, ";": 0, "\t": 0}
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in "\r\n":
            break
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(counts, key=lambda c: counts[c])
    return best if counts[best] else ","


def read_rows(
    source: CsvSource, on_bytes: Callable[[int], None] | None = None
) -> Iterator[list[tuple[int, list[str]]]]:
    """Chunks of (line number, cells) after the header; line is where the row starts."""
    with source.path.open(encoding=source.encoding, newline="") as handle:
        reader = csv.reader(handle, delimiter=source.delimiter, strict=False)
        next(reader, None)
        line = reader.line_num + 1
        chunk: list[tuple[int, list[str]]] = []
        done = 0
        for row in reader:
            chunk.append((line, row))
            line = reader.line_num + 1
            if len(chunk) >= CHUNK_ROWS:
                yield chunk
                chunk = []
                if on_bytes:
                    now = handle.buffer.tell()
                    on_bytes(now - done)
                    done = now
        if chunk:
            yield chunk
        if on_bytes:
            on_bytes(source.size - done)


@dataclass
class Checked:
    records: list[tuple[int, ContactRecord]]
    rejects: list[tuple[int, str, tuple[str, ...]]]
    blank: int


def validate_chunk(
    targets: tuple[str, ...], default_kind: str | None, chunk: list[tuple[int, list[str]]]
) -> Checked:
    """Validate rows (runs in a worker process): a record per good row, a reason per bad one."""
    width = len(targets)
    out = Checked([], [], 0)
    for line, row in chunk:
        if not any(cell.strip() for cell in row):
            out.blank += 1
            continue
        if len(row) != width:
            out.rejects.append(
                (
                    line,
                    f"has {len(row)} fields but the header has {width} "
                    "(a stray delimiter, or a quote left open?)",
                    tuple(row),
                )
            )
            continue
        values: dict[str, str] = {}
        attrs: dict[str, str] = {}
        parts: list[str] = []
        try:
            for target, cell in zip(targets, row, strict=True):
                if target == "ignore":
                    continue
                if target.startswith("attr."):
                    attrs[target[5:]] = cell
                elif target in ("first_name", "last_name"):
                    parts.append(check_text(target, cell))
                else:
                    values[target] = cell
            if parts and not values.get("name", "").strip():
                values["name"] = " ".join(p for p in parts if p)
            if default_kind and not values.get("kind", "").strip():
                values["kind"] = default_kind
            out.records.append((line, normalize_contact(values, attrs)))
        except ContactValueError as exc:
            out.rejects.append((line, str(exc), tuple(row)))
    return out


def _checked(
    chunks: Iterator[list], fn: Callable[[list], Checked], pool: Executor | None, window: int
) -> Iterator[Checked]:
    if pool is None:
        for chunk in chunks:
            yield fn(chunk)
        return
    pending: deque = deque()
    for chunk in chunks:
        pending.append(pool.submit(fn, chunk))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


class RejectSink:
    """Keeps the first few rejects for the screen and streams all to ``--rejects``."""

    def __init__(self, report: ImportReport, path: Path | None) -> None:
        self.report = report
        self.handle = path.open("w", encoding="utf-8", newline="") if path else None
        self.writer = csv.writer(self.handle) if self.handle else None
        if self.writer:
            self.writer.writerow(["file", "line", "reason", "row"])

    def add(self, file: str, line: int, reason: str, row: tuple[str, ...]) -> None:
        self.report.rejected += 1
        if len(self.report.rejects) < SHOWN_REJECTS:
            self.report.rejects.append(Reject(file, line, reason, row))
        if self.writer:
            buffer = io.StringIO()
            csv.writer(buffer).writerow(row)
            self.writer.writerow([file, line, reason, buffer.getvalue().rstrip("\r\n")])

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
    workers = workers if workers is not None else (os.cpu_count() or 1)
    pool = None
    if workers > 1 and total >= PARALLEL_MIN_BYTES:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    if on_start:
        on_start(total)
    sink = RejectSink(report, rejects_path)
    try:
        with store.writer(dry_run=dry_run) as writer:
            for source in sources:
                name = str(source.path)
                fn = partial(validate_chunk, source.columns.targets, default_kind)
                for checked in _checked(
                    read_rows(source, on_bytes), fn, pool, window=2 * workers + 2
                ):
                    for line, reason, row in checked.rejects:
                        sink.add(name, line, reason, row)
                    report.blank += checked.blank
                    if not checked.records:
                        continue
                    outcome = writer.write([r for _, r in checked.records], mode=mode)
                    report.inserted += outcome.inserted
                    report.updated += outcome.updated
                    report.unchanged += outcome.unchanged
                    report.existing += outcome.existing
                    for i in outcome.suppressed:
                        line = checked.records[i][0]
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
    report.rejects.sort(key=lambda r: (report.files.index(r.file), r.line))
    return report
