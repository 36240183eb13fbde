"""Campaigns and their steps: the stored plan, its hash and approval, reschedules,
and each step's status (every change logged)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update

from outreach.db.models import campaigns, steps
from outreach.db.repository import Repository, step_info
from outreach.ports import StepInfo


class SqlCampaigns(Repository):
    """``ports.Campaigns``."""

    def ensure_step(
        self, *, campaign: str, key: str, channel: str, template: str, audience: str,
        send_at: datetime, settings: dict[str, Any] | None = None, status: str = "active",
    ) -> StepInfo:  # fmt: skip
        """The step (campaign, key), made if new; an existing one is returned as it is."""
        with self._write() as conn, conn.begin():
            row = conn.execute(
                select(steps).where(steps.c.campaign == campaign, steps.c.key == key)
            ).first()
            if row is None:
                conn.execute(
                    insert(steps).values(
                        campaign=campaign, key=key, channel=channel, template=template,
                        audience=audience, send_at=send_at, status=status,
                        settings=settings or {}, created_at=self.clock(),
                    )
                )  # fmt: skip
                row = conn.execute(
                    select(steps).where(steps.c.campaign == campaign, steps.c.key == key)
                ).one()
        return step_info(row)

    def update_step(self, step_id: int, **values: Any) -> None:
        """Change a step that has not fired yet (template, audience, send_at, settings)."""
        with self._write() as conn, conn.begin():
            conn.execute(update(steps).where(steps.c.id == step_id).values(**values))

    def step_by_key(self, campaign: str, key: str) -> StepInfo | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(steps).where(steps.c.campaign == campaign, steps.c.key == key)
            ).first()
        return step_info(row) if row else None

    def log_step(self, step_id: int, event: str, detail: dict[str, Any]) -> None:
        with self._write() as conn, conn.begin():
            self._event(conn, step_id, None, event, detail)

    def save_campaign(self, campaign_id: str, name: str, plan_file: str, plan_hash: str,
                      snapshot: dict[str, Any] | None = None) -> None:  # fmt: skip
        now = self.clock()
        with self._write() as conn, conn.begin():
            found = conn.execute(
                select(campaigns.c.id).where(campaigns.c.id == campaign_id)
            ).first()
            values = {
                "name": name,
                "plan_file": plan_file,
                "plan_hash": plan_hash,
                "snapshot": snapshot,
                "updated_at": now,
            }
            if found:
                conn.execute(
                    update(campaigns).where(campaigns.c.id == campaign_id).values(**values)
                )
            else:
                conn.execute(
                    insert(campaigns).values(
                        id=campaign_id, status="active", overrides={}, **values
                    )
                )

    def campaign_ids(self) -> list[str]:
        """Every scheduled campaign's id, and every id an ad hoc send logged under."""
        with self.engine.connect() as conn:
            stored = conn.execute(select(campaigns.c.id)).scalars().all()
            logged = conn.execute(select(steps.c.campaign).distinct()).scalars().all()
        return sorted({*stored, *logged})

    def campaign(self, campaign_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(campaigns).where(campaigns.c.id == campaign_id)).first()
        return dict(row._mapping) if row else None

    def set_overrides(self, campaign_id: str, overrides: dict[str, str]) -> None:
        with self._write() as conn, conn.begin():
            conn.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign_id)
                .values(overrides=overrides, updated_at=self.clock())
            )

    def set_campaign_status(self, campaign_id: str, status: str) -> None:
        with self._write() as conn, conn.begin():
            conn.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign_id)
                .values(status=status, updated_at=self.clock())
            )

    def approve(self, campaign_id: str, by: str, plan_hash: str) -> None:
        with self._write() as conn, conn.begin():
            conn.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign_id)
                .values(
                    approved_by=by,
                    approved_at=self.clock(),
                    approved_hash=plan_hash,
                    updated_at=self.clock(),
                )
            )

    def step(self, step_id: int) -> StepInfo:
        with self.engine.connect() as conn:
            return step_info(conn.execute(select(steps).where(steps.c.id == step_id)).one())

    def steps(self, campaign: str | None = None) -> list[StepInfo]:
        query = select(steps).order_by(steps.c.send_at, steps.c.id)
        if campaign:
            query = query.where(steps.c.campaign == campaign)
        with self.engine.connect() as conn:
            return [step_info(r) for r in conn.execute(query)]

    def set_step_status(self, step_id: int, status: str, reason: str, *,
                        only_from: Sequence[str] | None = None, **facts: Any) -> bool:  # fmt: skip
        """The new status, logged with its reason and facts (``action``: what a person
        may do next, which the CLI names as a command and a web page as a link).
        ``only_from``: only if the step is in one of these now (checked and changed in
        one statement: of two processes firing the same step, one moves it and logs
        it); whether it moved."""
        query = update(steps).where(steps.c.id == step_id)
        if only_from is not None:
            query = query.where(steps.c.status.in_(list(only_from)))
        with self._write() as conn, conn.begin():
            if not conn.execute(query.values(status=status)).rowcount and only_from is not None:
                return False
            self._event(conn, step_id, None, status, {"reason": reason, **facts})
        return True
