"""Addresses met again within one import run, in a file or across its files: how many,
and the first few with both lines.

The writer takes rows as if one after the other (a later row wins), whatever this
finds: finding them is for the report only, so it is done once the rows are written.
While they are, only a 64-bit digest per row is kept, sorted per block, in an array
(8 bytes a row: a million rows in 8 MB). A repeat within the run always meets an
address the store holds (updated, unchanged, left alone or suppressed), so an import
whose every row was new (a new list into the store) has none and stops there.

Otherwise the digests are counted in slices of the digest range (``PART_ROWS`` rows
each): a slice of every block's sorted array is one C-level cut, and a set of a
slice's digests stays small (about 2 MB), however large the run. That gives the
number of repeats and the blocks that hold the first ones; those blocks (and, for
each repeat shown, the block of its earlier row) are read again for the lines, which
also weeds out two addresses that merely share a digest (odds of about one in 37
million for a million rows).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from outreach.importing.checking import Checked
    from outreach.ports import BatchOutcome

PART_ROWS = 1 << 15  # at most this many digests counted in one set (about 2 MB)
_LOW = -(1 << 63)
_SPAN = 1 << 64

# (earlier file index, earlier line, file index, line, email_key)
Found = tuple[int, int, int, int, str]


def digests(keys: Iterable[str]) -> array:
    """The sorted digests of ``keys`` (email keys), as ``Repeats`` keeps a block's."""
    return array("q", sorted(map(hash, keys)))


def _holds(sorted_digests: array, digest: int) -> bool:
    i = bisect_left(sorted_digests, digest)
    return i < len(sorted_digests) and sorted_digests[i] == digest


class Repeats:
    """Notes each written block (``add``); then ``resolve`` says how many rows met an
    address an earlier row of the run had, and which were the first ``shown``."""

    def __init__(self, shown: int) -> None:
        self.limit = shown
        self.digests: list[array] = []  # per block, sorted
        self.blocks: list[tuple[int, tuple[int, int, int, bool]]] = []  # file index, where
        self.met = False  # a block met an address the store holds

    def add(self, file_index: int, checked: Checked, outcome: BatchOutcome) -> None:
        """Note a written block; ``outcome`` is what the store did with it."""
        self.blocks.append((file_index, checked.block))
        self.digests.append(checked.digests)
        if not self.met:
            self.met = bool(
                outcome.updated + outcome.unchanged + outcome.existing + len(outcome.suppressed)
            )

    def resolve(
        self, read_again: Callable[[int, tuple[int, int, int, bool]], list[tuple[int, str]]]
    ) -> tuple[int, list[Found]]:
        """The number of repeats, and the first few as (earlier file, earlier line,
        file, line, address). ``read_again(file index, where)`` gives (line,
        email_key) of each good row of a written block."""
        if not self.met:
            return 0, []
        count, first = self._count()
        return self._show(count, first, read_again)

    def _count(self) -> tuple[int, dict[int, set[int]]]:
        """How many rows have a digest an earlier row had, and, for the first blocks
        that hold such rows, the digests of theirs that an earlier block had."""
        total = sum(map(len, self.digests))
        parts = max(1, -(-total // PART_ROWS))
        cursors = [0] * len(self.digests)
        first: dict[int, set[int]] = {}
        cutoff = len(self.digests)  # blocks from here on are not among the first
        count = 0
        for part in range(1, parts + 1):
            bound = _LOW + _SPAN * part // parts  # 2**63 for the last: past every digest
            seen: set[int] = set()
            for number, block in enumerate(self.digests):
                start = cursors[number]
                end = len(block) if part == parts else bisect_left(block, bound, start)
                if end == start:
                    continue
                cursors[number] = end
                here = set(block[start:end])
                met = here & seen
                repeats = end - start - len(here) + len(met)
                seen |= here
                if not repeats:
                    continue
                count += repeats
                if number in first:
                    first[number] |= met
                elif number < cutoff:
                    first[number] = met
                    if len(first) > self.limit:
                        cutoff = max(first)
                        del first[cutoff]
        return count, first

    def _show(
        self,
        count: int,
        first: dict[int, set[int]],
        read_again: Callable[[int, tuple[int, int, int, bool]], list[tuple[int, str]]],
    ) -> tuple[int, list[Found]]:
        """Walk the first blocks with repeats row by row, read again."""
        cache: dict[int, list[tuple[int, str]]] = {}

        def rows_of(number: int) -> list[tuple[int, str]]:
            if number not in cache:
                cache[number] = read_again(*self.blocks[number])
            return cache[number]

        found: list[Found] = []
        for number in sorted(first):
            file_index = self.blocks[number][0]
            here: dict[str, int] = {}  # address -> its last line so far in this block
            here_digests: set[int] = set()
            for line, key in rows_of(number):
                if len(found) >= self.limit:
                    return count, found
                digest = hash(key)
                if key in here:
                    found.append((file_index, here[key], file_index, line, key))
                elif digest in first[number]:
                    earlier = self._earlier(number, digest, key, rows_of)
                    if earlier:
                        found.append((*earlier, file_index, line, key))
                    else:  # only another address with the same digest came before
                        count -= 1
                elif digest in here_digests:
                    count -= 1  # the same: in this block
                here[key] = line
                here_digests.add(digest)
        return count, found

    def _earlier(
        self, number: int, digest: int, key: str, rows_of: Callable[[int], list[tuple[int, str]]]
    ) -> tuple[int, int] | None:
        """(file index, line) of the last row before block ``number`` with ``key``."""
        for earlier in range(number - 1, -1, -1):
            if _holds(self.digests[earlier], digest):
                lines = [n for n, k in rows_of(earlier) if k == key]
                if lines:
                    return self.blocks[earlier][0], lines[-1]
        return None
