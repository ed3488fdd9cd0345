"""The append-only, hash-chained event log of each incident, and its anchor.

The hash chain alone proves only that the log is consistent with its own head, and the head
lives in the same database: whoever can write the database can delete the latest events and
rewrite the head, or rewrite the whole chain. The anchor is a key the database never holds
(INCIDENT_CHAIN_KEY): with it, each event's hash and the head are signed (HMAC-SHA256), so
those rewrites need the key too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select, update

from incident.errors import IncidentNotFound
from incident.models import Event, EventType
from incident.store import schema

GENESIS = "0" * 64
CHAIN_KEY_ENV = "INCIDENT_CHAIN_KEY"
# verify_chain's lines about missing signatures contain this; the others mean a broken chain.
UNSIGNED = "not signed with the chain key"


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


def sign_event(key: bytes, digest: str) -> str:
    """The signature stored with an event: HMAC of its hash (which covers the whole chain)."""
    return hmac.new(key, b"event\x1f" + digest.encode(), hashlib.sha256).hexdigest()


def sign_head(key: bytes, incident_id: str, last_seq: int, head_hash: str) -> str:
    """The signature of an incident's head: how many events, ending in which hash. Its own
    prefix, so an event's signature can never pass for the head of a truncated chain."""
    message = "\x1f".join(["head", incident_id, str(last_seq), head_hash]).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def append_event(conn: Connection, *, incident_id: str, type: EventType, actor: str,
                 data: dict[str, Any], at: datetime, lock: bool,
                 key: bytes | None = None) -> Event:
    """Append one event, signed when there is a chain `key`; the caller's transaction must
    hold the incident (see `lock`)."""
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
        prev_hash=head.head_hash, hash=digest, mac=sign_event(key, digest) if key else None))
    # The guard on last_seq makes a lost race fail loudly instead of forking the chain.
    moved = conn.execute(update(schema.incidents)
                         .where(schema.incidents.c.id == incident_id,
                                schema.incidents.c.last_seq == head.last_seq)
                         .values(last_seq=seq, head_hash=digest,
                                 head_mac=sign_head(key, incident_id, seq, digest) if key
                                 else None))
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


def event_data(conn: Connection, incident_id: str, seq: int
               ) -> tuple[dict[str, Any], datetime] | None:
    """The payload and time of event `seq` of an incident (None: no such event)."""
    e = schema.events
    row = conn.execute(select(e.c.data, e.c.at).where(e.c.incident_id == incident_id,
                                                      e.c.seq == seq)).first()
    return (json.loads(row.data), as_utc(row.at)) if row is not None else None


def first_event_data(conn: Connection, incident_id: str, type: EventType
                     ) -> dict[str, Any] | None:
    """The payload of an incident's first event of `type` (None: it has none)."""
    e = schema.events
    data = conn.execute(select(e.c.data).where(e.c.incident_id == incident_id,
                                               e.c.type == type.value)
                        .order_by(e.c.seq).limit(1)).scalar()
    return json.loads(data) if data is not None else None


def log_head(conn: Connection) -> int:
    """The id of the newest event of any incident (0: none): one index lookup, so a process
    can poll it to learn that the record changed."""
    return int(conn.execute(select(func.max(schema.events.c.id))).scalar() or 0)


def open_incident_ids(conn: Connection) -> list[str]:
    """The ids of incidents not closed."""
    closed = select(schema.events.c.incident_id).where(
        schema.events.c.type == EventType.CLOSED.value)
    return list(conn.execute(select(schema.incidents.c.id).where(
        schema.incidents.c.id.not_in(closed))).scalars())


def verify_chain(conn: Connection, incident_id: str, key: bytes | None = None) -> list[str]:
    """Recompute the chain, check its signatures when there is a chain `key`, and list the
    tampering recorded by earlier writes; one line per problem (empty when intact)."""
    return _check_chain(conn, incident_id, key, outbox=True)[0]


def tampering_to_record(conn: Connection, incident_id: str, key: bytes | None, *,
                        outbox: bool = False) -> tuple[list[str], list[str]]:
    """(what shows the chain broken, what of it a write must record). A missing signature
    is neither (an incident recorded before the key was set; `verify` reports it); what an
    earlier write recorded is not recorded again."""
    problems, recorded = _check_chain(conn, incident_id, key, outbox=outbox)
    broken = [p for p in problems if UNSIGNED not in p]
    tampered = f"({EventType.CHAIN_TAMPERED.value},"
    return broken, [p for p in broken if p not in recorded and tampered not in p]


def _check_chain(conn: Connection, incident_id: str, key: bytes | None, *, outbox: bool
                 ) -> tuple[list[str], set[str]]:
    """(problems, what earlier writes recorded). `outbox`: also compare the outbox with the
    log (not inside a transaction that has just enqueued the rows of its own notice)."""
    head = conn.execute(select(schema.incidents).where(schema.incidents.c.id == incident_id)).one()
    rows = conn.execute(select(schema.events).where(schema.events.c.incident_id == incident_id)
                        .order_by(schema.events.c.id)).all()
    problems: list[str] = []
    recorded: set[str] = set()  # what earlier writes found and recorded
    unsigned: list[int] = []
    prev, prev_seq = GENESIS, 0
    for row in rows:
        label = f"event #{row.seq} ({row.type}, row id {row.id})"
        # Against the row before, not the row's position: a gap is reported once, not again
        # for every event written after it.
        expected_seq, prev_seq = prev_seq + 1, row.seq
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
        if key is not None:
            if row.mac is None:
                unsigned.append(row.seq)
            elif not hmac.compare_digest(row.mac, sign_event(key, row.hash)):
                problems.append(f"{label}: its signature does not match — the chain was "
                                "rewritten from here (or the chain key is not the one it "
                                "was written with)")
        if row.type == EventType.CHAIN_TAMPERED.value:
            found = json.loads(row.data).get("problems", [])
            recorded.update(found)
            problems.append(f"{label}: a write at {as_utc(row.at):%Y-%m-%d %H:%M} UTC by "
                            f"{row.actor} found the chain broken: " + "; ".join(found))
        prev = row.hash
    # The head against the last row (a gap before it is reported above, once).
    if prev_seq != head.last_seq or prev != head.head_hash:
        problems.append(f"head: the incident records {head.last_seq} events ending in "
                        f"{head.head_hash[:12]}…, the log ends at #{prev_seq} with "
                        f"{prev[:12]}… — the latest event was deleted or replaced")
    # A notice's messages are written with its event: messages of a notice after the last
    # event show that event deleted, even with the head rewritten and no key.
    latest = conn.execute(select(func.max(schema.outbox.c.notice_seq))
                          .where(schema.outbox.c.incident_id == incident_id)).scalar() \
        if outbox else None
    if latest is not None and latest > max(prev_seq, head.last_seq):
        problems.append(f"outbox: it holds messages of notice #{latest}, after the last event "
                        f"#{max(prev_seq, head.last_seq)} — the events that recorded them were "
                        "deleted")
    if key is not None:
        if unsigned:
            problems.append(f"events {_seqs(unsigned)} are {UNSIGNED} ({CHAIN_KEY_ENV}): "
                            "recorded before the key was set, or their signatures removed")
        if head.head_mac is None:
            if head.last_seq:
                problems.append(f"head: {UNSIGNED} ({CHAIN_KEY_ENV})")
        elif not hmac.compare_digest(head.head_mac, sign_head(key, incident_id, head.last_seq,
                                                               head.head_hash)):
            problems.append(f"head: its signature does not match {head.last_seq} events ending "
                            f"in {head.head_hash[:12]}… — the latest events were deleted and "
                            "the head rewritten (or the chain key differs)")
    return problems, recorded


def _seqs(seqs: list[int]) -> str:
    return f"#{seqs[0]}–#{seqs[-1]}" if len(seqs) > 1 else f"#{seqs[0]}"
