"""The suppression list: numbers whose owners opted out (Twilio 21610, an opted-out receipt,
an inbound STOP, an operator), with time and source; and whether an incident notifies them
anyway (an operator's override, an event, for notices that are obligations).

Later notices' SMS and voice rows to a suppressed number are recorded `skipped` with the code
`opted_out` (store/outbox.py `enqueue`), so `status` and `failed` count them and say why.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, update

from incident.models import DeliveryState, EventType
from incident.store import schema
from incident.store.events import as_utc

# The channels whose address is a phone number the list names.
SUPPRESSED_CHANNELS = frozenset({"sms", "voice"})
SKIPPED_CODE = "opted_out"


def add(conn: Connection, address: str, *, source: str, now: datetime,
        reason: str | None = None, actor: str | None = None) -> bool:
    """Put `address` on the list; False (nothing written) when it is on it already."""
    if suppressed(conn, [address]):
        return False
    conn.execute(schema.optouts.insert().values(
        address=address, source=source[:40], reason=reason, actor=actor,
        added_at=_db_time(conn, now)))
    return True


def remove(conn: Connection, address: str, *, actor: str, now: datetime) -> bool:
    """Take `address` off the list (its rows are kept, marked removed); False when it was not
    on it."""
    t = schema.optouts
    result = conn.execute(update(t).where(t.c.address == address, t.c.removed_at.is_(None))
                          .values(removed_at=_db_time(conn, now), removed_by=actor))
    return bool(result.rowcount)


def suppressed(conn: Connection, addresses: Iterable[str] | None = None) -> set[str]:
    """Which of `addresses` (all, when None) are on the list now."""
    t = schema.optouts
    query = select(t.c.address).where(t.c.removed_at.is_(None)).distinct()
    if addresses is None:
        return set(conn.execute(query).scalars())
    wanted = list(dict.fromkeys(addresses))
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        found.update(conn.execute(query.where(
            t.c.address.in_(wanted[start:start + 500]))).scalars())
    return found


def listed(conn: Connection) -> list[Any]:
    """The numbers on the list now: (address, source, reason, actor, added_at), oldest first."""
    t = schema.optouts
    query = (select(t.c.address, t.c.source, t.c.reason, t.c.actor, t.c.added_at)
             .where(t.c.removed_at.is_(None)).order_by(t.c.added_at, t.c.id))
    return list(conn.execute(query).all())


def overridden(conn: Connection, incident_id: str) -> bool:
    """Whether the incident notifies suppressed numbers too: an operator recorded an
    optout_overridden event (`incident optout override`)."""
    e = schema.events
    return conn.execute(select(e.c.id).where(
        e.c.incident_id == incident_id,
        e.c.type == EventType.OPTOUT_OVERRIDDEN.value).limit(1)).first() is not None


def skipped(conn: Connection, incident_id: str) -> dict[str, int]:
    """Customer rows of the incident skipped because the number opted out, by channel."""
    o = schema.outbox
    query = (select(o.c.channel, func.count())
             .where(o.c.incident_id == incident_id, o.c.state == DeliveryState.SKIPPED.value,
                    o.c.error_code == SKIPPED_CODE)
             .group_by(o.c.channel))
    return {str(channel): int(n) for channel, n in conn.execute(query)}


def _db_time(conn: Connection, value: datetime) -> datetime:
    value = as_utc(value)
    return value.replace(tzinfo=None) if conn.dialect.name == "sqlite" else value


def unskip(conn: Connection, incident_id: str, *, now: datetime) -> int:
    """Put the incident's rows skipped for an opt-out back to pending, due now (after an
    override); how many."""
    o = schema.outbox
    result = conn.execute(update(o).where(
        o.c.incident_id == incident_id, o.c.state == DeliveryState.SKIPPED.value,
        o.c.error_code == SKIPPED_CODE).values(
        state=DeliveryState.PENDING.value, error_code=None, last_error=None,
        next_attempt_at=_db_time(conn, now)))
    return int(result.rowcount or 0)
