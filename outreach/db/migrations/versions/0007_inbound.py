"""mail that came back: each message read once (its content hash), what it said about
each recipient and what it did; deliveries found by Message-ID and by contact

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-12
"""

import sqlalchemy as sa
from alembic import op

from outreach.db.models import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_deliveries_message_id", "deliveries", ["message_id"])
    op.create_index("ix_deliveries_contact_id", "deliveries", ["contact_id"])
    op.create_table(
        "inbound_messages",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.Column("dated", UTCDateTime),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("format", sa.String(30), nullable=False),
        sa.Column("message_id", sa.String(250)),
        sa.Column("original_message_id", sa.String(250)),
        sa.Column("feedback_type", sa.String(64)),
        sa.Column("matched", sa.Integer, nullable=False, server_default="0"),
        sa.Column("unmatched", sa.Integer, nullable=False, server_default="0"),
        sa.Column("raw", sa.LargeBinary),
        sa.PrimaryKeyConstraint("id", name="pk_inbound_messages"),
        sa.UniqueConstraint("content_hash", name="uq_inbound_messages_content_hash"),
    )
    op.create_index("ix_inbound_messages_kind", "inbound_messages", ["kind"])
    op.create_table(
        "inbound_recipients",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("inbound_id", sa.Integer, nullable=False),
        sa.Column("address", sa.String(320)),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20)),
        sa.Column("diagnostic", sa.Text),
        sa.Column("delivery_id", sa.Integer),
        sa.Column("contact_id", sa.Integer),
        sa.Column("matched_by", sa.String(20)),
        sa.Column("effect", sa.String(20), nullable=False),
        sa.Column("dated", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_inbound_recipients"),
        sa.ForeignKeyConstraint(["inbound_id"], ["inbound_messages.id"], ondelete="CASCADE",
                                name="fk_inbound_recipients_inbound_id_inbound_messages"),
        sa.ForeignKeyConstraint(["delivery_id"], ["deliveries.id"], ondelete="SET NULL",
                                name="fk_inbound_recipients_delivery_id_deliveries"),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], ondelete="CASCADE",
                                name="fk_inbound_recipients_contact_id_contacts"),
    )  # fmt: skip
    op.create_index("ix_inbound_recipients_inbound_id", "inbound_recipients", ["inbound_id"])
    op.create_index("ix_inbound_recipients_contact_id_kind_dated", "inbound_recipients",
                    ["contact_id", "kind", "dated"])  # fmt: skip
    op.create_index("ix_inbound_recipients_delivery_id", "inbound_recipients", ["delivery_id"])


def downgrade() -> None:
    op.drop_index("ix_inbound_recipients_delivery_id", "inbound_recipients")
    op.drop_index("ix_inbound_recipients_contact_id_kind_dated", "inbound_recipients")
    op.drop_index("ix_inbound_recipients_inbound_id", "inbound_recipients")
    op.drop_table("inbound_recipients")
    op.drop_index("ix_inbound_messages_kind", "inbound_messages")
    op.drop_table("inbound_messages")
    op.drop_index("ix_deliveries_contact_id", "deliveries")
    op.drop_index("ix_deliveries_message_id", "deliveries")
