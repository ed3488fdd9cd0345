"""A query against someone else's database (a SQL audience), read-only and streamed.

The connection is made as read-only as the database allows: SQLite is opened with a `mode=ro`
URI and `PRAGMA query_only`; PostgreSQL, MySQL/MariaDB and Oracle run the query in a
`SET TRANSACTION READ ONLY` transaction (PostgreSQL also with default_transaction_read_only).
The rows come through a server-side cursor (`stream_results`, `yield_per`), so memory does not
grow with the result. The URL's password never appears in a message.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Generator
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from incident.errors import AudienceInvalid, ConfigInvalid, StorageError

BATCH = 5000  # rows fetched from the server-side cursor at a time
_READ_ONLY_TRANSACTION = ("postgresql", "mysql", "mariadb", "oracle")


def query_rows(url: str, query: str, *, label: str) -> Generator[tuple[Any, ...]]:
    """The query's column names, then its rows, streamed in a read-only transaction.

    `label` names the audience in messages. A bad URL or a missing driver is ConfigInvalid,
    a connection that fails StorageError, a query the database refuses AudienceInvalid.
    """
    parsed = _parse(url, label)
    shown = parsed.render_as_string(hide_password=True)
    secret = parsed.password if isinstance(parsed.password, str) else None
    engine = _engine(parsed, label)
    try:
        try:
            conn = engine.connect()
        except DBAPIError as exc:
            raise StorageError(f"audience {label}: cannot connect to {shown}: "
                               f"{_reason(exc, secret)}") from None
        with conn:
            try:
                if parsed.get_backend_name() in _READ_ONLY_TRANSACTION:
                    conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                result = conn.execution_options(stream_results=True, yield_per=BATCH).execute(
                    text(query))
                yield tuple(result.keys())
                # The size given here: without it, partitions() fetched the whole result at
                # once (SQLAlchemy 2.1, psycopg) despite yield_per.
                for partition in result.partitions(BATCH):
                    yield from map(tuple, partition)
            except DBAPIError as exc:
                raise AudienceInvalid(f"audience {label}: the query failed on {shown}: "
                                      f"{_reason(exc, secret)}",
                                      hint="the query runs read-only: a single SELECT") from None
    finally:  # the connection was closed (its transaction rolled back: it only read)
        engine.dispose()


def _parse(url: str, label: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        # The text itself is not shown: it may hold a password.
        raise ConfigInvalid(f"audience {label}: not a database URL",
                            hint="e.g. postgresql+psycopg://reader@crm-db/crm") from None
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _engine(parsed: URL, label: str) -> Engine:
    try:
        if parsed.get_backend_name() == "sqlite":
            return _sqlite_engine(parsed.database or "")
        if parsed.get_backend_name() == "postgresql":
            return create_engine(parsed, connect_args={
                "options": "-c default_transaction_read_only=on"})
        return create_engine(parsed)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise ConfigInvalid(f"audience {label}: database driver missing for "
                            f"{parsed.drivername}: {exc}") from None
    except SQLAlchemyError as exc:
        raise ConfigInvalid(f"audience {label}: {exc}") from None


def _sqlite_engine(path: str) -> Engine:
    if not path or path == ":memory:":
        raise ConfigInvalid("a SQL audience on SQLite needs a database file",
                            hint="sqlite:////path/to/crm.db")
    target = f"file:{quote(path)}?mode=ro"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(target, uri=True)

    engine = create_engine("sqlite://", creator=connect)

    @event.listens_for(engine, "connect")
    def _query_only(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA query_only = ON")

    return engine


def _reason(exc: DBAPIError, secret: str | None) -> str:
    """The database's own message, first line, without the statement or the password."""
    lines = str(exc.orig).strip().splitlines() or [type(exc.orig).__name__]
    reason = lines[0]
    return reason.replace(secret, "***") if secret else reason
