"""campaigns keep the snapshot they were scheduled with: plan text and template sources

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("snapshot", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("snapshot")
