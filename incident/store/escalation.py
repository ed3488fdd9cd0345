"""Escalation's queries: customer messages accepted but not confirmed in time, and the
contacts their customers can be reached at on another channel (response/escalation.py)."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, exists, select
from sqlalchemy.orm import aliased

from incident.models import DeliveryState
from incident.store import schema
from incident.store.outbox import _db_time, is_party

PHONE_CHANNELS = ("sms", "voice")


def unconfirmed(conn: Connection, incident_id: str, *, accepted_before: datetime,
                confirmed: Collection[str], source: str | None = None,
                exclude: str | None = None) -> list[Any]:
    """Customer rows accepted by the provider at or before `accepted_before` (on `source`, or
    any channel but `exclude`) whose notice no row of the same customer confirmed (a receipt
    in `confirmed`): undelivered, bounced, unanswered or not heard of. Oldest first."""
    o = schema.outbox
    other = aliased(o)
    confirming = exists().where(
        other.c.incident_id == o.c.incident_id, other.c.notice_seq == o.c.notice_seq,
        other.c.recipient_ref == o.c.recipient_ref, other.c.receipt.in_(list(confirmed)))
    query = (select(o.c.id, o.c.notice_seq, o.c.channel, o.c.recipient_ref, o.c.recipient_name,
                    o.c.address, o.c.language, o.c.priority, o.c.fallback_address, o.c.region)
             .where(o.c.incident_id == incident_id, o.c.state == DeliveryState.SENT.value,
                    o.c.sent_at <= _db_time(conn, accepted_before),
                    ~is_party(o), ~confirming)
             .order_by(o.c.id))
    if source is not None:
        query = query.where(o.c.channel == source)
    if exclude is not None:
        query = query.where(o.c.channel != exclude)
    return list(conn.execute(query).all())


def contacts(conn: Connection, incident_id: str,
             refs: Iterable[str]) -> dict[str, dict[str, str]]:
    """Each customer's contacts recorded anywhere in the incident's outbox, by channel
    (email, sms, voice): a phone serves SMS and calls; a row's fallback contact counts."""
    o = schema.outbox
    wanted = list(dict.fromkeys(refs))
    found: dict[str, dict[str, str]] = {}
    for start in range(0, len(wanted), 500):
        query = select(o.c.recipient_ref, o.c.channel, o.c.address, o.c.fallback_address).where(
            and_(o.c.incident_id == incident_id,
                 o.c.recipient_ref.in_(wanted[start:start + 500])))
        for ref, channel, address, spare in conn.execute(query):
            known = found.setdefault(ref, {})
            phone = address if channel in PHONE_CHANNELS else spare
            email = address if channel == "email" else spare if channel == "sms" else None
            if phone:
                for each in PHONE_CHANNELS:
                    known.setdefault(each, phone)
            if email:
                known.setdefault("email", email)
    return found


def existing_keys(conn: Connection, keys: Iterable[str]) -> set[str]:
    """Which of these outbox idempotency keys have a row (a step already applied: counted
    apart, since an insert's row count on conflict is not reliable on every driver)."""
    o = schema.outbox
    wanted = list(dict.fromkeys(keys))
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        found.update(conn.execute(select(o.c.idempotency_key).where(
            o.c.idempotency_key.in_(wanted[start:start + 500]))).scalars())
    return found
