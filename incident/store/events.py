"""The append-only, hash-chained event log of each incident."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select, update

from incident.errors import IncidentNotFound
from incident.models import Event, EventType
from incident.store import schema

GENESIS = "0" * 64


def canonical_json(data: dict[str, Any]) -> str:
    """The one JSON form that is stored and hashed."""
    return json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def as_utc(value: datetime) -> datetime:
    """Stored times are UTC; SQLite hands them back naive."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def event_hash(*, incident_id: str, seq: int, type: str, at: datetime, actor: str,
               data: str, prev_hash: str) -> str:
    """SHA-256 over every stored field of an event and the previous event's hash."""
    stamp = as_utc(at).isoformat(timespec="microseconds")
    payload = "\x1f".join([incident_id, str(seq), type, stamp, actor, data, prev_hash])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def append_event(conn: Connection, *, incident_id: str, type: EventType, actor: str,
                 data: dict[str, Any], at: datetime, lock: bool) -> Event:
    """Append one event; the caller's transaction must hold the incident (see `lock`)."""
    query = select(schema.incidents.c.last_seq, schema.incidents.c.head_hash).where(
        schema.incidents.c.id == incident_id)
    if lock:
        query = query.with_for_update()
    head = conn.execute(query).one_or_none()
    if head is None:
        raise IncidentNotFound(f"no incident {incident_id}")
    seq = head.last_seq + 1
    at = as_utc(at).replace(tzinfo=None) if conn.dialect.name == "sqlite" else as_utc(at)
    body = canonical_json(data)
    digest = event_hash(incident_id=incident_id, seq=seq, type=type.value, at=at, actor=actor,
                        data=body, prev_hash=head.head_hash)
    conn.execute(schema.events.insert().values(
        incident_id=incident_id, seq=seq, type=type.value, at=at, actor=actor, data=body,
        prev_hash=head.head_hash, hash=digest))
    # The guard on last_seq makes a lost race fail loudly instead of forking the chain.
    moved = conn.execute(update(schema.incidents)
                         .where(schema.incidents.c.id == incident_id,
                                schema.incidents.c.last_seq == head.last_seq)
                         .values(last_seq=seq, head_hash=digest))
    if moved.rowcount != 1:
        raise RuntimeError(f"concurrent append to {incident_id} lost the race")
    return Event(incident_id=incident_id, seq=seq, type=type, at=as_utc(at), actor=actor,
                 data=data, prev_hash=head.head_hash, hash=digest)


def read_events(conn: Connection, incident_id: str) -> list[Event]:
    """All events of an incident in order."""
    rows = conn.execute(select(schema.events).where(schema.events.c.incident_id == incident_id)
                        .order_by(schema.events.c.seq)).all()
    return [Event(incident_id=r.incident_id, seq=r.seq, type=EventType(r.type), at=as_utc(r.at),
                  actor=r.actor, data=json.loads(r.data), prev_hash=r.prev_hash, hash=r.hash)
            for r in rows]


def verify_chain(conn: Connection, incident_id: str) -> list[str]:
    """Recompute the chain; return one line per problem (empty when intact)."""
    head = conn.execute(select(schema.incidents).where(schema.incidents.c.id == incident_id)).one()
    rows = conn.execute(select(schema.events).where(schema.events.c.incident_id == incident_id)
                        .order_by(schema.events.c.id)).all()
    problems: list[str] = []
    prev = GENESIS
    for expected_seq, row in enumerate(rows, start=1):
        label = f"event #{row.seq} ({row.type}, row id {row.id})"
        if row.seq != expected_seq:
            problems.append(f"{label}: expected sequence number {expected_seq} here — "
                            "an event was deleted or the log was reordered")
        if row.prev_hash != prev:
            problems.append(f"{label}: does not link to the event before it — "
                            "an event before it was deleted, changed or moved")
        digest = event_hash(incident_id=row.incident_id, seq=row.seq, type=row.type, at=row.at,
                            actor=row.actor, data=row.data, prev_hash=row.prev_hash)
        if digest != row.hash:
            problems.append(f"{label}: content does not match its hash — the row was modified")
        prev = row.hash
    if len(rows) != head.last_seq or prev != head.head_hash:
        problems.append(f"head: the incident records {head.last_seq} events ending in "
                        f"{head.head_hash[:12]}…, the log has {len(rows)} ending in {prev[:12]}… "
                        "— the latest event was deleted or replaced")
    return problems
