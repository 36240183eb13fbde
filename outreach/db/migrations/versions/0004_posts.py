"""deliveries without a contact: X posts (a part of a thread) and press releases

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # On SQLite this rebuilds the table; engine.upgrade turns foreign keys off around
    # it so that the rebuild does not cascade into delivery_events.
    with op.batch_alter_table("deliveries") as batch:
        batch.alter_column("contact_id", existing_type=sa.Integer, nullable=True)
        batch.add_column(sa.Column("part", sa.Integer))
        batch.add_column(sa.Column("content", sa.JSON))
        batch.create_unique_constraint("uq_deliveries_step_id_part", ["step_id", "part"])


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_constraint("uq_deliveries_step_id_part", type_="unique")
        batch.drop_column("content")
        batch.drop_column("part")
        batch.alter_column("contact_id", existing_type=sa.Integer, nullable=False)
