"""Named, ordered migrations, recorded in schema_migrations (never "create_all and hope").

Each migration holds its DDL as it was when written and never reads schema.py: schema.py is
what the code queries today, and tests/test_migrations.py checks that these steps, run on an
empty database or on one an earlier release made, arrive at exactly that. A change to the
schema is a new migration here plus the matching change in schema.py; a migration once
released is never edited.

Before issue 12, m001 created its tables from the live schema.py, so an existing database holds
the schema of the release that created it, with that release's migrations recorded. Every column or
index m002-m005 add joined schema.py in the commit that added the migration, so a database
that lacks one of them in schema_migrations was made before the change: they apply it
unconditionally. The one exception, outbox.fallback_address, joined schema.py without a
migration (73702ce); m006 adds it and checks first (see there).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    inspect,
    select,
)

from incident.store import schema


def _migrations_table(metadata: MetaData) -> Table:
    """schema_migrations as first written (ddb9f53); migrate() creates it before m001."""
    return Table(
        "schema_migrations", metadata,
        Column("name", String(100), primary_key=True),
        Column("applied_at", DateTime(timezone=True), nullable=False),
    )


def m001_initial(conn: Connection) -> None:
    """Incidents, the event log and the outbox, as the first release (ddb9f53) created them."""
    metadata = MetaData()
    Table(
        "incidents", metadata,
        Column("id", String(40), primary_key=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("playbook_id", String(100), nullable=False),
        Column("title", Text, nullable=False),
        Column("drill", Boolean, nullable=False),
        Column("last_seq", Integer, nullable=False),
        Column("head_hash", String(64), nullable=False),
    )
    Table(
        "events", metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("incident_id", String(40), ForeignKey("incidents.id"), nullable=False),
        Column("seq", Integer, nullable=False),
        Column("type", String(40), nullable=False),
        Column("at", DateTime(timezone=True), nullable=False),
        Column("actor", String(200), nullable=False),
        Column("data", Text, nullable=False),
        Column("prev_hash", String(64), nullable=False),
        Column("hash", String(64), nullable=False),
        UniqueConstraint("incident_id", "seq", name="uq_events_incident_seq"),
    )
    outbox = Table(
        "outbox", metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("incident_id", String(40), ForeignKey("incidents.id"), nullable=False),
        Column("notice_seq", Integer, nullable=False),
        Column("channel", String(16), nullable=False),
        Column("recipient_ref", String(200), nullable=False),
        Column("recipient_name", Text, nullable=False),
        Column("address", String(320), nullable=False),
        Column("language", String(8), nullable=False),
        Column("priority", Integer, nullable=False),
        Column("state", String(12), nullable=False),
        Column("attempts", Integer, nullable=False),
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
        UniqueConstraint("idempotency_key", name="uq_outbox_key"),
        UniqueConstraint("incident_id", "notice_seq", "channel", "recipient_ref",
                         name="uq_outbox_recipient"),
    )
    Index("ix_outbox_claim", outbox.c.state, outbox.c.priority, outbox.c.next_attempt_at)
    Index("ix_outbox_notice", outbox.c.incident_id, outbox.c.notice_seq, outbox.c.state)
    # In dependency order; Table.create also creates the table's indexes and constraints.
    for table in metadata.sorted_tables:
        table.create(conn)


def m002_outbox_due_index(conn: Connection) -> None:
    """An index for claims: (incident, state, priority, id). Superseded by m003."""
    conn.exec_driver_sql("CREATE INDEX ix_outbox_due ON outbox (incident_id, state, priority, id)")


def m003_outbox_next_index(conn: Connection) -> None:
    """The index claims walk, with the channel: (incident, state, channel, priority, id).

    A claim is per channel; m002's index made a claim for a channel with nothing due walk
    every pending row of the incident.
    """
    conn.exec_driver_sql("DROP INDEX ix_outbox_due")
    conn.exec_driver_sql("CREATE INDEX ix_outbox_next "
                         "ON outbox (incident_id, state, channel, priority, id)")


def m004_outbox_transport(conn: Connection) -> None:
    """outbox.transport: the transport each row was recorded for (NULL for older rows)."""
    conn.exec_driver_sql("ALTER TABLE outbox ADD COLUMN transport VARCHAR(16)")


def m005_chain_anchor(conn: Connection) -> None:
    """The chain's anchor: a signature per event (events.mac) and of each incident's head
    (incidents.head_mac), made with a key from the environment."""
    conn.exec_driver_sql("ALTER TABLE events ADD COLUMN mac VARCHAR(64)")
    conn.exec_driver_sql("ALTER TABLE incidents ADD COLUMN head_mac VARCHAR(64)")


def m006_outbox_fallback_address(conn: Connection) -> None:
    """outbox.fallback_address: the customer's other contact, for fallback to the other channel.

    The column joined schema.py (73702ce) without a migration, so the old m001 gave it to every
    database created from then on, and a database of the first release (ddb9f53) never got
    it. Only the first lack it: the column is added when it is missing, and only then.
    """
    if "fallback_address" not in {c["name"] for c in inspect(conn).get_columns("outbox")}:
        conn.exec_driver_sql("ALTER TABLE outbox ADD COLUMN fallback_address VARCHAR(320)")


def m007_outbox_region(conn: Connection) -> None:
    """outbox.region: the customer's region, which picks the per-region details of their
    message (hotline, website, time zone); NULL for older rows."""
    conn.exec_driver_sql("ALTER TABLE outbox ADD COLUMN region VARCHAR(100)")


def m008_receipts(conn: Connection) -> None:
    """Delivery receipts (issue 14): the `receipts` table, one row per receipt a provider sent
    (callback, poll, bounce), unique per (provider ref, status, provider time); the
    row's settled state on the outbox (receipt, receipt_code, receipt_at); provider_ref and
    message_id indexed, as receipts name their row by them (an SMS's SID, an email's
    Message-ID in a bounce)."""
    metadata = MetaData()
    Table(
        "outbox", metadata, Column("id", Integer, primary_key=True),
    )
    receipts = Table(
        "receipts", metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("outbox_id", Integer, ForeignKey("outbox.id"), nullable=False),
        Column("provider_ref", String(200), nullable=False),
        Column("state", String(16), nullable=False),
        Column("status", String(40), nullable=False),
        Column("code", String(40)),
        Column("provider_at", DateTime(timezone=True), nullable=False),
        Column("received_at", DateTime(timezone=True), nullable=False),
        Column("source", String(12), nullable=False),
        UniqueConstraint("provider_ref", "status", "provider_at",
                         name="uq_receipts_once"),
    )
    Index("ix_receipts_outbox", receipts.c.outbox_id)
    receipts.create(conn)
    conn.exec_driver_sql("ALTER TABLE outbox ADD COLUMN receipt VARCHAR(16)")
    conn.exec_driver_sql("ALTER TABLE outbox ADD COLUMN receipt_code VARCHAR(40)")
    stamp = "TIMESTAMP WITH TIME ZONE" if conn.dialect.name == "postgresql" else "DATETIME"
    conn.exec_driver_sql(f"ALTER TABLE outbox ADD COLUMN receipt_at {stamp}")
    conn.exec_driver_sql("CREATE INDEX ix_outbox_provider_ref ON outbox (provider_ref)")
    conn.exec_driver_sql("CREATE INDEX ix_outbox_message_id ON outbox (message_id)")


def m009_optouts(conn: Connection) -> None:
    """The suppression list (issue 14, opt-outs): `optouts`, one row per listing of a number
    with its source, reason and removal (an incident's override is an event, not a row)."""
    metadata = MetaData()
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
    optouts.create(conn)


def m010_replies(conn: Connection) -> None:
    """Inbound replies (issue 15): `replies`, one row per SMS or keypad reply (unique per
    provider reference); `reply_acks`, at most one automatic acknowledgement per customer per
    incident (unique); outbox.address indexed, as a reply names its customer by number."""
    metadata = MetaData()
    replies = Table(
        "replies", metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("provider_ref", String(200), nullable=False),
        Column("source", String(12), nullable=False),
        Column("number", String(320), nullable=False),
        Column("to_number", String(320)),
        Column("body", Text, nullable=False),
        Column("kind", String(16), nullable=False),
        Column("incident_id", String(40)),
        Column("recipient_ref", String(200)),
        Column("case_id", String(20)),
        Column("event_seq", Integer),
        Column("received_at", DateTime(timezone=True), nullable=False),
        UniqueConstraint("provider_ref", name="uq_replies_ref"),
    )
    Index("ix_replies_incident", replies.c.incident_id)
    Table(
        "reply_acks", metadata,
        Column("incident_id", String(40), nullable=False),
        Column("recipient_ref", String(200), nullable=False),
        Column("reply_id", Integer, nullable=False),
        Column("acked_at", DateTime(timezone=True), nullable=False),
        UniqueConstraint("incident_id", "recipient_ref", name="uq_reply_acks_once"),
    )
    metadata.create_all(conn)
    conn.exec_driver_sql("CREATE INDEX ix_outbox_address ON outbox (address)")


def m011_rollcall(conn: Connection) -> None:
    """The staff roll-call's roster (issue 15): `rollcall_members`, one row per staff member
    of an incident's roll-call, with team, branch and manager, no contacts."""
    metadata = MetaData()
    Table("incidents", metadata, Column("id", String(40), primary_key=True))
    Table(
        "rollcall_members", metadata,
        Column("incident_id", String(40), ForeignKey("incidents.id"), primary_key=True),
        Column("staff_id", String(200), primary_key=True),
        Column("name", Text, nullable=False),
        Column("team", String(100), nullable=False),
        Column("branch", String(100), nullable=False),
        Column("manager", String(200)),
        Column("language", String(8), nullable=False),
    ).create(conn)
MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = [
    ("m001_initial", m001_initial),
    ("m002_outbox_due_index", m002_outbox_due_index),
    ("m003_outbox_next_index", m003_outbox_next_index),
    ("m004_outbox_transport", m004_outbox_transport),
    ("m005_chain_anchor", m005_chain_anchor),
    ("m006_outbox_fallback_address", m006_outbox_fallback_address),
    ("m007_outbox_region", m007_outbox_region),
    ("m008_receipts", m008_receipts),
    ("m009_optouts", m009_optouts),
    ("m010_replies", m010_replies),
    ("m011_rollcall", m011_rollcall),
]


def migrate(conn: Connection, *, now: datetime) -> list[str]:
    """Apply the migrations not yet recorded, in order, dated `now`; return their names."""
    if not inspect(conn).has_table("schema_migrations"):
        _migrations_table(MetaData()).create(conn)
    done = set(conn.execute(select(schema.migrations.c.name)).scalars())
    applied = []
    for name, step in MIGRATIONS:
        if name in done:
            continue
        step(conn)
        conn.execute(schema.migrations.insert().values(name=name, applied_at=now))
        applied.append(name)
    return applied
