"""contacts, tags and suppressions

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

from outreach.db.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "contacts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("email_key", sa.String(320), nullable=False),
        sa.Column("name", sa.String(1000)),
        sa.Column("organization", sa.String(1000)),
        sa.Column("kind", sa.String(20), nullable=False, server_default="other"),
        sa.Column("sector", sa.String(1000)),
        sa.Column("country", sa.String(2)),
        sa.Column("language", sa.String(35)),
        sa.Column("timezone", sa.String(64)),
        sa.Column("x_handle", sa.String(15)),
        sa.Column("status", sa.String(12), nullable=False, server_default="active"),
        sa.Column("attrs", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_contacts"),
        sa.UniqueConstraint("email_key", name="uq_contacts_email_key"),
    )
    op.create_index("ix_contacts_country_kind", "contacts", ["country", "kind"])
    op.create_table(
        "contact_tags",
        sa.Column("contact_id", sa.Integer, nullable=False),
        sa.Column("tag", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("contact_id", "tag", name="pk_contact_tags"),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name="fk_contact_tags_contact_id_contacts",
            ondelete="CASCADE",
        ),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_contact_tags_tag_contact_id", "contact_tags", ["tag", "contact_id"])
    op.create_table(
        "suppressions",
        sa.Column("email_hash", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("email_hash", name="pk_suppressions"),
    )


def downgrade() -> None:
    op.drop_table("suppressions")
    op.drop_index("ix_contact_tags_tag_contact_id", "contact_tags")
    op.drop_table("contact_tags")
    op.drop_index("ix_contacts_country_kind", "contacts")
    op.drop_table("contacts")
