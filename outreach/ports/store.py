"""The contact store: what imports write and what audiences read."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from outreach.domain.audience import Expr
from outreach.domain.contact import Contact, ContactRecord


@dataclass
class BatchOutcome:
    """What writing one batch of imported records did."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    existing: int = 0  # already stored and left alone (insert-only mode)
    suppressed: list[int] = field(default_factory=list)  # positions refused: erased addresses

    def add(self, other: BatchOutcome, offset: int) -> None:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.existing += other.existing
        self.suppressed += [offset + i for i in other.suppressed]


class ContactWriter(Protocol):
    """Writes import batches in one transaction. ``preparer()`` gives a picklable
    function that turns a batch of records into the writer's own form in worker
    processes, so the writing process does as little per row as it can."""

    def write(self, records: Sequence[ContactRecord], *, mode: str = "upsert") -> BatchOutcome: ...
    def preparer(self) -> Callable[[Sequence[ContactRecord]], Any]: ...
    def write_prepared(self, block: Any, *, mode: str = "upsert") -> BatchOutcome: ...


class ContactStore(Protocol):
    def writer(self, *, dry_run: bool = False) -> AbstractContextManager[ContactWriter]: ...
    def count(self, expr: Expr) -> int: ...
    def zone_counts(self, expr: Expr) -> dict[str | None, int]: ...
    def find(self, expr: Expr, *, limit: int | None = None, offset: int = 0) -> list[Contact]: ...
    def iterate(self, expr: Expr, *, batch: int = 2000) -> Iterator[Contact]: ...
    def get(self, email: str) -> Contact | None: ...
    def is_suppressed(self, email: str) -> bool: ...
    def add_tag(self, expr: Expr, tag: str) -> int: ...
    def remove_tag(self, expr: Expr, tag: str) -> int: ...
    def set_status(self, expr: Expr, status: str, *, only_if: str | None = "active") -> int: ...
    def reactivate(self, email: str, *, reason: str, by: str) -> str | None: ...
    def delete(
        self, expr: Expr, *, erase: bool = False, reason: str = "erased on request"
    ) -> int: ...
