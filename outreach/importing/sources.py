"""A CSV file checked whole before anything is imported: readable, text in the given
encoding, a header with an email column; its delimiter and column map."""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass
from pathlib import Path

from outreach.domain.columns import ColumnMap, map_columns
from outreach.domain.errors import InputFileError, shown


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
