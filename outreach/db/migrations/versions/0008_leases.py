"""many processes around one database: delivery leases (holder, lease_until, handed),
the processes table (heartbeats, the scheduler leader) and shared rate buckets

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

from outreach.db.models import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("holder", sa.String(120)))
        batch.add_column(sa.Column("lease_until", UTCDateTime))
        batch.add_column(sa.Column("handed", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "processes",
        sa.Column("id", sa.String(120), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("heartbeat_at", UTCDateTime, nullable=False),
        sa.Column("leader", sa.Integer, nullable=False, server_default="0"),
        sa.Column("state", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_processes"),
    )
    op.create_table(
        "rate_buckets",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_rate_buckets"),
    )


def downgrade() -> None:
    op.drop_table("rate_buckets")
    op.drop_table("processes")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("handed")
        batch.drop_column("lease_until")
        batch.drop_column("holder")
