"""the log read a page at a time: delivery_events indexed by (step_id, id), (event, id)
and (at, id), and (step_id, event) becomes (step_id, event, id); on PostgreSQL a
trigram index on contacts.email_key when the pg_trgm extension can be had (the search
by a part of an address; without it the search works, reading every contact)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from alembic import op
from sqlalchemy.exc import DBAPIError

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_NEW = (("ix_delivery_events_step_id_id", ["step_id", "id"]),
        ("ix_delivery_events_event_id", ["event", "id"]),
        ("ix_delivery_events_at_id", ["at", "id"]))  # fmt: skip
TRIGRAMS = "ix_contacts_email_key_trgm"


def upgrade() -> None:
    op.drop_index("ix_delivery_events_step_id_event", "delivery_events")
    op.create_index("ix_delivery_events_step_id_event_id", "delivery_events", ["step_id", "event", "id"])
    for name, columns in _NEW:
        op.create_index(name, "delivery_events", columns)
    if op.get_bind().dialect.name == "postgresql":
        _trigrams()


def _trigrams() -> None:
    """The extension may be missing (no contrib package) or refused (creating it needs
    a privilege the role may not have): then the index is left out, and the migration
    goes on, in a savepoint of its own."""
    bind = op.get_bind()
    try:
        with bind.begin_nested():
            bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            bind.exec_driver_sql(f"CREATE INDEX {TRIGRAMS} ON contacts USING gin (email_key gin_trgm_ops)")
    except DBAPIError:
        return


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {TRIGRAMS}")  # the extension stays: others may use it
    for name, _columns in reversed(_NEW):
        op.drop_index(name, "delivery_events")
    op.drop_index("ix_delivery_events_step_id_event_id", "delivery_events")
    op.create_index("ix_delivery_events_step_id_event", "delivery_events", ["step_id", "event"])
