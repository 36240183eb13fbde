"""What the repositories share: their engine, clock and patience, write connections
and the log's events."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select

from outreach.db.models import delivery_events, steps
from outreach.db.patience import Patience
from outreach.ports import StepInfo


class Repository:
    engine: Engine
    clock: Callable[[], datetime]
    patience: Patience

    def _write(self):  # type: ignore[no-untyped-def]
        return self.engine.connect().execution_options(write=True)

    def _event(
        self, conn: Connection, step_id: int, delivery_id: int | None, event: str, detail: dict
    ) -> None:
        conn.execute(
            insert(delivery_events).values(
                step_id=step_id, delivery_id=delivery_id, at=self.clock(), event=event, detail=detail
            )
        )


def lock_step(conn: Connection, step_id: int) -> str | None:
    """Hold the step's row for this transaction (PostgreSQL: FOR NO KEY UPDATE, which
    a change of its status waits for and the log's inserts for the step do not;
    SQLite's writer holds the whole database already) and return its status: two
    processes making one step's deliveries at once (two firings) go one after the
    other, and the second finds the first's rows made; a step cancelled meanwhile is
    seen so."""
    query = select(steps.c.status).where(steps.c.id == step_id).with_for_update(key_share=True)
    return conn.execute(query).scalar()


def step_info(row: Any) -> StepInfo:
    return StepInfo(
        id=row.id, campaign=row.campaign, key=row.key, channel=row.channel,
        template=row.template, audience=row.audience, send_at=row.send_at,
        status=row.status, settings=dict(row.settings or {}),
    )  # fmt: skip
