"""Storage: one schema on SQLite or PostgreSQL; events, outbox, migrations."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from incident.errors import AmbiguousIncident, IncidentNotFound, StorageError
from incident.models import Event, EventType
from incident.store import schema
from incident.store.engine import make_engine
from incident.store.events import GENESIS, append_event, as_utc, read_events, verify_chain
from incident.store.migrations import migrate

__all__ = ["GENESIS", "IncidentRow", "Store"]


@dataclass(frozen=True, slots=True)
class IncidentRow:
    """The immutable facts of an incident row."""

    id: str
    created_at: datetime
    playbook_id: str
    title: str
    drill: bool
    last_seq: int


class Store:
    """Access to one database. Write transactions serialise per incident on both backends."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    @classmethod
    def open(cls, url: str) -> Store:
        """Open the database at `url` and bring its schema up to date."""
        store = cls(make_engine(url))
        with store.write() as conn:
            if store.dialect == "postgresql":
                # Two processes opening a fresh database must not both migrate it.
                conn.execute(text("SELECT pg_advisory_xact_lock(4242001)"))
            migrate(conn)
        return store

    def close(self) -> None:
        """Release connections."""
        self.engine.dispose()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite); rolled back on any error."""
        try:
            with self.engine.connect() as conn:
                conn.info["write"] = True
                with conn.begin():
                    yield conn
        except IntegrityError as exc:
            # Another writer got there first (the locks make this rare): nothing was recorded.
            raise StorageError(f"conflicting write, nothing was recorded: {exc.orig}",
                               hint="run the command again") from exc
        except (OperationalError, DBAPIError) as exc:
            raise StorageError(f"database error, nothing was recorded: {exc.orig}",
                               hint="check the database is reachable and not read-only") from exc

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction."""
        try:
            with self.engine.connect() as conn, conn.begin():
                yield conn
        except (OperationalError, DBAPIError) as exc:
            raise StorageError(f"database error: {exc.orig}") from exc

    # ------------------------------------------------------------------ incidents and events

    def create_incident(self, conn: Connection, *, playbook_id: str, title: str, drill: bool,
                        at: datetime) -> str:
        """Insert a new incident row (no events yet) and return its id."""
        stamp = as_utc(at)
        incident_id = f"INC-{stamp:%Y%m%d}-{secrets.token_hex(3).upper()}"
        conn.execute(schema.incidents.insert().values(
            id=incident_id, created_at=stamp.replace(tzinfo=None) if self.dialect == "sqlite"
            else stamp, playbook_id=playbook_id, title=title, drill=drill, last_seq=0,
            head_hash=GENESIS))
        return incident_id

    def append(self, conn: Connection, incident_id: str, type: EventType, *, actor: str,
               data: dict[str, Any], at: datetime) -> Event:
        """Append an event inside the caller's write transaction."""
        return append_event(conn, incident_id=incident_id, type=type, actor=actor, data=data,
                            at=at, lock=self.dialect == "postgresql")

    def lock_incident(self, conn: Connection, incident_id: str) -> None:
        """Hold the incident for the rest of the transaction (PostgreSQL row lock)."""
        query = select(schema.incidents.c.id).where(schema.incidents.c.id == incident_id)
        if self.dialect == "postgresql":
            query = query.with_for_update()
        if conn.execute(query).scalar() is None:
            raise IncidentNotFound(f"no incident {incident_id}")

    def events(self, incident_id: str, conn: Connection | None = None) -> list[Event]:
        """All events of an incident, in order."""
        if conn is not None:
            return read_events(conn, incident_id)
        with self.read() as own:
            return read_events(own, incident_id)

    def incident(self, incident_id: str) -> IncidentRow:
        """The incident row of `incident_id`."""
        with self.read() as conn:
            row = conn.execute(select(schema.incidents).where(
                schema.incidents.c.id == incident_id)).one_or_none()
        if row is None:
            raise IncidentNotFound(f"no incident {incident_id}")
        return _incident_row(row)

    def incidents(self) -> list[IncidentRow]:
        """Every incident, newest first."""
        with self.read() as conn:
            rows = conn.execute(select(schema.incidents).order_by(
                schema.incidents.c.created_at.desc())).all()
        return [_incident_row(r) for r in rows]

    def resolve_id(self, given: str) -> str:
        """Full id from a full id or a unique suffix (case-insensitive)."""
        wanted = given.strip().upper()
        if not wanted:
            raise IncidentNotFound("empty incident id")
        with self.read() as conn:
            exact = conn.execute(select(schema.incidents.c.id).where(
                schema.incidents.c.id == wanted)).scalar()
            if exact:
                return str(exact)
            matches = list(conn.execute(select(schema.incidents.c.id).where(
                schema.incidents.c.id.like(f"%{wanted}"))).scalars())
        if not matches:
            raise IncidentNotFound(f"no incident matches {given!r}",
                                   hint="see the ids with: incident list --all")
        if len(matches) > 1:
            raise AmbiguousIncident(f"{given!r} matches {len(matches)} incidents: "
                                    + ", ".join(sorted(matches)[:5]),
                                    hint="give more characters of the id")
        return str(matches[0])

    def verify(self, incident_id: str) -> list[str]:
        """Problems in the incident's event chain (empty when intact)."""
        with self.read() as conn:
            return verify_chain(conn, incident_id)


def _incident_row(row: Any) -> IncidentRow:
    return IncidentRow(id=row.id, created_at=as_utc(row.created_at),
                       playbook_id=row.playbook_id, title=row.title, drill=bool(row.drill),
                       last_seq=row.last_seq)
