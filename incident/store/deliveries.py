"""Delivery progress as the outbox records it: counts by channel and state, what waits and why,
permanent failures, retries, the parties reached, when the next row falls due."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, case, func, literal, or_, select

from incident.models import NOT_REACHED, DeliveryState
from incident.privacy import scrub_error
from incident.store import schema
from incident.store.events import as_utc
from incident.store.outbox import PARTY_PREFIX, is_acknowledgement, is_customer_notice, is_party


@dataclass(frozen=True)
class Waiting:
    """A channel's messages still to send, and the last error that kept one back (None: not
    tried yet). The error may hold contact data: scrub it before showing it."""

    channel: str
    transport: str | None  # what the rows were recorded for (None: before m004)
    pending: int
    error: str | None
    code: str | None


def waiting(conn: Connection, incident_id: str | None = None) -> list[Waiting]:
    """Per channel and transport, the pending rows (not those another worker is sending) and
    the most recent error among them."""
    o = schema.outbox
    scope = [o.c.state == DeliveryState.PENDING.value] + (
        [o.c.incident_id == incident_id] if incident_id else [])
    out = []
    for channel, transport, n in conn.execute(
            select(o.c.channel, o.c.transport, func.count()).where(*scope)
            .group_by(o.c.channel, o.c.transport).order_by(o.c.channel, o.c.transport)).all():
        last = conn.execute(select(o.c.last_error, o.c.error_code).where(
            *scope, o.c.channel == channel, o.c.transport.is_(None) if transport is None
            else o.c.transport == transport, o.c.last_error.is_not(None))
            .order_by(o.c.next_attempt_at.desc(), o.c.id.desc()).limit(1)).first()
        out.append(Waiting(channel, transport, int(n), last.last_error if last else None,
                           last.error_code if last else None))
    return out


def foreign_incidents(conn: Connection, transports: Mapping[str, str],
                      incident_id: str | None = None) -> list[str]:
    """Incidents with pending rows recorded for another transport than `transports` names."""
    o = schema.outbox
    other = [(o.c.channel == channel) & o.c.transport.is_not(None) & (o.c.transport != t)
             for channel, t in transports.items()]
    query = select(o.c.incident_id).distinct().where(
        o.c.state == DeliveryState.PENDING.value, or_(*other))
    if incident_id:
        query = query.where(o.c.incident_id == incident_id)
    return list(conn.execute(query.order_by(o.c.incident_id)).scalars())


def reached_parties(conn: Connection, incident_id: str, notice_seq: int) -> set[str]:
    """The parties of an internal notice that at least one message reached (accepted by the
    relay or provider)."""
    o = schema.outbox
    refs = conn.execute(select(o.c.recipient_ref).distinct().where(
        o.c.incident_id == incident_id, o.c.notice_seq == notice_seq,
        o.c.state == DeliveryState.SENT.value, is_party(o)))
    return {ref[len(PARTY_PREFIX):] for ref in refs.scalars()}


def retrying(conn: Connection, incident_id: str, *, limit: int = 5) -> list[Any]:
    """Pending rows that failed temporarily at least once, most recent errors first."""
    o = schema.outbox
    query = (select(o.c.channel, o.c.recipient_ref, o.c.address, o.c.attempts, o.c.error_code,
                    o.c.last_error, o.c.next_attempt_at)
             .where(o.c.incident_id == incident_id, o.c.state == DeliveryState.PENDING.value,
                    o.c.last_error.is_not(None))
             .order_by(o.c.next_attempt_at.desc()).limit(limit))
    return _errors_scrubbed(conn.execute(query).all())


def counts(conn: Connection, incident_id: str | None = None, *,
           parties: bool | None = False) -> dict[str, dict[str, int]]:
    """Delivery counts by channel and state (SQL aggregate): of customer notices, of internal
    notices to parties (`parties=True`), or of every row (`None`: acknowledgements of
    replies too)."""
    o = schema.outbox
    query = select(o.c.channel, o.c.state, func.count()).group_by(o.c.channel, o.c.state)
    if incident_id is not None:
        query = query.where(o.c.incident_id == incident_id)
    if parties is not None:
        query = query.where(is_party(o) if parties else is_customer_notice(o))
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for channel, state, n in conn.execute(query):
        out[channel][state] = n
    return dict(out)


def failures(conn: Connection, incident_id: str, *, limit: int | None = None) -> list[Any]:
    """Permanently failed rows of an incident's notices (customers' and parties'; not the
    acknowledgements of replies), and rows skipped (the number opted out: state `skipped`,
    code `opted_out`), newest notice first."""
    o = schema.outbox
    # A row the provider accepted and then reported not reached (a receipt) fails too: its
    # state is the receipt's, its code the provider's.
    not_reached = (o.c.state == DeliveryState.SENT.value) & o.c.receipt.in_(
        [s.value for s in NOT_REACHED])
    state = case((not_reached, o.c.receipt), else_=o.c.state)
    query = (select(o.c.notice_seq, o.c.channel, o.c.recipient_ref, o.c.recipient_name,
                    o.c.address, case((not_reached, o.c.receipt_code),
                                      else_=o.c.error_code).label("error_code"),
                    case((not_reached, literal("reported by the provider after acceptance")),
                         else_=o.c.last_error).label("last_error"),
                    o.c.attempts, state.label("state"))
             .where(o.c.incident_id == incident_id, ~is_acknowledgement(o),
                    o.c.state.in_([DeliveryState.FAILED.value, DeliveryState.SKIPPED.value])
                    | not_reached)
             .order_by(o.c.notice_seq.desc(), o.c.id))
    if limit:
        query = query.limit(limit)
    return _errors_scrubbed(conn.execute(query).all())


def _errors_scrubbed(rows: Iterable[Any]) -> list[Any]:
    """Rows to show, their provider errors scrubbed again: rows stored by an older version
    may hold a secret or a full contact."""
    return [SimpleNamespace(**{**row._mapping, "last_error": scrub_error(row.last_error)})
            for row in rows]


def count_rows(conn: Connection, incident_id: str, notice_seq: int,
               channels: Sequence[str]) -> int:
    """Rows of notice `notice_seq` on `channels`."""
    o = schema.outbox
    return int(conn.execute(select(func.count()).where(
        o.c.incident_id == incident_id, o.c.notice_seq == notice_seq,
        o.c.channel.in_(list(channels)))).scalar() or 0)


def unsettled(conn: Connection, incident_id: str | None = None) -> int:
    """Rows not yet sent or failed (pending or being sent)."""
    o = schema.outbox
    query = select(func.count()).where(o.c.state.in_(
        [DeliveryState.PENDING.value, DeliveryState.SENDING.value]))
    if incident_id:
        query = query.where(o.c.incident_id == incident_id)
    return int(conn.execute(query).scalar() or 0)


def next_due(conn: Connection, transports: Mapping[str, str | None],
             incident_id: str | None = None) -> datetime | None:
    """When the next pending row of `transports` (channel -> transport; None: any) falls due;
    rows recorded for another transport are not counted."""
    o = schema.outbox
    ours = [(o.c.channel == name) & (o.c.transport.is_(None) | (o.c.transport == t))
            if t is not None else o.c.channel == name for name, t in transports.items()]
    query = select(func.min(o.c.next_attempt_at)).where(
        o.c.state == DeliveryState.PENDING.value, or_(*ours))
    if incident_id:
        query = query.where(o.c.incident_id == incident_id)
    value = conn.execute(query).scalar()
    return as_utc(value) if value is not None else None


def queue_depths(conn: Connection) -> list[tuple[str, str, int]]:
    """(incident, channel, rows pending or being sent) for every queue that is not empty: an
    index range over the claim index's leading state column, cheap at each metrics scrape."""
    o = schema.outbox
    query = (select(o.c.incident_id, o.c.channel, func.count())
             .where(o.c.state.in_([DeliveryState.PENDING.value, DeliveryState.SENDING.value]))
             .group_by(o.c.incident_id, o.c.channel))
    return [(str(i), str(c), int(n)) for i, c, n in conn.execute(query)]
