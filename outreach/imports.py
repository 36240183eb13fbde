"""``contacts import``: CSV files -> validated records -> the contact store.

Files are checked whole before anything is written (readable, text in the given
encoding, a header with an email column); then every file is imported in one
transaction, so an import either lands whole or not at all. The file is cut into
blocks of whole records; worker processes (one per core, at a lower priority)
parse, validate and prepare them while this process writes, so validation does not
stand in front of the inserts on one core. Blocks stream through a small window;
what stays is a hash of each address (8 bytes while every address is new to the
store, about 75 once the import meets stored ones: see ``Repeats``), so that an
address met again in one run (in a file, or in two of its files) is reported with
both lines. The later row wins, as if the rows were imported one after the other.
"""

from __future__ import annotations

import codecs
import csv
import io
import multiprocessing
import os
import pickle
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import Any

from outreach.children import die_with_parent
from outreach.domain.columns import ColumnMap, map_columns
from outreach.domain.contact import (
    ContactRecord,
    RowNormalizer,
    escape_controls,
    normalize_kind,
)
from outreach.domain.errors import ContactValueError, InputFileError, shown
from outreach.ports import BatchOutcome, ContactStore

BLOCK_BYTES = 256 * 1024  # about 2,000 rows: one worker task and one write batch
PARALLEL_MIN_BYTES = 512 * 1024  # smaller files validate inline: a pool costs more than it saves
SHOWN_REJECTS = 20
MAX_WORKERS = 4  # validation processes: at ~6 µs a row each, four outrun the writer
MODES = ("upsert", "insert-only")


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
    dry_run: bool = False


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
    name = shown(str(path))
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


@dataclass(frozen=True)
class Block:
    """Whole CSV records from a file, as bytes, and the line the first one starts on."""

    line: int
    data: bytes
    first: bool  # the file's first block: it starts with the header
    offset: int = 0  # where ``data`` starts in the file


def read_blocks(
    source: CsvSource, on_bytes: Callable[[int], None] | None = None
) -> Iterator[Block]:
    """Cut the file into blocks of whole records, for workers to parse and validate.

    A block ends at a line break outside quotes (an even number of quote characters
    before it, since a block always starts outside quotes), so a quoted field with
    line breaks in it is never cut. Line breaks are 0x0A, which no multi-byte UTF-8
    character contains, so a block never splits a character either.
    """
    line = 1
    first = True
    carry = b""
    offset = 0
    with source.path.open("rb") as handle:
        while True:
            chunk = handle.read(BLOCK_BYTES)
            data = carry + chunk
            if not chunk:
                if data:
                    yield Block(line, data, first, offset)
                    if on_bytes:
                        on_bytes(len(data))
                return
            cut = _record_boundary(data)
            if cut <= 0:  # no boundary yet (a long quoted field): read on
                carry = data
                continue
            block, carry = data[:cut], data[cut:]
            yield Block(line, block, first, offset)
            if on_bytes:
                on_bytes(len(block))
            line += block.count(b"\n")
            offset += len(block)
            first = False


def read_block(source: CsvSource, line: int, offset: int, size: int, first: bool) -> Block:
    """A block read again from where ``read_blocks`` found it."""
    with source.path.open("rb") as handle:
        handle.seek(offset)
        return Block(line, handle.read(size), first, offset)


def _record_boundary(data: bytes) -> int:
    """Just past the last line break in ``data`` that is outside quotes, or 0."""
    end = len(data)
    while (pos := data.rfind(b"\n", 0, end)) >= 0:
        if data.count(b'"', 0, pos) % 2 == 0:
            return pos + 1
        end = pos
    return 0


def _rows(source: CsvSource, block: Block) -> Iterator[tuple[int, list[str]]]:
    """(line, cells) of each record in ``block``; the header is skipped."""
    encoding = source.encoding if block.first else source.encoding.removesuffix("-sig")
    text = block.data.decode(encoding)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=source.delimiter, strict=False)
    if block.first:
        next(reader, None)
    start = reader.line_num
    for row in reader:
        yield block.line + start, row
        start = reader.line_num


@dataclass
class Checked:
    lines: list[int]  # of the good rows
    rows: Any  # the good rows, prepared for the store's writer
    rejects: list[tuple[int, str, tuple[str, ...]]]
    blank: int
    keys: str = ""  # the email_key of each good row, one a line
    block: tuple[int, int, int, bool] = (0, 0, 0, False)  # line, offset, size, first


def validate_block(
    source: CsvSource,
    default_kind: str | None,
    prepare: Callable[[list[ContactRecord]], Any],
    block: Block,
) -> Checked:
    """Parse and validate a block (runs in a worker process): a prepared row per good
    record, a reason per bad one."""
    width = len(source.columns.targets)
    normalize = RowNormalizer(source.columns.targets, default_kind)
    out = Checked([], None, [], 0, block=(block.line, block.offset, len(block.data), block.first))
    records: list[ContactRecord] = []
    for line, row in _rows(source, block):
        if len(row) != width:
            if not "".join(row).strip():
                out.blank += 1
                continue
            reason = (
                f"has {len(row)} fields but the header has {width} "
                "(a stray delimiter, or a quote left open?)"
            )
            out.rejects.append((line, reason, tuple(row)))
            continue
        try:
            records.append(normalize(row))
            out.lines.append(line)
        except ContactValueError as exc:
            if not "".join(row).strip():
                out.blank += 1
            else:
                out.rejects.append((line, str(exc), tuple(row)))
    out.rows = prepare(records)
    # email_key of each address (as the writer's prepare, str.casefold itself: no
    # Python call per row); no address holds a line break
    out.keys = "\n".join(map(str.casefold, map(_EMAIL, records)))
    return out


_EMAIL = itemgetter(ContactRecord._fields.index("email"))


def _checked(
    blocks: Iterator[Block], fn: Callable[[Block], Checked], pool: Executor | None, window: int
) -> Iterator[Checked]:
    """Validated blocks, in file order (so a later row for the same address wins).

    With a pool, up to ``window`` blocks are with the worker processes while this
    process writes the oldest, so memory stays flat whatever the file's size. There
    is a worker per core: while this process waits for a block, every core validates.
    """
    if pool is None:
        for block in blocks:
            yield fn(block)
        return
    pending: deque[Future[bytes]] = deque()
    for block in blocks:
        pending.append(pool.submit(_pickled, fn, block))
        if len(pending) >= window:
            yield pickle.loads(pending.popleft().result())
    while pending:
        yield pickle.loads(pending.popleft().result())


def _start_worker(parent: int) -> None:
    """A validation worker dies with the import, even on kill -9, and yields the CPU
    to the writing process: the writes are the import's critical path, and the
    workers use whatever time the cores have left."""
    die_with_parent(parent)
    os.nice(10)


def _pickled(fn: Callable[[Block], Checked], block: Block) -> bytes:
    """``fn(block)``, pickled in the worker: the pool's result thread then only
    passes bytes along, and the writing thread unpickles when it takes the block,
    instead of the two threads contending for the interpreter during the writes."""
    return pickle.dumps(fn(block), protocol=pickle.HIGHEST_PROTOCOL)


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


class Repeats:
    """Finds addresses met again within one import run, in any of its files.

    The store says when a block met an address it holds (updated, unchanged, left
    alone or suppressed): a repeat within the run is always one of those, since the
    writer takes rows as if one after the other. Until a block meets one (a new list
    into an empty store never does), only a 64-bit hash per row is kept, 8 bytes in
    an array. From then on, a dict of hash -> number of the last block the address
    was in (about 75 bytes an address) tells repeats from addresses stored before;
    a block whose addresses are all new there costs a few C-level dict operations,
    and only a block with a repeat is walked row by row. The line of an earlier row
    in another block is found, for the repeats shown, by reading that block again
    (``resolve``); that also weeds out two addresses that merely share a hash (odds
    of about one in 37 million for a million rows).
    """

    def __init__(self, report: ImportReport) -> None:
        self.report = report
        self.hashes: list[array[int]] | None = []  # per block, until a block meets the store
        self.seen: dict[int, int] = {}  # then: hash of email_key -> number of its last block
        self.blocks: list[tuple[int, tuple[int, int, int, bool]]] = []  # file index, where
        # repeats to show: earlier (file index, line) when known, else its block number
        self.shown: list[tuple[tuple[int, int] | int, int, int, str]] = []

    def add(self, file_index: int, checked: Checked, outcome: BatchOutcome) -> None:
        """Note a written block; ``outcome`` is what the store did with it."""
        number = len(self.blocks)
        self.blocks.append((file_index, checked.block))
        keys = checked.keys.split("\n")
        hashes = array("q", map(hash, keys))
        if self.hashes is not None:
            met = outcome.updated + outcome.unchanged + outcome.existing + len(outcome.suppressed)
            if not met:  # every address new to the store: none met before in this run
                self.hashes.append(hashes)
                return
            for earlier, block_hashes in enumerate(self.hashes):
                self.seen.update(dict.fromkeys(block_hashes, earlier))
            self.hashes = None
        placed = dict.fromkeys(hashes, number)
        if len(placed) == len(hashes) and self.seen.keys().isdisjoint(placed):
            self.seen.update(placed)
            return
        here: dict[int, tuple[int, str]] = {}  # this block's rows so far: hash -> line, key
        for digest, key, line in zip(hashes, keys, checked.lines, strict=True):
            if digest in here:
                if here[digest][1] == key:  # (else two addresses that share a hash)
                    self._found((file_index, here[digest][0]), file_index, line, key)
            elif digest in self.seen:
                self._found(self.seen[digest], file_index, line, key)
            here[digest] = (line, key)
        self.seen.update(placed)

    def _found(self, earlier: tuple[int, int] | int, file_index: int, line: int, key: str) -> None:
        self.report.repeated += 1
        if len(self.shown) < SHOWN_REJECTS:
            self.shown.append((earlier, file_index, line, key))

    def resolve(self, sources: list[CsvSource], default_kind: str | None) -> None:
        """Fill ``report.repeats``: the earlier line of each repeat shown, read again
        from its block where it was in another one."""
        again: dict[int, list[tuple[str, int]]] = {}
        files = self.report.files
        for earlier, file_index, line, key in self.shown:
            if isinstance(earlier, int):  # a block number
                if earlier not in again:
                    earlier_file, where = self.blocks[earlier]
                    source = sources[earlier_file]
                    block = read_block(source, *where)
                    checked = validate_block(source, default_kind, _unprepared, block)
                    again[earlier] = list(
                        zip(checked.keys.split("\n"), checked.lines, strict=True)
                    )
                lines = [n for k, n in again[earlier] if k == key]
                if not lines:  # another address with the same hash: no repeat at all
                    self.report.repeated -= 1
                    continue
                earlier = (self.blocks[earlier][0], lines[-1])
            self.report.repeats.append(
                Repeat(files[earlier[0]], earlier[1], files[file_index], line, key)
            )


def _unprepared(records: list[ContactRecord]) -> None:
    """No block for the writer: ``validate_block`` only re-reads addresses."""
    return None


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
    if workers is None:  # a worker per core, behind the writer (see _start_worker);
        # more than MAX_WORKERS would wait for the one writer, holding memory
        cores = os.cpu_count() or 1
        workers = min(cores, MAX_WORKERS) if cores > 1 else 0
    pool = None
    if workers > 0 and total >= PARALLEL_MIN_BYTES:
        pool = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("fork"),
            initializer=_start_worker, initargs=(os.getpid(),),
        )  # fmt: skip
    if on_start:
        on_start(total)
    sink = RejectSink(report, rejects_path)
    repeats = Repeats(report)
    try:
        with store.writer(dry_run=dry_run) as writer:
            for file_index, source in enumerate(sources):
                name = str(source.path)
                fn = partial(validate_block, source, default_kind, writer.preparer())
                for checked in _checked(
                    read_blocks(source, on_bytes), fn, pool, window=2 * workers + 2
                ):
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
    repeats.resolve(sources, default_kind)
    report.rejects.sort(key=lambda r: (report.files.index(r.file), r.line))
    return report
