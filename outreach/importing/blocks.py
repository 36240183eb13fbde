"""A CSV file cut into blocks of whole records (``read_blocks``), and the records of a
block as the csv module reads them (``rows``).

A cell holds at most ``FIELD_LIMIT`` characters (1 MiB): the csv module's limit is
raised to it wherever a block is parsed, worker processes included. A longer cell
stops the import with its file and line (nothing is written: an import is whole or
nothing), and so does a quoted cell that runs on past the limit without its closing
quote: the file is not read on into memory in search of one.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from outreach.domain.errors import InputFileError, shown
from outreach.importing.quotes import QuoteScanner
from outreach.importing.sources import CsvSource

BLOCK_BYTES = 256 * 1024  # about 2,000 rows: one worker task and one write batch
FIELD_LIMIT = 1 << 20  # characters in one cell
FIELD_LIMIT_TEXT = "1 MiB (1,048,576 characters)"
# A quoted cell of more bytes than this holds more than FIELD_LIMIT characters: a
# character takes at most 4 bytes in UTF-8, and "" stands for one quote.
OPEN_CELL_BYTES = 8 * FIELD_LIMIT
LONG_CELL_HINT = (
    "a cell holds at most 1 MiB; shorten that cell or leave its column out of the file, "
    'or, if it should be short, look for a quote left open (a quote inside a quoted cell is written "")'
)


class BadRecord(Exception):
    """A record the csv module cannot read: the line it starts on, why, what to do."""

    def __init__(self, line: int, reason: str, hint: str | None = None) -> None:
        super().__init__(line, reason, hint)
        self.line = line
        self.reason = reason
        self.hint = hint


@dataclass(frozen=True)
class Block:
    """Whole CSV records from a file, as bytes, and the line the first one starts on."""

    line: int
    data: bytes
    first: bool  # the file's first block: it starts with the header
    offset: int = 0  # where ``data`` starts in the file
    quote_lines: tuple[int, ...] = ()  # lines with a quote read as a character (5" Display)


def read_blocks(
    source: CsvSource, on_bytes: Callable[[int], None] | None = None
) -> Iterator[Block]:
    """Cut the file into blocks of whole records, for workers to parse and validate.

    A block ends at a line break outside quotes, as the csv module reads them (see
    ``QuoteScanner``), so a quoted cell with line breaks in it is never cut, and a
    quote inside an unquoted cell is a character. Line breaks are 0x0A, which no
    multi-byte UTF-8 character contains, so a block never splits a character either.
    """
    line, first, offset = 1, True, 0
    pending: list[bytes] = []  # read since the last block: no record ends in it
    with source.path.open("rb") as handle:
        chunk = handle.read(BLOCK_BYTES)
        bom = source.encoding == "utf-8-sig" and chunk.startswith(codecs.BOM_UTF8)
        skip = len(codecs.BOM_UTF8) if bom else 0  # the decoder drops it: a record starts after it
        scanner = QuoteScanner(source.delimiter, offset=skip)
        while chunk:
            cut = scanner.feed(chunk[skip:] if skip else chunk)
            if cut:
                cut += skip
                data = b"".join([*pending, chunk[:cut]])
                pending = [chunk[cut:]] if cut < len(chunk) else []
                quotes = scanner.take_literal(offset + len(data))
                yield Block(line, data, first, offset, _lines(data, line, offset, quotes))
                if on_bytes:
                    on_bytes(len(data))
                line += data.count(b"\n")
                offset += len(data)
                first = False
            else:
                pending.append(chunk)
            skip = 0
            if scanner.quoted and scanner.offset - scanner.opened_at > OPEN_CELL_BYTES:
                opened = line + b"".join(pending)[: scanner.opened_at - offset].count(b"\n")
                raise InputFileError(
                    f"{shown(str(source.path))}: line {opened}: a quoted cell runs on for more "
                    f"than {FIELD_LIMIT_TEXT}, the most a cell may hold",
                    hint=LONG_CELL_HINT,
                )
            chunk = handle.read(BLOCK_BYTES)
    if data := b"".join(pending):
        quotes = scanner.take_literal(offset + len(data))
        yield Block(line, data, first, offset, _lines(data, line, offset, quotes))
        if on_bytes:
            on_bytes(len(data))


def _lines(data: bytes, line: int, offset: int, positions: list[int]) -> tuple[int, ...]:
    """The lines of ``positions`` (in the file) in a block starting at ``line``, ``offset``;
    each line once."""
    lines: list[int] = []
    at = 0
    for position in positions:
        line += data.count(b"\n", at, position - offset)
        at = position - offset
        if not lines or lines[-1] != line:
            lines.append(line)
    return tuple(lines)


def read_block(source: CsvSource, line: int, offset: int, size: int, first: bool) -> Block:
    """A block read again from where ``read_blocks`` found it."""
    with source.path.open("rb") as handle:
        handle.seek(offset)
        return Block(line, handle.read(size), first, offset)


def rows(source: CsvSource, block: Block) -> Iterator[tuple[int, list[str]]]:
    """(line, cells) of each record in ``block``; the header is skipped. Raises
    ``BadRecord`` for a record the csv module cannot read (a cell over the limit)."""
    # the limit is the process's: set where the block is parsed, a worker process too
    csv.field_size_limit(FIELD_LIMIT)
    encoding = source.encoding if block.first else source.encoding.removesuffix("-sig")
    text = block.data.decode(encoding)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=source.delimiter, strict=False)
    start = 0
    try:
        if block.first:
            next(reader, None)
        start = reader.line_num
        for row in reader:
            yield block.line + start, row
            start = reader.line_num
    except csv.Error as exc:
        if "field limit" not in str(exc):  # (not strict: the limit is all it checks)
            raise BadRecord(block.line + start, f"cannot be read as CSV ({exc})") from None
        reason = f"a cell is longer than {FIELD_LIMIT_TEXT}, the most a cell may hold"
        raise BadRecord(block.line + start, reason, LONG_CELL_HINT) from None
