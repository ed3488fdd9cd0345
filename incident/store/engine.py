"""Engines: SQLite (WAL, busy timeout, IMMEDIATE write transactions) or PostgreSQL by URL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from incident.errors import ConfigInvalid

SQLITE_BUSY_MS = 30_000


def make_engine(url: str) -> Engine:
    """Create the engine for `url`; SQLite gets the pragmas a multi-process store needs."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigInvalid(f"not a database URL: {url!r}",
                            hint="use sqlite:///path/incident.db or "
                                 "postgresql+psycopg://user@host/db") from None
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        if parsed.get_backend_name() == "sqlite":
            return _sqlite_engine(parsed)
        if parsed.get_backend_name() == "postgresql":
            return create_engine(parsed, pool_pre_ping=True, future=True)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise ConfigInvalid(f"database driver missing for {parsed.drivername}: {exc}",
                            hint="pip install 'incident[postgres]'") from None
    raise ConfigInvalid(f"unsupported database {parsed.get_backend_name()!r}",
                        hint="SQLite and PostgreSQL are supported")


def _sqlite_engine(url: Any) -> Engine:
    # A small pool: the dispatcher runs many short transactions, and reconnecting (with the
    # pragmas below) for each one cost more than the work itself.
    engine = create_engine(url, pool_size=2, max_overflow=2,
                           connect_args={"timeout": SQLITE_BUSY_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite so that writes can BEGIN IMMEDIATE:
        # a writer then waits (busy timeout) instead of failing on lock upgrade.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = "IMMEDIATE" if conn.info.pop("write", False) else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine
