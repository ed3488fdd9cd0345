"""The outbox: one row per recipient × channel × notice; enqueue, claim, mark (what it says
about progress: store/deliveries.py)."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from itertools import chain
from operator import itemgetter
from typing import Any

from sqlalchemy import ColumnElement, Connection, exists, func, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError

from incident.models import DeliveryState, EventType
from incident.privacy import scrub_error
from incident.store import optouts, schema
from incident.store.events import as_utc

PARTY_PREFIX = "party:"  # recipient_ref of an internal notice's row: party:<id>


def is_party(o: Any) -> ColumnElement[bool]:
    """Outbox `o`'s row is to a party (an internal notice, a roll-call's staff)."""
    return o.c.recipient_ref.like(PARTY_PREFIX + "%")


def is_acknowledgement(o: Any) -> ColumnElement[bool]:
    """Outbox `o`'s row acknowledges a customer's reply: a row of a reply_received event.
    It goes to a customer but is no notice, so no figure of notices counts it."""
    e = schema.events
    return exists().where(e.c.incident_id == o.c.incident_id, e.c.seq == o.c.notice_seq,
                          e.c.type == EventType.REPLY_RECEIVED.value)


def is_customer_notice(o: Any) -> ColumnElement[bool]:
    """Outbox `o`'s row is of a customer notice (not to a party, not an acknowledgement)."""
    return ~is_party(o) & ~is_acknowledgement(o)


def idempotency_key(incident_id: str, notice_seq: int, recipient_ref: str, channel: str) -> str:
    """Stable key of one message, the same on every retry and every worker."""
    raw = f"{incident_id}\x1f{notice_seq}\x1f{recipient_ref}\x1f{channel}"
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def worker_name() -> str:
    """Identifies this process in claims, so a dead one's claims can be taken back."""
    return f"{socket.gethostname()}:{os.getpid()}"


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this host exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A claimed outbox row, with what a channel needs to send it."""

    id: int
    incident_id: str
    notice_seq: int
    channel: str
    recipient_ref: str
    recipient_name: str
    address: str
    language: str
    priority: int
    attempts: int
    message_id: str
    idempotency_key: str
    fallback_address: str | None = None
    transport: str | None = None  # what it was recorded for (None: before m004)
    region: str | None = None  # the customer's (None: a party, or before m007)


FALLBACK_CHANNEL = {"email": "sms", "sms": "email"}


def _db_time(conn: Connection, value: datetime) -> datetime:
    value = as_utc(value)
    return value.replace(tzinfo=None) if conn.dialect.name == "sqlite" else value


def enqueue(conn: Connection, rows: Iterable[dict[str, Any]], *, now: datetime,
            chunk: int = 2000, ignore_existing: bool = False) -> int:
    """Insert outbox rows (pending) in chunks; return how many. Customers' SMS and voice rows
    to a suppressed number are inserted `skipped` (store/optouts.py), never sent.

    With `ignore_existing`, a row whose idempotency key (or recipient) is already there is
    skipped, not an error: completing a notice whose recording was interrupted, possibly by
    two processes at once. The count is then of the rows inserted.

    All rows of one call carry the same keys (outbox column names). On SQLite they go to the
    driver's executemany as tuples: SQLAlchemy's processing of every parameter of every row
    cost more than SQLite's inserting it (the timestamps, the only columns SQLAlchemy converts
    on SQLite, are the same for every row and converted once).
    """
    stamp = _db_time(conn, now)
    fixed = {"state": DeliveryState.PENDING.value, "attempts": 0, "created_at": stamp,
             "next_attempt_at": stamp}
    aside: list[dict[str, Any]] = []
    # The rows to send are inserted first (streamed), filling `aside` as they go.
    sent = _insert_rows(conn, _set_aside_suppressed(conn, rows, aside), fixed, chunk,
                        ignore_existing)
    return sent + _insert_rows(conn, aside, fixed | _SKIPPED, chunk, ignore_existing)


# A row to a number on the suppression list: recorded, never sent, counted by status/failed.
_SKIPPED = {"state": DeliveryState.SKIPPED.value, "error_code": optouts.SKIPPED_CODE,
            "last_error": "the number opted out (on the suppression list)"}


def _set_aside_suppressed(conn: Connection, rows: Iterable[dict[str, Any]],
                          aside: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """`rows` minus customers' SMS and voice rows to suppressed numbers (unless their incident
    overrides the list), which go to `aside`. The list is small: read once, whole."""
    numbers = optouts.suppressed(conn)
    if not numbers:
        return iter(rows)
    overridden: dict[str, bool] = {}

    def keep(row: dict[str, Any]) -> bool:
        if (row["channel"] not in optouts.SUPPRESSED_CHANNELS or row["address"] not in numbers
                or row["recipient_ref"].startswith(PARTY_PREFIX)):
            return True
        incident_id = row["incident_id"]
        if incident_id not in overridden:
            overridden[incident_id] = optouts.overridden(conn, incident_id)
        if overridden[incident_id]:
            return True
        aside.append(row)
        return False

    return filter(keep, rows)


def _insert_rows(conn: Connection, todo: Iterable[dict[str, Any]], fixed: dict[str, Any],
                 chunk: int, ignore_existing: bool) -> int:
    todo = iter(todo)
    first = next(todo, None)
    if first is None:
        return 0
    todo = chain([first], todo)
    if conn.dialect.name == "sqlite" and len(first) > 1 and not any(
            _processor(conn, name) for name in first):
        return _enqueue_sqlite(conn, todo, list(first), fixed, chunk, ignore_existing)
    o = schema.outbox
    statement: Any = o.insert()
    if ignore_existing and conn.dialect.name == "postgresql":
        # Imported here: `incident start` on SQLite need not load the PostgreSQL dialect.
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        statement = postgresql_insert(o).on_conflict_do_nothing()
    elif ignore_existing:
        statement = sqlite_insert(o).on_conflict_do_nothing()
    return _in_chunks(({**row, **fixed} for row in todo), chunk, lambda batch: _inserted(
        conn.execute(statement, batch), len(batch), ignore_existing))


def _enqueue_sqlite(conn: Connection, rows: Iterable[dict[str, Any]], names: list[str],
                    fixed: dict[str, Any], chunk: int, ignore_existing: bool) -> int:
    constants = tuple(_bound(conn, name, value) for name, value in fixed.items())
    columns = [*names, *fixed]
    sql = (f"INSERT INTO {schema.outbox.name} ({', '.join(columns)}) "
           f"VALUES ({', '.join('?' * len(columns))})"
           + (" ON CONFLICT DO NOTHING" if ignore_existing else ""))
    values = itemgetter(*names)
    width = len(names)

    def parameters(row: dict[str, Any]) -> tuple[Any, ...]:
        if len(row) != width:
            raise ValueError(f"outbox rows of one enqueue differ: {sorted(row)} vs {names}")
        return values(row) + constants

    return _in_chunks(map(parameters, rows), chunk, lambda batch: _inserted(
        conn.exec_driver_sql(sql, batch), len(batch), ignore_existing))


def _in_chunks(items: Iterable[Any], chunk: int, insert: Callable[[list[Any]], int]) -> int:
    """Pass `items` to `insert` in lists of `chunk`; the total it reports inserted."""
    total = 0
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= chunk:
            total += insert(batch)
            batch = []
    if batch:
        total += insert(batch)
    return total


def _processor(conn: Connection, name: str) -> Callable[[Any], Any] | None:
    """How SQLAlchemy converts a value of outbox column `name` for this driver, if it does."""
    kind = schema.outbox.c[name].type
    return kind.dialect_impl(conn.dialect).bind_processor(conn.dialect)


def _bound(conn: Connection, name: str, value: Any) -> Any:
    process = _processor(conn, name)
    return process(value) if process is not None and value is not None else value


def _inserted(result: Any, rows: int, ignore_existing: bool) -> int:
    if not ignore_existing:
        return rows
    count = result.rowcount
    return int(count) if count is not None and count >= 0 else rows


# The columns an OutboxRow is built from, in its field order (attempts + 1: the claim counts
# as an attempt).
_CLAIM_COLUMNS = ("id, incident_id, notice_seq, channel, recipient_ref, recipient_name, address, "
                  "language, priority, attempts + 1, message_id, idempotency_key, "
                  "fallback_address, transport, region")


def _driver_sql(conn: Connection, text: str) -> str:
    """`text`, written with `?` placeholders, in the driver's own parameter style."""
    return text if conn.dialect.paramstyle == "qmark" else text.replace("?", "%s")


def _on_driver(conn: Connection, text: str, params: Any, *, many: bool = False) -> list[Any]:
    """Run `text` (`?` placeholders) on the DBAPI cursor of `conn`, inside its transaction;
    the rows it returns, as plain tuples.

    The statements a dispatcher runs for every batch (claim, mark sent) go to the driver
    directly: through SQLAlchemy, building their parameters (one set per row for
    `executemany`) and their result rows cost more than the database's own work. A driver
    error is raised as SQLAlchemy's (OperationalError, IntegrityError ...), as
    `conn.execute` would, so that the store reports it the same way.
    """
    sql = _driver_sql(conn, text)
    dbapi = conn.dialect.loaded_dbapi
    cursor = conn.connection.cursor()
    try:
        if many:
            cursor.executemany(sql, params)
            return []
        cursor.execute(sql, params)
        return list(cursor.fetchall()) if cursor.description is not None else []
    except dbapi.Error as exc:
        raise DBAPIError.instance(sql, params, exc, dbapi.Error,
                                  dialect=conn.dialect) from exc
    finally:
        cursor.close()


@lru_cache(maxsize=8)
def _time_processor(dialect: Any) -> Callable[[Any], Any] | None:
    return schema.outbox.c.next_attempt_at.type.dialect_impl(dialect).bind_processor(dialect)


def _driver_time(conn: Connection, value: datetime) -> Any:
    """A timestamp as SQLAlchemy's DateTime hands it to this driver (a string on SQLite)."""
    value = _db_time(conn, value)
    processor = _time_processor(conn.dialect)
    return processor(value) if processor else value


def claim(conn: Connection, *, worker: str, now: datetime, limit: int,
          incident_id: str | None = None, channels: Sequence[str] | None = None,
          stale_after: timedelta = timedelta(minutes=5), stale: bool = True,
          transports: Mapping[str, str | None] | None = None) -> list[OutboxRow]:
    """Claim up to `limit` due rows, urgent first; also take back stale claims of dead workers
    (unless `stale` is False: a dispatcher looks for those once a second, not every batch).

    With `transports` (channel -> the transport this worker sends it by), a row recorded for
    another transport is never claimed (rows from before m004, without one, are).

    The caller's transaction is a write transaction: IMMEDIATE on SQLite (one claimer at a
    time), and on PostgreSQL the rows are locked with SKIP LOCKED so workers never share one.

    Due rows and stale claims are found by queries, one per channel, that each seek
    (incident, state, channel) in the index ix_outbox_next and walk it in claim order, stopping
    after `limit` rows: a claim costs the same at the first row of a million-row notice as at
    the last, and as little for a channel with nothing due (one query with an OR of both states
    had to sort every row of the incident each time). What they find is merged in (priority,
    id) order and cut to `limit`.
    """
    scope: list[str] = []
    params: list[Any] = []
    if incident_id is not None:
        scope.append("incident_id = ?")
        params.append(incident_id)
    if transports is not None and not channels:
        channels = list(transports)
    scopes = [([*scope, "channel = ?"], [*params, channel]) for channel in channels] \
        if channels else [(scope, params)]
    if transports is not None and channels:
        for (where, args), channel in zip(scopes, channels, strict=True):
            if transports.get(channel) is not None:
                where.append("(transport = ? OR transport IS NULL)")
                args.append(transports[channel])
    lock = " FOR UPDATE SKIP LOCKED" if conn.dialect.name == "postgresql" else ""

    def select_rows(state: DeliveryState, condition: str, value: Any) -> list[Any]:
        rows: list[Any] = []
        for where, args in scopes:
            sql = (f"SELECT {_CLAIM_COLUMNS} FROM outbox WHERE "
                   + " AND ".join([*where, f"state = '{state.value}'", condition])
                   + f" ORDER BY priority, id LIMIT {int(limit)}{lock}")
            rows += _on_driver(conn, sql, (*args, value))
        return rows

    found = select_rows(DeliveryState.PENDING, "next_attempt_at <= ?", _driver_time(conn, now))
    if stale:
        found += select_rows(DeliveryState.SENDING, "claimed_at < ?",
                             _driver_time(conn, now - stale_after))
    if len(found) > limit or stale or len(scopes) > 1:
        found = sorted(found, key=lambda r: (r[8], r[0]))[:limit]  # (priority, id)
    if not found:
        return []
    rows = [OutboxRow(*r) for r in found]
    sql = (f"UPDATE outbox SET state = '{DeliveryState.SENDING.value}', claimed_by = ?, "
           "claimed_at = ?, attempts = attempts + 1 "
           f"WHERE id IN ({', '.join('?' * len(rows))})")
    _on_driver(conn, sql, (worker, _driver_time(conn, now), *(r.id for r in rows)))
    return rows


def release_claims(conn: Connection, workers: Iterable[str]) -> int:
    """Return to pending the rows these (dead) workers had claimed.

    Named workers only: a worker that claims rows meanwhile is never touched.
    """
    dead = list(workers)
    if not dead:
        return 0
    o = schema.outbox
    result = conn.execute(update(o).where(o.c.state == DeliveryState.SENDING.value,
                                          o.c.claimed_by.in_(dead))
                          .values(state=DeliveryState.PENDING.value, claimed_by=None))
    return result.rowcount or 0


def claimed_workers(conn: Connection, host: str) -> list[str]:
    """Workers of `host` that hold claims."""
    o = schema.outbox
    # Escape LIKE's wildcards: a host called a_b must not match axb's workers.
    pattern = host.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + ":%"
    return list(conn.execute(select(o.c.claimed_by).distinct().where(
        o.c.state == DeliveryState.SENDING.value,
        o.c.claimed_by.like(pattern, escape="\\"))).scalars())


def mark_sent(conn: Connection, results: Sequence[tuple[int, str | None]], *,
              now: datetime) -> None:
    """Mark rows sent with their provider references (one statement, many rows)."""
    if not results:
        return
    sql = (f"UPDATE outbox SET state = '{DeliveryState.SENT.value}', sent_at = ?, "
           "provider_ref = ?, last_error = NULL, error_code = NULL, claimed_by = NULL "
           "WHERE id = ?")
    stamp = _driver_time(conn, now)
    _on_driver(conn, sql, [(stamp, ref, row_id) for row_id, ref in results], many=True)


def release(conn: Connection, row_ids: Sequence[int]) -> None:
    """Give back claimed rows that were never tried (the run stopped first): pending again,
    due at once, the claim's attempt not counted, the last error kept."""
    if not row_ids:
        return
    o = schema.outbox
    conn.execute(update(o).where(o.c.id.in_(list(row_ids))).values(
        state=DeliveryState.PENDING.value, claimed_by=None, attempts=o.c.attempts - 1))


def mark_retry(conn: Connection, row_id: int, *, error: str, code: str | None,
               at: datetime, attempts: int | None = None) -> None:
    """Put a row back to pending after a temporary failure, due again at `at`.

    `attempts` resets the count when the row was claimed but never tried (interrupted).
    """
    o = schema.outbox
    values: dict[str, Any] = {"state": DeliveryState.PENDING.value,
                              "last_error": scrub_error(error),
                              "error_code": code, "next_attempt_at": _db_time(conn, at),
                              "claimed_by": None}
    if attempts is not None:
        values["attempts"] = attempts
    conn.execute(update(o).where(o.c.id == row_id).values(**values))


def mark_failed(conn: Connection, row_id: int, *, error: str, code: str | None) -> None:
    """Record a permanent failure; the row is never retried."""
    o = schema.outbox
    conn.execute(update(o).where(o.c.id == row_id).values(
        state=DeliveryState.FAILED.value, last_error=scrub_error(error), error_code=code,
        claimed_by=None))


def add_fallback(conn: Connection, row: OutboxRow, *, message_id: str, now: datetime,
                 transport: str | None) -> bool:
    """Queue the same notice on the customer's other channel after a permanent failure.

    Returns False when there is no other contact or the row already exists.
    """
    channel = FALLBACK_CHANNEL.get(row.channel)
    if not row.fallback_address or channel is None:
        return False
    key = idempotency_key(row.incident_id, row.notice_seq, row.recipient_ref, channel)
    o = schema.outbox
    exists = conn.execute(select(o.c.id).where(o.c.idempotency_key == key)).first()
    if exists:
        return False
    enqueue(conn, [{"incident_id": row.incident_id, "notice_seq": row.notice_seq,
                    "channel": channel, "recipient_ref": row.recipient_ref,
                    "recipient_name": row.recipient_name, "address": row.fallback_address,
                    "language": row.language, "priority": row.priority,
                    "message_id": message_id, "idempotency_key": key,
                    "transport": transport, "region": row.region}], now=now)
    return True


def reroute(conn: Connection, incident_id: str, channel: str, transport: str) -> dict[str, int]:
    """Put the unsettled rows of `channel` recorded for another transport on `transport`;
    how many moved from each transport."""
    o = schema.outbox
    where = [o.c.incident_id == incident_id, o.c.channel == channel,
             o.c.state == DeliveryState.PENDING.value, o.c.transport.is_not(None),
             o.c.transport != transport]
    moved = {str(t): int(n) for t, n in conn.execute(
        select(o.c.transport, func.count()).where(*where).group_by(o.c.transport)).all()}
    if moved:
        conn.execute(update(o).where(*where).values(transport=transport))
    return moved


def rows_to_copy(conn: Connection, incident_id: str, notice_seq: int) -> list[Any]:
    """Every row of notice `notice_seq` (fallback rows included), in order, minus addresses
    that failed permanently on any notice (invalid, unsubscribed): a later notice's audience."""
    o = schema.outbox
    failed = select(o.c.recipient_ref, o.c.channel).where(
        o.c.incident_id == incident_id, o.c.state == DeliveryState.FAILED.value).distinct()
    dead = {(r.recipient_ref, r.channel) for r in conn.execute(failed)}
    query = (select(o.c.channel, o.c.recipient_ref, o.c.recipient_name, o.c.address,
                    o.c.language, o.c.priority, o.c.fallback_address, o.c.region)
             .where(o.c.incident_id == incident_id, o.c.notice_seq == notice_seq)
             .order_by(o.c.id))
    return [r for r in conn.execute(query).all() if (r.recipient_ref, r.channel) not in dead]
