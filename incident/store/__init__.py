"""Storage: one schema on SQLite or PostgreSQL; events, outbox, migrations."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, inspect, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from incident.clock import SYSTEM_CLOCK, Clock
from incident.errors import AmbiguousIncident, IncidentNotFound, StorageError
from incident.models import Event, EventType
from incident.payloads import ChainTampered, Payload, parse_payload, payload_data
from incident.store import engine as _engine
from incident.store import schema
from incident.store.engine import make_engine
from incident.store.events import (
    GENESIS,
    append_event,
    as_utc,
    log_head,
    read_events,
    tampering_to_record,
    verify_chain,
)
from incident.store.migrations import MIGRATIONS, migrate

# Connection: the handle of a transaction, for the type hints of callers that pass one on.
__all__ = ["GENESIS", "Connection", "IncidentRow", "Store"]


@dataclass(frozen=True, slots=True)
class IncidentRow:
    """The immutable facts of an incident row."""

    id: str
    created_at: datetime
    playbook_id: str
    title: str
    drill: bool
    last_seq: int
    head_hash: str = ""  # the hash of event `last_seq`


def incident_id_at(at: datetime, suffix: str) -> str:
    """An incident id: `INC-YYYYMMDD-` (UTC date) and six hex digits (`suffix`)."""
    return f"INC-{as_utc(at):%Y%m%d}-{suffix}"


def preview_incident_id(at: datetime) -> str:
    """The id a notice is rendered with before the incident exists (template checks, the SMS
    forecast of a dry run): as long as a real one, so lengths and segments come out the same."""
    return incident_id_at(at, "000000")


class Store:
    """Access to one database. Write transactions serialise per incident on both backends."""

    def __init__(self, engine: Engine, *, chain_key: str | None = None) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        # The chain's anchor (INCIDENT_CHAIN_KEY): signs every event and each head.
        self.chain_key = chain_key.encode() if chain_key else None
        # Problems found in an incident's chain by a write of this process, for the warning.
        self.tampered: dict[str, list[str]] = {}
        self._just_checked: str | None = None  # by record_tampering, for the next write

    @classmethod
    def open(cls, url: str, *, chain_key: str | None = None,
             clock: Clock = SYSTEM_CLOCK) -> Store:
        """Open the database at `url` and bring its schema up to date (migrations applied are
        dated by `clock`)."""
        store = cls(make_engine(url), chain_key=chain_key)
        if store._migrations_pending():
            with store.write() as conn:
                if store.dialect == "postgresql":
                    # Two processes opening a fresh database must not both migrate it.
                    conn.execute(text("SELECT pg_advisory_xact_lock(4242001)"))
                migrate(conn, now=clock.now())  # checks again, under the write lock
        return store

    def _migrations_pending(self) -> bool:
        """Whether the schema needs migrating, found with a read: opening an up-to-date
        database (every command does) must not wait for another writer's lock."""
        with self.read() as conn:
            if not inspect(conn).has_table(schema.migrations.name):
                return True
            done = set(conn.execute(select(schema.migrations.c.name)).scalars())
        return any(name not in done for name, _step in MIGRATIONS)

    def close(self) -> None:
        """Release connections."""
        self.engine.dispose()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite); rolled back on any error."""
        try:
            with self.engine.connect() as conn:
                conn.info["write"] = True
                conn.info["chain_checked"] = set()  # each write transaction checks afresh
                with conn.begin():
                    yield conn
        except IntegrityError as exc:
            # Another writer got there first (the locks make this rare): nothing was recorded.
            raise StorageError(f"conflicting write, nothing was recorded: {exc.orig}",
                               hint="run the command again") from exc
        except (OperationalError, DBAPIError) as exc:
            raise _storage_error(exc, self.dialect, ", nothing was recorded") from exc

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction."""
        try:
            with self.engine.connect() as conn, conn.begin():
                yield conn
        except (OperationalError, DBAPIError) as exc:
            raise _storage_error(exc, self.dialect, "") from exc

    # ------------------------------------------------------------------ incidents and events

    def create_incident(self, conn: Connection, *, playbook_id: str, title: str, drill: bool,
                        at: datetime) -> str:
        """Insert a new incident row (no events yet) and return its id."""
        stamp = as_utc(at)
        incident_id = incident_id_at(stamp, secrets.token_hex(3).upper())
        conn.execute(schema.incidents.insert().values(
            id=incident_id, created_at=stamp.replace(tzinfo=None) if self.dialect == "sqlite"
            else stamp, playbook_id=playbook_id, title=title, drill=drill, last_seq=0,
            head_hash=GENESIS))
        return incident_id

    def append(self, conn: Connection, incident_id: str, type: EventType, *, actor: str,
               data: dict[str, Any] | Payload, at: datetime) -> Event:
        """Append an event inside the caller's write transaction.

        `data` is the event's payload model (incident/payloads.py), or a dict validated
        through it (RecordInvalid before anything is written); a dict is stored as given.
        The first append of a transaction to an incident checks its chain: on a broken chain
        the write goes on (the record must not stop in an emergency) but first records a
        `chain_tampered` event naming what was found, and the command warns (`tampered`).
        """
        payload = parse_payload(type, data)
        stored = payload_data(payload) if isinstance(data, Payload) else data
        self._check_before_append(conn, incident_id, actor=actor, at=at)
        event = append_event(conn, incident_id=incident_id, type=type, actor=actor,
                             data=stored, at=at, lock=self.dialect == "postgresql",
                             key=self.chain_key)
        event._payload = (event.data, payload)  # parsed already: payload_of need not again
        return event

    def _check_before_append(self, conn: Connection, incident_id: str, *, actor: str,
                             at: datetime, outbox: bool = False) -> None:
        checked = conn.info.setdefault("chain_checked", set())
        if incident_id in checked:
            return
        checked.add(incident_id)
        if self._just_checked == incident_id:  # record_tampering did it just before
            self._just_checked = None
            return
        problems, new = tampering_to_record(conn, incident_id, self.chain_key, outbox=outbox)
        if problems:
            self.tampered[incident_id] = problems
        if new:
            append_event(conn, incident_id=incident_id, type=EventType.CHAIN_TAMPERED,
                         actor=actor, data=payload_data(ChainTampered(problems=new)), at=at,
                         lock=self.dialect == "postgresql", key=self.chain_key)

    def record_tampering(self, incident_id: str, *, actor: str, at: datetime) -> None:
        """Check the incident's chain in a transaction of its own and record what is broken
        (`chain_tampered`), before a write that the tampering itself may make fail (a deleted
        notice's messages still hold its sequence number): the finding is kept either way."""
        with self.write() as conn:
            self.lock_incident(conn, incident_id)
            self._check_before_append(conn, incident_id, actor=actor, at=at, outbox=True)
        self._just_checked = incident_id  # the write that follows need not hash it again

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

    def log_head(self) -> int:
        """The newest event's id across incidents (changes whenever anything is recorded)."""
        with self.read() as conn:
            return log_head(conn)

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
                # A suffix, literally: % and _ typed in an id are characters, not wildcards.
                schema.incidents.c.id.endswith(wanted, autoescape=True))).scalars())
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
            return verify_chain(conn, incident_id, self.chain_key)


# SQLite result codes (sqlite3.Error.sqlite_errorname) and PostgreSQL SQLSTATEs of the two
# run-time conditions an operator can do something about.
_BUSY = ("SQLITE_BUSY", "SQLITE_LOCKED", "55P03")  # 55P03: lock_not_available
_FULL = ("SQLITE_FULL", "53100")  # 53100: disk_full


def _storage_error(exc: DBAPIError, dialect: str, outcome: str) -> StorageError:
    """A database failure as the operator should read it: busy and full named as such."""
    orig = exc.orig if exc.orig is not None else exc
    code = getattr(orig, "sqlite_errorname", None) or getattr(orig, "sqlstate", None) or ""
    text = str(orig)
    if code.startswith(_BUSY) or "database is locked" in text:
        waited = (f" (waited {_engine.SQLITE_BUSY_MS / 1000:g} s)" if dialect == "sqlite"
                  else "")
        return StorageError(f"the database is busy: locked by another writer{waited}{outcome}",
                            hint="another incident command or delivery worker is writing; "
                                 "run the command again when it has finished")
    if code.startswith(_FULL) or "disk is full" in text or "No space left" in text:
        detail = "" if "disk is full" in text else f" ({text})"  # SQLite says only that
        return StorageError(f"the database or disk is full{outcome}{detail}",
                            hint="free space on the disk that holds the database, then run "
                                 "the command again")
    return StorageError(f"database error{outcome}: {text}",
                        hint="check the database is reachable and not read-only")


def _incident_row(row: Any) -> IncidentRow:
    return IncidentRow(id=row.id, created_at=as_utc(row.created_at),
                       playbook_id=row.playbook_id, title=row.title, drill=bool(row.drill),
                       last_seq=row.last_seq, head_hash=row.head_hash)
