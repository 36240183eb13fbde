"""Tables. Times are stored in UTC; every migration under ``migrations/versions``."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):  # type: ignore[no-untyped-def]
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; outreach stores aware UTC times only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):  # type: ignore[no-untyped-def]
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


contacts = Table(
    "contacts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(320), nullable=False),
    Column("email_key", String(320), nullable=False, unique=True),
    Column("name", String(1000)),
    Column("organization", String(1000)),
    Column("kind", String(20), nullable=False, server_default="other"),
    Column("sector", String(1000)),
    Column("country", String(2)),
    Column("language", String(35)),
    Column("timezone", String(64)),
    Column("x_handle", String(15)),
    Column("status", String(12), nullable=False, server_default="active"),
    Column("attrs", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # country first: serves country:X alone and country:X kind:Y (a kind alone is
    # too unselective for an index to help)
    Index(None, "country", "kind"),
    # on PostgreSQL, migration 0009 adds a trigram index on email_key when the pg_trgm
    # extension can be had (ix_contacts_email_key_trgm): the log's search by a part of
    # an address; not declared here, since it exists only there
)

contact_tags = Table(
    "contact_tags",
    metadata,
    Column(
        "contact_id",
        Integer,
        ForeignKey("contacts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("tag", String(64), primary_key=True),
    Index(None, "tag", "contact_id"),
    sqlite_with_rowid=False,
)

suppressions = Table(
    "suppressions",
    metadata,
    Column("email_hash", String(64), primary_key=True),
    Column("reason", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# -- the outbox ----------------------------------------------------------------------

steps = Table(
    "steps",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("campaign", String(100), nullable=False),
    Column("key", String(200), nullable=False),  # unique within the campaign
    Column("channel", String(20), nullable=False),  # email | x | press
    Column("template", String(200), nullable=False),
    Column("audience", Text, nullable=False),  # segment expression
    Column("send_at", UTCDateTime, nullable=False),
    Column("status", String(20), nullable=False),  # active | paused | cancelled
    Column("settings", JSON, nullable=False),  # rate limits, sender, plan details
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("campaign", "key"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("step_id", Integer, ForeignKey("steps.id", ondelete="CASCADE"), nullable=False),
    # the recipient of an email; none for an X post or a press release
    Column("contact_id", Integer, ForeignKey("contacts.id", ondelete="CASCADE")),
    # an X post's place in its thread (0, 1, ...), 0 for a press release; none for email
    Column("part", Integer),
    Column("content", JSON),  # what an X post or press release says, fixed when it fires
    # queued | sending | sent | deferred | failed | skipped | uncertain
    Column("status", String(12), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("due_at", UTCDateTime, nullable=False),
    Column("uncertain", Integer, nullable=False, server_default="0"),  # may have been sent twice
    Column("message_id", String(250)),
    Column("last_error", Text),
    Column("updated_at", UTCDateTime, nullable=False),
    # who holds a claimed (sending) delivery and until when: only an expired lease is
    # taken over, never a live sender's rows (processes.id)
    Column("holder", String(120)),
    Column("lease_until", UTCDateTime),
    # 1 once its message may have reached the server (written before it is handed
    # over): a crash leaves it uncertain; 0: it goes back to queued, unmarked
    Column("handed", Integer, nullable=False, server_default="0"),
    UniqueConstraint("step_id", "contact_id"),
    UniqueConstraint("step_id", "part"),
    Index(None, "status", "due_at"),
    # a bounce that names the message it returns (its Message-ID), or only the address
    # it was sent to, finds its delivery through these
    Index(None, "message_id"),
    Index(None, "contact_id"),
)

delivery_events = Table(
    "delivery_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("step_id", Integer, ForeignKey("steps.id", ondelete="CASCADE"), nullable=False),
    Column("delivery_id", Integer, ForeignKey("deliveries.id", ondelete="CASCADE")),
    Column("at", UTCDateTime, nullable=False),
    Column("event", String(20), nullable=False),
    Column("detail", JSON, nullable=False),
    Index(None, "delivery_id"),
    # the log read a page at a time by id (outreach.db.log_pages): each filter's events
    # in id order, without reading and sorting them all; (step_id, event, id) serves the
    # reports' per-step counts of an event too
    Index(None, "step_id", "event", "id"),
    Index(None, "step_id", "id"),
    Index(None, "event", "id"),
    Index(None, "at", "id"),
)

# -- campaigns: the stored plan, its content hashes and its approval -----------------

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("name", String(500), nullable=False),
    Column("plan_file", Text, nullable=False),
    Column("plan_hash", String(64), nullable=False),  # of the plan and every template it uses
    Column("status", String(20), nullable=False),  # active | paused | cancelled
    Column("approved_by", String(200)),
    Column("approved_at", UTCDateTime),
    Column("approved_hash", String(64)),
    Column("overrides", JSON, nullable=False),  # wave id -> launch, set by reschedule
    # what was scheduled: plan text, campaign, template sources (snapshots.take)
    Column("snapshot", JSON),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("scheduled_by", String(200)),  # who scheduled what is to be approved (four eyes)
)

# -- consent: every change of a contact's status, with how and by whom -----------------

consent_events = Table(
    "consent_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("contact_id", Integer, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("status_from", String(12), nullable=False),
    Column("status_to", String(12), nullable=False),
    Column("via", String(20), nullable=False),  # one-click | page | cli | reactivate
    Column("campaign", String(100)),  # the campaign whose link was used
    Column("actor", String(200)),  # the person who made the change, when not the contact
    Column("reason", Text),
    Index(None, "contact_id", "id"),
)

# -- staff of the web pages: accounts (argon2 hashes only) and their sign-ins ----------

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),  # lower case
    Column("role", String(20), nullable=False),  # viewer | operator | admin
    Column("password_hash", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id", String(64), primary_key=True),  # SHA-256 of the token in the cookie
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index(None, "user_id"),
)

# -- mail that came back: bounces, complaints, auto-replies (outreach.bounces) -----------

inbound_messages = Table(
    "inbound_messages",
    metadata,
    Column("id", Integer, primary_key=True),
    # sha256 of the message as its sender wrote it: a message read twice (two mailboxes,
    # a fetch after a crash) is stored, and acts, once
    Column("content_hash", String(64), nullable=False, unique=True),
    Column("received_at", UTCDateTime, nullable=False),  # when outreach read it
    Column("dated", UTCDateTime),  # its Date (the time a bounce is matched against)
    Column("source", Text, nullable=False),  # where it was read: a file, an IMAP folder and uid
    # hard | soft | complaint | auto_reply | unparseable | not_a_bounce
    Column("kind", String(20), nullable=False),
    Column("reason", Text, nullable=False),  # why it is that kind
    Column("format", String(30), nullable=False),  # dsn, arf, auto-reply, flufl.bounce, ...
    Column("message_id", String(250)),  # its own Message-ID
    Column("original_message_id", String(250)),  # the returned message's
    Column("feedback_type", String(64)),  # ARF: abuse, fraud, ...
    Column("matched", Integer, nullable=False, server_default="0"),  # recipients matched to a delivery
    Column("unmatched", Integer, nullable=False, server_default="0"),  # and not: kept for a person
    # the message itself, for a person to look at: kept only when it is unparseable or
    # names someone no delivery matches (at most 1 MiB)
    Column("raw", LargeBinary),
    Index(None, "kind"),
)

inbound_recipients = Table(
    "inbound_recipients",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("inbound_id", Integer, ForeignKey("inbound_messages.id", ondelete="CASCADE"), nullable=False),
    Column("address", String(320)),  # as the report names it; none for a redacted complaint
    Column("kind", String(20), nullable=False),  # this recipient's own: hard, soft, ...
    Column("status", String(20)),  # the enhanced status code, 5.1.1
    Column("diagnostic", Text),  # the server's words
    Column("delivery_id", Integer, ForeignKey("deliveries.id", ondelete="SET NULL")),
    # erasing a contact takes what came back about them with it
    Column("contact_id", Integer, ForeignKey("contacts.id", ondelete="CASCADE")),
    Column("matched_by", String(20)),  # verp | message_id | recipient; none: unmatched
    # what it did: bounced, soft_bounce, complained, auto_reply (the delivery's event),
    # unmatched
    Column("effect", String(20), nullable=False),
    Column("dated", UTCDateTime, nullable=False),  # the message's date, else when it was read
    Index(None, "inbound_id"),
    Index(None, "contact_id", "kind", "dated"),
    Index(None, "delivery_id"),
)


# The processes of a deployment (schedulers and senders, on any machine), each with its
# heartbeat: a sender's leases last while it beats; ``outreach status`` lists them.
processes = Table(
    "processes",
    metadata,
    Column("id", String(120), primary_key=True),  # host:pid:start (ports: the holder)
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("role", String(20), nullable=False),  # scheduler | sender | all
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("leader", Integer, nullable=False, server_default="0"),  # the active scheduler
    Column("state", JSON, nullable=False),  # what it holds and does, as it last said
)

# Rate limits for the whole deployment (a token bucket per name: "email:second",
# "email:hour", "x:15min", "x:day"), shared by every sender process.
rate_buckets = Table(
    "rate_buckets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
