"""Named, ordered migrations, recorded in schema_migrations (never "create_all and hope")."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Connection, inspect, select

from incident.store import schema


def m001_initial(conn: Connection) -> None:
    """Incidents, the event log and the outbox."""
    # Table.create also creates the table's indexes and constraints.
    for table in (schema.incidents, schema.events, schema.outbox):
        table.create(conn)


def m002_outbox_due_index(conn: Connection) -> None:
    """An index for claims: (incident, state, priority, id). Superseded by m003."""
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_outbox_due "
                         "ON outbox (incident_id, state, priority, id)")


def m003_outbox_next_index(conn: Connection) -> None:
    """The index claims walk, with the channel: (incident, state, channel, priority, id).

    A claim is per channel; m002's index made a claim for a channel with nothing due walk
    every pending row of the incident. A database created after this index joined the
    schema got it from m001 already.
    """
    conn.exec_driver_sql("DROP INDEX IF EXISTS ix_outbox_due")
    schema.ix_outbox_next.create(conn, checkfirst=True)


def m004_outbox_transport(conn: Connection) -> None:
    """outbox.transport: the transport each row was recorded for (NULL for older rows).

    A database created after the column joined the schema got it from m001 already.
    """
    if "transport" not in {c["name"] for c in inspect(conn).get_columns("outbox")}:
        conn.exec_driver_sql("ALTER TABLE outbox ADD COLUMN transport VARCHAR(16)")


def m005_chain_anchor(conn: Connection) -> None:
    """The chain's anchor: a signature per event (events.mac) and of each incident's head
    (incidents.head_mac), made with a key from the environment. A database created after
    these columns joined the schema got them from m001 already."""
    for table, column in ((schema.events, "mac"), (schema.incidents, "head_mac")):
        present = {c["name"] for c in inspect(conn).get_columns(table.name)}
        if column not in present:
            conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {column} VARCHAR(64)")


MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = [
    ("m001_initial", m001_initial),
    ("m002_outbox_due_index", m002_outbox_due_index),
    ("m003_outbox_next_index", m003_outbox_next_index),
    ("m004_outbox_transport", m004_outbox_transport),
    ("m005_chain_anchor", m005_chain_anchor),
]


def migrate(conn: Connection, *, now: datetime) -> list[str]:
    """Apply the migrations not yet recorded, in order, dated `now`; return their names."""
    if not inspect(conn).has_table("schema_migrations"):
        schema.migrations.create(conn)
    done = set(conn.execute(select(schema.migrations.c.name)).scalars())
    applied = []
    for name, step in MIGRATIONS:
        if name in done:
            continue
        step(conn)
        conn.execute(schema.migrations.insert().values(name=name, applied_at=now))
        applied.append(name)
    return applied
