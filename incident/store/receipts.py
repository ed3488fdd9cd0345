"""Delivery receipts: what providers report about a row after accepting it (callbacks, polls,
bounces), kept one by one in `receipts`, and the row's resulting state on the outbox.

The rule that settles a row (outbox.receipt), whatever order receipts arrive in:

- `accepted` (queued, sent to the carrier, ringing ...) never replaces a final state;
- among final states the one with the provider's latest time wins: a `delivered` timed after
  an `undelivered` makes the row delivered, a late `undelivered` timed before the row's
  `delivered` is kept as a receipt but changes nothing;
- on the same provider time, the higher rank (models.RECEIPT_RANK) wins.

So the result depends only on the set of receipts, never on their arrival order, and a
duplicate (same provider reference, status and provider time) is stored once and harmless.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from incident.models import RECEIPT_RANK, DeliveryState, ReceiptState
from incident.store import optouts, schema
from incident.store.events import as_utc

_NEVER = datetime.min.replace(tzinfo=UTC)
SOURCES = frozenset({"callback", "poll", "bounce"})


@dataclass(frozen=True, slots=True)
class Receipt:
    """One report of a provider about one message, named by its outbox row id, the
    provider's reference (Twilio SID) or the message's Message-ID (a bounce)."""

    state: ReceiptState
    status: str  # the provider's own word: delivered, no-answer, 5.1.1 ...
    provider_at: datetime
    source: str  # callback | poll | bounce
    code: str | None = None
    provider_ref: str | None = None
    outbox_id: int | None = None
    message_id: str | None = None  # an email's Message-ID (<…@…>), as a bounce names it


@dataclass(slots=True)
class Recorded:
    """What `record` did: receipts stored, duplicates ignored, receipts naming no row, and
    the rows whose state changed."""

    stored: int = 0
    duplicates: int = 0
    unmatched: int = 0
    changed: list[int] = field(default_factory=list)


def order_key(state: str, at: datetime | None) -> tuple[bool, datetime, int]:
    """How receipts compare (see the module's rule): the greater settles the row."""
    rank = RECEIPT_RANK[ReceiptState(state)]
    final = rank > 0
    return (final, as_utc(at) if final and at is not None else _NEVER, rank)


def record(conn: Connection, receipts: Iterable[Receipt], *, now: datetime) -> Recorded:
    """Store `receipts` and settle their rows by the rule above, in the caller's write
    transaction (committed by it before anyone is told "recorded")."""
    done = Recorded()
    for receipt in receipts:
        if receipt.source not in SOURCES:
            raise ValueError(f"unknown receipt source {receipt.source!r}")
        row = _row(conn, receipt)
        if row is None:
            done.unmatched += 1
            continue
        if not _insert(conn, receipt, row, now):
            done.duplicates += 1
            continue
        done.stored += 1
        if (receipt.state is ReceiptState.OPTED_OUT
                and row.channel in optouts.SUPPRESSED_CHANNELS):
            optouts.add(conn, row.address, source=f"{row.channel} {receipt.source}",
                        reason=receipt.code, now=now)
        if row.receipt is None or order_key(receipt.state, receipt.provider_at) > order_key(
                row.receipt, row.receipt_at):
            conn.execute(_SETTLE, {"row_id": row.id, "receipt": receipt.state.value,
                                   "receipt_code": receipt.code,
                                   "receipt_at": _db_time(conn, receipt.provider_at)})
            done.changed.append(row.id)
    return done


def known(conn: Connection, refs: Iterable[str]) -> set[str]:
    """Which of `refs` (receipts' provider references) are recorded already."""
    wanted = list(dict.fromkeys(r[:200] for r in refs))
    r = schema.receipts
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        found.update(conn.execute(select(r.c.provider_ref).where(
            r.c.provider_ref.in_(wanted[start:start + 500]))).scalars())
    return found


# The statements of `record`, built once: building them per receipt (select/where/values,
# their cache keys) cost more than executing them (a profile of `receipts serve`).
_o, _r = schema.outbox, schema.receipts
_ROW = select(_o.c.id, _o.c.channel, _o.c.address, _o.c.provider_ref, _o.c.receipt,
              _o.c.receipt_at).limit(1)
_ROW_BY = {"id": _ROW.where(_o.c.id == bindparam("v")),
           "ref": _ROW.where(_o.c.provider_ref == bindparam("v")),
           "mid": _ROW.where(_o.c.message_id == bindparam("v"))}
_ROW_BY_PG = {k: q.with_for_update() for k, q in _ROW_BY.items()}
_INSERT = {name: dml(_r).on_conflict_do_nothing().returning(_r.c.id)
           for name, dml in (("sqlite", sqlite_insert), ("postgresql", postgresql_insert))}
_SETTLE = update(_o).where(_o.c.id == bindparam("row_id"))


def _row(conn: Connection, receipt: Receipt) -> Any:
    value: int | str
    if receipt.outbox_id is not None:
        by, value = "id", receipt.outbox_id
    elif receipt.provider_ref:
        by, value = "ref", receipt.provider_ref
    elif receipt.message_id:
        by, value = "mid", receipt.message_id
    else:
        return None
    # On PostgreSQL receipt servers side by side settle a row in turn (FOR UPDATE).
    queries = _ROW_BY_PG if conn.dialect.name == "postgresql" else _ROW_BY
    return conn.execute(queries[by], {"v": value}).first()


def _insert(conn: Connection, receipt: Receipt, row: Any, now: datetime) -> bool:
    result = conn.execute(_INSERT[conn.dialect.name], {
        "outbox_id": row.id,
        "provider_ref": (receipt.provider_ref or receipt.message_id or row.provider_ref
                         or f"#{row.id}")[:200],
        "state": receipt.state.value, "status": receipt.status[:40], "code": receipt.code,
        "provider_at": _db_time(conn, receipt.provider_at),
        "received_at": _db_time(conn, now),
        "source": receipt.source})
    # RETURNING, not rowcount: the count PostgreSQL's driver reports for ON CONFLICT DO
    # NOTHING said 1 for a duplicate (tests/test_receipts_store.py).
    return result.first() is not None


def _db_time(conn: Connection, value: datetime) -> datetime:
    value = as_utc(value)
    return value.replace(tzinfo=None) if conn.dialect.name == "sqlite" else value


def unsettled(conn: Connection, incident_id: str | None = None, *,
              channels: Iterable[str] = ("sms", "voice")) -> list[Any]:
    """Rows accepted by the provider (sent, with a reference) and not settled by a final
    receipt: (id, channel, provider_ref), oldest first."""
    o = schema.outbox
    query = (select(o.c.id, o.c.channel, o.c.provider_ref)
             .where(o.c.state == DeliveryState.SENT.value, o.c.provider_ref.is_not(None),
                    o.c.channel.in_(list(channels)),
                    (o.c.receipt.is_(None)) | (o.c.receipt == ReceiptState.ACCEPTED.value))
             .order_by(o.c.id))
    if incident_id is not None:
        query = query.where(o.c.incident_id == incident_id)
    return list(conn.execute(query).all())


def counts(conn: Connection, incident_id: str) -> dict[str, dict[str, int]]:
    """Customer rows by channel and receipt state (rows with a receipt only)."""
    o = schema.outbox
    query = (select(o.c.channel, o.c.receipt, func.count())
             .where(o.c.incident_id == incident_id, o.c.receipt.is_not(None),
                    ~o.c.recipient_ref.like("party:%"))
             .group_by(o.c.channel, o.c.receipt))
    out: dict[str, dict[str, int]] = {}
    for channel, state, n in conn.execute(query):
        out.setdefault(channel, {})[state] = int(n)
    return out


def summary(conn: Connection, incident_id: str) -> list[Any]:
    """Receipts of an incident's rows by (channel, state, source): how many, and the first
    and last provider time (the timeline's lines; one per receipt would be millions)."""
    o, r = schema.outbox, schema.receipts
    query = (select(o.c.channel, r.c.state, r.c.source, func.count().label("count"),
                    func.min(r.c.provider_at).label("first"),
                    func.max(r.c.provider_at).label("last"))
             .join(o, o.c.id == r.c.outbox_id).where(o.c.incident_id == incident_id)
             .group_by(o.c.channel, r.c.state, r.c.source)
             .order_by(func.min(r.c.provider_at)))
    return [SimpleNamespace(**{**row._mapping, "first": as_utc(row.first),
                               "last": as_utc(row.last)}) for row in conn.execute(query)]


def of_incident(conn: Connection, incident_id: str) -> list[Any]:
    """Every receipt of an incident's rows, in the provider's time order (for the timeline)."""
    o, r = schema.outbox, schema.receipts
    query = (select(r.c.outbox_id, o.c.notice_seq, o.c.channel, o.c.recipient_ref, r.c.state,
                    r.c.status, r.c.code, r.c.provider_at, r.c.received_at, r.c.source)
             .join(o, o.c.id == r.c.outbox_id).where(o.c.incident_id == incident_id)
             .order_by(r.c.provider_at, r.c.id))
    return list(conn.execute(query).all())
