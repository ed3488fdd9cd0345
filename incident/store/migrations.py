"""Named, ordered migrations, recorded in schema_migrations (never "create_all and hope")."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, inspect, select

from incident.store import schema
from incident.timeutil import utcnow


def m001_initial(conn: Connection) -> None:
    """Incidents, the event log and the outbox."""
    # Table.create also creates the table's indexes and constraints.
    for table in (schema.incidents, schema.events, schema.outbox):
        table.create(conn)


def m002_outbox_due_index(conn: Connection) -> None:
    """The index claims walk: (incident, state, priority, id).

    A database created after this index joined the schema got it from m001 already.
    """
    schema.ix_outbox_due.create(conn, checkfirst=True)


MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = [
    ("m001_initial", m001_initial),
    ("m002_outbox_due_index", m002_outbox_due_index),
]


def migrate(conn: Connection) -> list[str]:
    """Apply the migrations not yet recorded, in order; return their names."""
    if not inspect(conn).has_table("schema_migrations"):
        schema.migrations.create(conn)
    done = set(conn.execute(select(schema.migrations.c.name)).scalars())
    applied = []
    for name, step in MIGRATIONS:
        if name in done:
            continue
        step(conn)
        conn.execute(schema.migrations.insert().values(name=name, applied_at=utcnow()))
        applied.append(name)
    return applied
