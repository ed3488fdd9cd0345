"""The schema the code queries, for SQLite and PostgreSQL (SQLAlchemy Core).

It creates nothing: the tables, columns and indexes are made by the frozen steps in
migrations.py, and tests/test_migrations.py checks that they arrive at exactly what is declared
here. A change here comes with a new migration.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

migrations = Table(
    "schema_migrations", metadata,
    Column("name", String(100), primary_key=True),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)

# The incident row holds only what never changes plus the head of its event chain; every
# other fact is derived from the events.
incidents = Table(
    "incidents", metadata,
    Column("id", String(40), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("playbook_id", String(100), nullable=False),
    Column("title", Text, nullable=False),
    Column("drill", Boolean, nullable=False, default=False),
    Column("last_seq", Integer, nullable=False, default=0),
    Column("head_hash", String(64), nullable=False),
    # HMAC of (last_seq, head_hash) with the chain key, which the database never holds
    # (INCIDENT_CHAIN_KEY; migration m005): a truncated chain cannot be given a valid head.
    Column("head_mac", String(64)),
)

events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("incident_id", String(40), ForeignKey("incidents.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("type", String(40), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("data", Text, nullable=False),  # canonical JSON; hashed as stored
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("mac", String(64)),  # HMAC of `hash` with the chain key, when one is set (m005)
    UniqueConstraint("incident_id", "seq", name="uq_events_incident_seq"),
)

# One row per recipient × channel × notice. `address` is the only place a full contact is
# kept; everything shown to people masks it.
outbox = Table(
    "outbox", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("incident_id", String(40), ForeignKey("incidents.id"), nullable=False),
    Column("notice_seq", Integer, nullable=False),
    Column("channel", String(16), nullable=False),
    Column("recipient_ref", String(200), nullable=False),
    Column("recipient_name", Text, nullable=False, default=""),
    Column("address", String(320), nullable=False),
    Column("language", String(8), nullable=False),
    Column("priority", Integer, nullable=False, default=1),  # 0 urgent, 1 normal
    Column("state", String(12), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Column("error_code", String(40)),
    Column("message_id", String(200), nullable=False),
    Column("idempotency_key", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("claimed_by", String(100)),
    Column("claimed_at", DateTime(timezone=True)),
    Column("sent_at", DateTime(timezone=True)),
    Column("provider_ref", String(200)),
    # The customer's other contact, when the playbook asks for fallback to the other channel
    # (m006 for databases of the first release).
    Column("fallback_address", String(320)),
    # The transport the row was recorded for (file, smtp, twilio): only a dispatcher with that
    # transport settles it, unless the supervisor reroutes it (an event). NULL: recorded
    # before m004, any transport.
    Column("transport", String(16)),
    # The customer's region: it picks the hotline, website and time zone of their message
    # (m007; NULL for parties and older rows: the defaults).
    Column("region", String(100)),
    # The row's delivery state after `sent`, from receipts (m008; NULL: none yet): the state,
    # the provider's code and the provider's time of the receipt that settled it.
    Column("receipt", String(16)),
    Column("receipt_code", String(40)),
    Column("receipt_at", DateTime(timezone=True)),
    UniqueConstraint("idempotency_key", name="uq_outbox_key"),
    UniqueConstraint("incident_id", "notice_seq", "channel", "recipient_ref",
                     name="uq_outbox_recipient"),
)

Index("ix_outbox_claim", outbox.c.state, outbox.c.priority, outbox.c.next_attempt_at)
Index("ix_outbox_notice", outbox.c.incident_id, outbox.c.notice_seq, outbox.c.state)
# A claim for one channel seeks (incident, state, channel) here and walks the rest in claim
# order (urgent first, then oldest), stopping after one batch: without it each claim sorted
# every row of the incident; without `channel` in it, a claim for a channel with nothing due
# walked every pending row of the others (migrations m002, m003).
Index("ix_outbox_next", outbox.c.incident_id, outbox.c.state, outbox.c.channel, outbox.c.priority,
      outbox.c.id)
# Receipts name their row by the provider's reference (Twilio SID) or, for bounces, by the
# email's Message-ID (m008).
Index("ix_outbox_provider_ref", outbox.c.provider_ref)
Index("ix_outbox_message_id", outbox.c.message_id)

# Every receipt a provider sent about a row, as received (callback, poll, bounce): the same
# receipt twice (same reference, status and provider time, by callback or poll) is stored
# once (m008).
receipts = Table(
    "receipts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("outbox_id", Integer, ForeignKey("outbox.id"), nullable=False),
    Column("provider_ref", String(200), nullable=False),
    Column("state", String(16), nullable=False),  # a ReceiptState
    Column("status", String(40), nullable=False),  # the provider's own word (delivered, busy)
    Column("code", String(40)),
    Column("provider_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("source", String(12), nullable=False),  # callback | poll | bounce
    UniqueConstraint("provider_ref", "status", "provider_at", name="uq_receipts_once"),
)
Index("ix_receipts_outbox", receipts.c.outbox_id)

# The suppression list (m009): one row per time a number was put on it (Twilio 21610, an
# opted-out receipt, an inbound STOP, an operator), with its source; `removed_at` set when an
# operator takes it off (the row stays: who listed and who removed is kept). A number is
# suppressed while one of its rows has no `removed_at`.
optouts = Table(
    "optouts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("address", String(320), nullable=False),
    Column("source", String(40), nullable=False),
    Column("reason", Text),
    Column("actor", String(100)),
    Column("added_at", DateTime(timezone=True), nullable=False),
    Column("removed_at", DateTime(timezone=True)),
    Column("removed_by", String(100)),
)
Index("ix_optouts_address", optouts.c.address)


# The staff roll-call's roster (m011): one row per staff member of an incident's roll-call,
# no contacts (those are in the roll-call's outbox rows, `party:staff:<id>`); answers are events.
rollcall_members = Table(
    "rollcall_members", metadata,
    Column("incident_id", String(40), ForeignKey("incidents.id"), primary_key=True),
    Column("staff_id", String(200), primary_key=True),
    Column("name", Text, nullable=False),
    Column("team", String(100), nullable=False),
    Column("branch", String(100), nullable=False),
    Column("manager", String(200)),
    Column("language", String(8), nullable=False),
)
# Inbound replies (m010): one row per SMS or keypad reply a provider delivered, kept once per
# provider reference (a webhook twice, or a webhook and a poll, is one row). `number` is the
# full E.164 sender (it matches outbox.address); everything shown to people masks it. A reply
# from a number no customer row has is kept with no incident (unmatched).
replies = Table(
    "replies", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("provider_ref", String(200), nullable=False),
    Column("source", String(12), nullable=False),  # sms | keypad
    Column("number", String(320), nullable=False),
    Column("to_number", String(320)),
    Column("body", Text, nullable=False),
    Column("kind", String(16), nullable=False),  # callback | stop | text | rollcall
    Column("incident_id", String(40)),
    Column("recipient_ref", String(200)),
    Column("case_id", String(20)),
    Column("event_seq", Integer),
    Column("received_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("provider_ref", name="uq_replies_ref"),
)
Index("ix_replies_incident", replies.c.incident_id)

# At most one automatic acknowledgement per customer per incident (m010): the row is inserted
# with the acknowledgement's outbox row, and its key refuses a second whichever server tries.
reply_acks = Table(
    "reply_acks", metadata,
    Column("incident_id", String(40), nullable=False),
    Column("recipient_ref", String(200), nullable=False),
    Column("reply_id", Integer, nullable=False),
    Column("acked_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("incident_id", "recipient_ref", name="uq_reply_acks_once"),
)
# A reply is matched to its customer's rows by number.
Index("ix_outbox_address", outbox.c.address)
