"""The staff roll-call's SQL: its roster (`rollcall_members`, no contacts) and the staff a
reply comes from (by the address their roll-call messages went to, in the outbox)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, select

from incident.store import schema
from incident.store.outbox import PARTY_PREFIX

STAFF_PREFIX = PARTY_PREFIX + "staff:"  # a roll-call message's recipient_ref: party:staff:<id>


def add_members(conn: Connection, incident_id: str, members: Iterable[dict[str, Any]]) -> int:
    """Record the roll-call's roster (staff_id, name, team, branch, manager, language)."""
    rows = [{"incident_id": incident_id, **m} for m in members]
    if rows:
        conn.execute(schema.rollcall_members.insert(), rows)
    return len(rows)


def members(conn: Connection, incident_id: str) -> list[Any]:
    """The roster of an incident's roll-call, by staff id."""
    m = schema.rollcall_members
    return list(conn.execute(select(m.c.staff_id, m.c.name, m.c.team, m.c.branch, m.c.manager,
                                    m.c.language)
                             .where(m.c.incident_id == incident_id)
                             .order_by(m.c.staff_id)).all())


def senders(conn: Connection, addresses: Sequence[str]) -> list[tuple[str, str]]:
    """(incident, staff id) of every roll-call message sent to one of `addresses` (a phone in
    E.164 or an email, as recorded), newest incident first."""
    o = schema.outbox
    query = (select(o.c.incident_id, o.c.recipient_ref).distinct()
             .where(o.c.address.in_(list(addresses)),
                    o.c.recipient_ref.like(STAFF_PREFIX + "%"))
             .order_by(o.c.incident_id.desc()))
    return [(i, ref[len(STAFF_PREFIX):]) for i, ref in conn.execute(query)]


def contacts(conn: Connection, incident_id: str, seq: int,
             staff_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Each staff member's row of the roll-call's first messages (notice `seq`), by channel:
    the contacts later rounds and alerts reuse."""
    o = schema.outbox
    refs = [STAFF_PREFIX + s for s in dict.fromkeys(staff_ids)]
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(refs), 500):
        query = select(o.c.incident_id, o.c.recipient_ref, o.c.channel, o.c.address,
                       o.c.recipient_name, o.c.language, o.c.region).where(
            o.c.incident_id == incident_id, o.c.notice_seq == seq,
            o.c.recipient_ref.in_(refs[start:start + 500]))
        for row in conn.execute(query):
            found.setdefault(row.recipient_ref[len(STAFF_PREFIX):], {})[row.channel] = row
    return found
