"""Finding the email an outside report is about (a bounce): outbox rows by the Message-IDs
the toolkit generated (notices.message_id) or by their idempotency keys (a VERP return path).
Read only."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, select

from incident.store import schema
from incident.store.events import as_utc

BATCH = 500  # values per IN (…): well under SQLite's and PostgreSQL's parameter limits
# notices.message_id: <INC-<date>-<6 hex>.<24 hex>@domain>; the incident id in it narrows
# the search to one incident's rows (ix_outbox_notice), so no index on message_id is needed.
_OURS = re.compile(r"^<(INC-\d{8}-[0-9A-F]{6})\.[0-9a-f]{24}@[^<>\s]+>$")
_KEY = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class MailedRow:
    """An email outbox row a report may be about; `address` is a full contact: mask it."""

    id: int
    incident_id: str
    notice_seq: int
    recipient_ref: str
    address: str
    state: str
    message_id: str
    idempotency_key: str
    sent_at: datetime | None


def by_message_ids(conn: Connection, message_ids: Iterable[str]) -> dict[str, MailedRow]:
    """The email rows whose Message-ID is one of `message_ids`, by Message-ID. Ids the
    toolkit cannot have generated are not looked up."""
    per_incident: dict[str, set[str]] = defaultdict(set)
    for value in message_ids:
        found = _OURS.match(value)
        if found:
            per_incident[found.group(1)].add(value)
    o = schema.outbox
    out: dict[str, MailedRow] = {}
    for incident_id, wanted in per_incident.items():
        for chunk in _chunks(sorted(wanted)):
            for row in _rows(conn, o.c.incident_id == incident_id, o.c.message_id.in_(chunk)):
                out[row.message_id] = row
    return out


def by_keys(conn: Connection, keys: Iterable[str]) -> dict[str, MailedRow]:
    """The email rows whose idempotency key is one of `keys` (VERP), by key."""
    o = schema.outbox
    out: dict[str, MailedRow] = {}
    for chunk in _chunks(sorted({k for k in keys if _KEY.match(k)})):
        for row in _rows(conn, o.c.idempotency_key.in_(chunk)):
            out[row.idempotency_key] = row
    return out


def _rows(conn: Connection, *where: ColumnElement[bool]) -> Iterator[MailedRow]:
    o = schema.outbox
    query = select(o.c.id, o.c.incident_id, o.c.notice_seq, o.c.recipient_ref, o.c.address,
                   o.c.state, o.c.message_id, o.c.idempotency_key, o.c.sent_at).where(
        o.c.channel == "email", *where)
    for r in conn.execute(query):
        yield MailedRow(id=r.id, incident_id=r.incident_id, notice_seq=r.notice_seq,
                        recipient_ref=r.recipient_ref, address=r.address, state=r.state,
                        message_id=r.message_id, idempotency_key=r.idempotency_key,
                        sent_at=as_utc(r.sent_at) if r.sent_at else None)


def _chunks(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), BATCH):
        yield values[start:start + BATCH]
