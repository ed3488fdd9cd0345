"""Inbound replies: kept once per provider reference, matched to a customer by number, and at
most one automatic acknowledgement per customer per incident (a unique key, so that two
servers taking a flood of replies from one number still acknowledge once)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from incident.models import DeliveryState
from incident.store import schema
from incident.store.outbox import _db_time, is_acknowledgement, is_party

# The channels whose address is the phone number a reply comes from.
PHONE_CHANNELS = ("sms", "voice")


@dataclass(frozen=True, slots=True)
class Customer:
    """The customer a number belongs to in one incident (from their latest outbox row)."""

    incident_id: str
    ref: str
    name: str
    language: str
    urgent: bool
    region: str | None


def add(conn: Connection, *, provider_ref: str, source: str, number: str,
        to_number: str | None, body: str, kind: str, received_at: datetime) -> int | None:
    """Keep one reply; its id, or None when this provider reference is kept already."""
    values = {"provider_ref": provider_ref[:200], "source": source, "number": number,
              "to_number": to_number, "body": body, "kind": kind,
              "received_at": _db_time(conn, received_at)}
    t = schema.replies
    insert: Any = (postgresql_insert(t) if conn.dialect.name == "postgresql"
                   else sqlite_insert(t))
    # RETURNING, not rowcount: a driver's row count for ON CONFLICT DO NOTHING is not
    # reliable (store/escalation.py says the same).
    found = conn.execute(insert.values(**values).on_conflict_do_nothing()
                         .returning(t.c.id)).first()
    return None if found is None else int(found[0])


def attach(conn: Connection, reply_id: int, *, incident_id: str, recipient_ref: str,
           kind: str, case_id: str | None, event_seq: int) -> None:
    """Record what a kept reply became: its incident, customer, kind, case and event."""
    t = schema.replies
    conn.execute(update(t).where(t.c.id == reply_id).values(
        incident_id=incident_id, recipient_ref=recipient_ref, kind=kind, case_id=case_id,
        event_seq=event_seq))


def repeat_of(conn: Connection, *, incident_id: str, recipient_ref: str,
              body: str) -> Any | None:
    """An earlier reply of this customer on this incident with the same text, recorded (its
    kind, case_id and event_seq), or None."""
    t = schema.replies
    return conn.execute(select(t.c.kind, t.c.case_id, t.c.event_seq).where(
        t.c.incident_id == incident_id, t.c.recipient_ref == recipient_ref,
        t.c.body == body, t.c.event_seq.is_not(None)).order_by(t.c.id).limit(1)).first()


def candidates(conn: Connection, number: str) -> list[Customer]:
    """The customers with this number, one per incident, the most recent incident first."""
    o, i = schema.outbox, schema.incidents
    latest = (select(o.c.incident_id, func.max(o.c.id).label("id"))
              .where(o.c.address == number, o.c.channel.in_(PHONE_CHANNELS),
                     ~is_party(o))
              .group_by(o.c.incident_id).subquery())
    query = (select(o.c.incident_id, o.c.recipient_ref, o.c.recipient_name, o.c.language,
                    o.c.priority, o.c.region)
             .join(latest, latest.c.id == o.c.id)
             .join(i, i.c.id == o.c.incident_id)
             .order_by(i.c.created_at.desc(), o.c.incident_id.desc()))
    return [Customer(incident_id=r.incident_id, ref=r.recipient_ref, name=r.recipient_name,
                     language=r.language, urgent=r.priority == 0, region=r.region)
            for r in conn.execute(query)]


def claim_ack(conn: Connection, *, incident_id: str, recipient_ref: str, reply_id: int,
              now: datetime) -> bool:
    """Whether this reply's customer may be acknowledged in this incident: True once (the
    row is written), False ever after — the database's unique key decides."""
    t = schema.reply_acks
    insert: Any = (postgresql_insert(t) if conn.dialect.name == "postgresql"
                   else sqlite_insert(t))
    found = conn.execute(insert.values(
        incident_id=incident_id, recipient_ref=recipient_ref, reply_id=reply_id,
        acked_at=_db_time(conn, now)).on_conflict_do_nothing().returning(t.c.reply_id)).first()
    return found is not None


def kinds(conn: Connection, incident_id: str) -> dict[str, int]:
    """The incident's replies by kind (repeats of a text included; unmatched ones are of no
    incident)."""
    t = schema.replies
    return {kind: int(n) for kind, n in conn.execute(
        select(t.c.kind, func.count()).where(t.c.incident_id == incident_id)
        .group_by(t.c.kind))}


def acks(conn: Connection, incident_id: str) -> tuple[int, int]:
    """The incident's acknowledgements: recorded (one per customer), and accepted by the
    provider (their SMS rows sent)."""
    t, o = schema.reply_acks, schema.outbox
    recorded = conn.execute(select(func.count()).select_from(t)
                            .where(t.c.incident_id == incident_id)).scalar_one()
    sent = conn.execute(select(func.count()).select_from(o).where(
        o.c.incident_id == incident_id, o.c.state == DeliveryState.SENT.value,
        is_acknowledgement(o))).scalar_one()
    return int(recorded), int(sent)


def listed(conn: Connection, incident_id: str | None) -> list[Any]:
    """Replies of one incident, or all (unmatched ones included), oldest first."""
    t = schema.replies
    query = select(t).order_by(t.c.received_at, t.c.id)
    if incident_id is not None:
        query = query.where(t.c.incident_id == incident_id)
    return list(conn.execute(query).all())

