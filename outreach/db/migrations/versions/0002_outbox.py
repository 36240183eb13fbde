"""the outbox: steps, deliveries and the append-only delivery log

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

from outreach.db.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "steps",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("campaign", sa.String(100), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("template", sa.String(200), nullable=False),
        sa.Column("audience", sa.Text, nullable=False),
        sa.Column("send_at", UTCDateTime, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_steps"),
        sa.UniqueConstraint("campaign", "key", name="uq_steps_campaign_key"),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("step_id", sa.Integer, nullable=False),
        sa.Column("contact_id", sa.Integer, nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("due_at", UTCDateTime, nullable=False),
        sa.Column("uncertain", sa.Integer, nullable=False, server_default="0"),
        sa.Column("message_id", sa.String(250)),
        sa.Column("last_error", sa.Text),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
        sa.UniqueConstraint("step_id", "contact_id", name="uq_deliveries_step_id_contact_id"),
        sa.ForeignKeyConstraint(
            ["step_id"], ["steps.id"], name="fk_deliveries_step_id_steps", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name="fk_deliveries_contact_id_contacts",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_deliveries_status_due_at", "deliveries", ["status", "due_at"])
    op.create_table(
        "delivery_events",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("step_id", sa.Integer, nullable=False),
        sa.Column("delivery_id", sa.Integer),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("event", sa.String(20), nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_delivery_events"),
        sa.ForeignKeyConstraint(
            ["step_id"], ["steps.id"], name="fk_delivery_events_step_id_steps", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name="fk_delivery_events_delivery_id_deliveries",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_delivery_events_delivery_id", "delivery_events", ["delivery_id"])
    op.create_index("ix_delivery_events_step_id_event", "delivery_events", ["step_id", "event"])


def downgrade() -> None:
    op.drop_table("delivery_events")
    op.drop_table("deliveries")
    op.drop_table("steps")
