"""Where the records of a CSV file end, found quote by quote as the csv module reads
them, at the speed of a few C-level passes over the bytes.

A record ends at a line break outside quotes. A quote opens a quoted cell only where a
cell starts (after the delimiter or a line break); inside one, a quote closes it and
two quotes stand for one. Anywhere else a quote is a character: ``Samsung 5" Display``
is a cell with a quote in it, as spreadsheet programs write it, and as the csv module
(not strict) reads it. Counting quotes alone would take that quote as the start of a
quoted cell, and every line break after it, up to the next odd quote, as inside one.

So each chunk is split at its quotes once. While every quote that would open a cell
stands where a cell starts (the common case, checked over the pieces in C), quotes
alternate between opening and closing, and the last line break outside quotes is
found from the chunk's end. A chunk with a quote taken as a character is walked quote
by quote instead, and the position of each such quote is kept for a warning.
"""

from __future__ import annotations

from operator import itemgetter

QUOTE = ord('"')
NEWLINE = ord("\n")
_LAST = itemgetter(-1)


class QuoteScanner:
    """Reads a file's bytes chunk after chunk (``feed``) and says where records end.

    The state carried from one chunk to the next: inside a quoted cell or not, the
    last byte read, and whether it was a closing quote (``""`` may be cut in two).
    """

    def __init__(self, delimiter: str, *, offset: int = 0) -> None:
        # bytes after which a cell starts (any ASCII-compatible encoding)
        self.starts = frozenset({ord(delimiter), NEWLINE, ord("\r")})
        self.quoted = False
        self.prev = NEWLINE  # the file starts a record (a BOM is skipped: ``offset``)
        self.after_closer = False
        self.offset = offset  # of the next byte fed, in the file
        self.opened_at = -1  # in the file: the quote that opened the cell still open
        self.literal: list[int] = []  # in the file: quotes taken as characters

    def feed(self, data: bytes) -> int:
        """Read the next bytes; return the position in ``data`` just past its last line
        break outside quotes (where a block of whole records may end), or 0."""
        if not data:
            return 0
        pieces = data.split(b'"')
        quotes = len(pieces) - 1
        if not quotes:
            cut = -1 if self.quoted else data.rfind(b"\n")
            self.after_closer = False
        elif self._alternating(pieces):
            quoted = self.quoted ^ bool(quotes & 1)
            if quoted:  # the last quote opened a cell
                self.opened_at = self.offset + len(data) - len(pieces[-1]) - 1
            cut = _last_outside(pieces, len(data), quoted)
            self.after_closer = not quoted and not pieces[-1]
            self.quoted = quoted
        else:
            cut = self._walk(pieces)
        self.prev = data[-1]
        self.offset += len(data)
        return cut + 1

    def _alternating(self, pieces: list[bytes]) -> bool:
        """Whether every quote that would open a cell, if quotes simply alternated,
        stands where a cell starts (or just after a closing one: ``""``)."""
        quotes = len(pieces) - 1
        if self.quoted:  # quote 0 closes; 1, 3, ... open
            before = pieces[1:quotes:2]
        else:  # quote 0 opens: after the previous chunk's last byte, or pieces[0]
            first = pieces[0]
            if first and first[-1] not in self.starts:
                return False
            if not first and self.prev not in self.starts and not self.after_closer:
                return False
            before = pieces[2:quotes:2]
        # an empty piece: a quote just after a closing one, the two stand for one quote
        return set(map(_LAST, filter(None, before))) <= self.starts

    def _walk(self, pieces: list[bytes]) -> int:
        """Quote by quote: the exact state, the quotes taken as characters, and the
        last line break outside quotes (-1 if none)."""
        quoted, after_closer, starts = self.quoted, self.after_closer, self.starts
        pos, cut, last = 0, -1, len(pieces) - 1
        for j, piece in enumerate(pieces):
            if not quoted and (newline := piece.rfind(b"\n")) >= 0:
                cut = pos + newline
            if j == last:
                break
            at = pos + len(piece)  # of the quote after this piece
            if quoted:  # closes the cell (or, with the next quote, stands for one)
                quoted, after_closer = False, True
            else:
                if piece:
                    before, pair = piece[-1], False
                elif j == 0:
                    before, pair = self.prev, after_closer
                else:
                    before, pair = QUOTE, after_closer
                if pair or before in starts:
                    quoted = True
                    if not pair:
                        self.opened_at = self.offset + at
                else:
                    self.literal.append(self.offset + at)
                after_closer = False
            pos = at + 1
        self.quoted = quoted
        self.after_closer = after_closer and not pieces[-1]
        return cut

    def take_literal(self, end: int) -> list[int]:
        """The positions of the quotes taken as characters before ``end`` (in the
        file), which are then forgotten."""
        taken = [p for p in self.literal if p < end]
        if taken:
            self.literal = self.literal[len(taken) :]
        return taken


def _last_outside(pieces: list[bytes], size: int, quoted_at_end: bool) -> int:
    """The last line break outside quotes, from the end, when quotes alternate."""
    end = size
    outside = not quoted_at_end
    for piece in reversed(pieces):
        start = end - len(piece)
        if outside and (newline := piece.rfind(b"\n")) >= 0:
            return start + newline
        outside = not outside
        end = start - 1
    return -1
