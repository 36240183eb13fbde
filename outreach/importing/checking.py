"""Blocks parsed and validated, in worker processes while the importing process
writes: a prepared row per good record, a reason per bad one, and the digest of each
address for ``Repeats``."""

from __future__ import annotations

import multiprocessing
import os
import pickle
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from outreach.children import die_with_parent
from outreach.domain.contact import ContactRecord
from outreach.domain.errors import ContactValueError
from outreach.domain.normalizer import RowNormalizer
from outreach.importing.blocks import BadRecord, Block, rows
from outreach.importing.repeats import digests
from outreach.importing.sources import CsvSource

_EMAIL = itemgetter(ContactRecord._fields.index("email"))
_PROBE = "probe@example.org"


@dataclass
class Checked:
    lines: list[int]  # of the good rows
    rows: Any  # the good rows, prepared for the store's writer
    rejects: list[tuple[int, str, tuple[str, ...]]]
    blank: int
    # the digests of the good rows' addresses, sorted (see repeats.digests)
    digests: array = field(default_factory=lambda: array("q"))
    block: tuple[int, int, int, bool] = (0, 0, 0, False)  # line, offset, size, first
    quote_lines: tuple[int, ...] = ()  # lines with a quote read as a character
    error: BadRecord | None = None  # a record that stops the import


def _records(
    source: CsvSource, default_kind: str | None, block: Block, out: Checked
) -> list[ContactRecord]:
    """The block's good records; their lines, the rejects and blank rows in ``out``."""
    width = len(source.columns.targets)
    normalize = RowNormalizer(source.columns.targets, default_kind)
    records: list[ContactRecord] = []
    try:
        for line, row in rows(source, block):
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
    except BadRecord as exc:
        out.error = exc
    return records


def validate_block(
    source: CsvSource,
    default_kind: str | None,
    prepare: Callable[[list[ContactRecord]], Any],
    block: Block,
) -> Checked:
    """Parse and validate a block (runs in a worker process)."""
    where = (block.line, block.offset, len(block.data), block.first)
    out = Checked([], None, [], 0, block=where, quote_lines=block.quote_lines)
    records = _records(source, default_kind, block, out)
    if out.error:
        return out
    out.rows = prepare(records)
    # email_key of each address, as the writer's prepare has it (str.casefold itself)
    out.digests = digests(map(str.casefold, map(_EMAIL, records)))
    return out


def block_keys(source: CsvSource, default_kind: str | None, block: Block) -> list[tuple[int, str]]:
    """(line, email_key) of each good row of a block read again."""
    out = Checked([], None, [], 0)
    records = _records(source, default_kind, block, out)
    return list(zip(out.lines, map(str.casefold, map(_EMAIL, records)), strict=True))


def start_pool(workers: int) -> ProcessPoolExecutor:
    """Validation processes, forked: they hash strings as this process does (the
    digests of addresses are compared across blocks), and die with it."""
    return ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("fork"),
        initializer=_start_worker, initargs=(os.getpid(), hash(_PROBE)),
    )  # fmt: skip


def checked_blocks(
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


def _start_worker(parent: int, probe: int) -> None:
    """A validation worker dies with the import, even on kill -9, and yields the CPU
    to the writing process: the writes are the import's critical path, and the
    workers use whatever time the cores have left."""
    if hash(_PROBE) != probe:  # a forked process keeps its parent's hash seed
        raise RuntimeError("a validation worker hashes strings differently from the import")
    die_with_parent(parent)
    os.nice(10)


def _pickled(fn: Callable[[Block], Checked], block: Block) -> bytes:
    """``fn(block)``, pickled in the worker: the pool's result thread then only
    passes bytes along, and the writing thread unpickles when it takes the block,
    instead of the two threads contending for the interpreter during the writes."""
    return pickle.dumps(fn(block), protocol=pickle.HIGHEST_PROTOCOL)
