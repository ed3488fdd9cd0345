"""Frozen migrations: a database built from them, or from an earlier release and then migrated,
has exactly the schema the code queries (incident/store/schema.py), on both backends."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, MetaData, create_engine, inspect, select

from incident.store import Store, schema
from incident.store import outbox as ob
from incident.store.migrations import MIGRATIONS, migrate

RELEASES = Path(__file__).parent / "data" / "releases"
NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


def _release_schema(commit: str) -> ModuleType:
    """The schema module a release shipped (tests/data/releases/schema_<commit>.py)."""
    spec = importlib.util.spec_from_file_location(f"schema_{commit}",
                                                  RELEASES / f"schema_{commit}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _old_m002(conn: Connection, _old: ModuleType) -> None:
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_outbox_due "
                         "ON outbox (incident_id, state, priority, id)")


def _old_m003(conn: Connection, old: ModuleType) -> None:
    conn.exec_driver_sql("DROP INDEX IF EXISTS ix_outbox_due")
    old.ix_outbox_next.create(conn, checkfirst=True)


# What each release's migrate() did to an empty database, after its m001 (create the tables
# from that release's schema module): the later migrations it shipped, as they were written.
RELEASE_STEPS: dict[str, list[tuple[str, Callable[[Connection, ModuleType], None]]]] = {
    "ddb9f53": [],
    "947c8d0": [("m002_outbox_due_index", _old_m002), ("m003_outbox_next_index", _old_m003)],
}


def _create_as_release(engine: Engine, commit: str) -> ModuleType:
    """Make the empty database at `engine` what that release's first run made of it."""
    old = _release_schema(commit)
    with engine.begin() as conn:
        old.migrations.create(conn)
        for table in (old.incidents, old.events, old.outbox):
            table.create(conn)
        names = ["m001_initial"]
        for name, step in RELEASE_STEPS[commit]:
            step(conn, old)
            names.append(name)
        conn.execute(old.migrations.insert(), [{"name": name, "applied_at": NOW}
                                               for name in names])
    return old


def _shape(conn: Connection, tables: list[str]) -> dict[str, Any]:
    """Tables as the database reports them: columns (type, nullability), keys, indexes."""
    found = inspect(conn)
    dialect = conn.dialect
    shape: dict[str, Any] = {}
    for name in tables:
        shape[name] = {
            "columns": {c["name"]: (c["type"].compile(dialect=dialect), c["nullable"])
                        for c in found.get_columns(name)},
            "primary key": found.get_pk_constraint(name)["constrained_columns"],
            "foreign keys": sorted((tuple(fk["constrained_columns"]), fk["referred_table"],
                                    tuple(fk["referred_columns"]))
                                   for fk in found.get_foreign_keys(name)),
            "unique": {u["name"]: tuple(u["column_names"])
                       for u in found.get_unique_constraints(name)},
            # PostgreSQL lists the index behind each unique constraint too; it is the constraint.
            "indexes": {i["name"]: (tuple(i["column_names"]), bool(i["unique"]))
                        for i in found.get_indexes(name) if "duplicates_constraint" not in i},
        }
    return shape


def _expected(metadata: MetaData, conn: Connection) -> dict[str, Any]:
    """The same description, read from the schema module's tables."""
    from sqlalchemy import ForeignKeyConstraint, UniqueConstraint

    dialect = conn.dialect
    shape: dict[str, Any] = {}
    for table in metadata.sorted_tables:
        constraints = table.constraints
        shape[table.name] = {
            "columns": {c.name: (c.type.compile(dialect=dialect), bool(c.nullable))
                        for c in table.columns},
            "primary key": [c.name for c in table.primary_key.columns],
            "foreign keys": sorted((tuple(fk.column_keys), fk.referred_table.name,
                                    tuple(e.column.name for e in fk.elements))
                                   for fk in constraints if isinstance(fk, ForeignKeyConstraint)),
            "unique": {u.name: tuple(c.name for c in u.columns)
                       for u in constraints if isinstance(u, UniqueConstraint)},
            "indexes": {i.name: (tuple(c.name for c in i.columns), bool(i.unique))
                        for i in table.indexes},
        }
    return shape


def _assert_matches_schema(engine: Engine) -> None:
    with engine.connect() as conn:
        tables = sorted(inspect(conn).get_table_names())
        assert tables == sorted(schema.metadata.tables)
        assert _shape(conn, tables) == _expected(schema.metadata, conn)


def test_a_database_built_from_the_migrations_has_the_schema_the_code_queries(
        db_url: str) -> None:
    Store.open(db_url).close()
    engine = create_engine(db_url)
    try:
        _assert_matches_schema(engine)
        with engine.connect() as conn:
            done = set(conn.execute(select(schema.migrations.c.name)).scalars())
        assert done == {name for name, _step in MIGRATIONS}
    finally:
        engine.dispose()


def test_m001_creates_the_tables_of_the_first_release_not_of_todays_schema(
        db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            name, m001 = MIGRATIONS[0]
            assert name == "m001_initial"
            m001(conn)
            first = _release_schema("ddb9f53").metadata
            tables = [t for t in first.tables if t != "schema_migrations"]
            assert sorted(inspect(conn).get_table_names()) == sorted(tables)
            expected = _expected(first, conn)
            assert _shape(conn, tables) == {t: expected[t] for t in tables}
    finally:
        engine.dispose()


def _read(conn: Connection, metadata: MetaData) -> dict[str, list[dict[str, Any]]]:
    """Every row of the incidents, events and outbox tables, as the code reads them."""
    tables = [metadata.tables[name] for name in ("incidents", "events", "outbox")]
    return {t.name: [dict(r._mapping) for r in conn.execute(select(t).order_by(t.c.id))]
            for t in tables}


def _rows(commit: str) -> dict[str, list[dict[str, Any]]]:
    """An incident with two events and two outbox rows, in the columns that release had."""
    outbox = {"incident_id": "INC-20261124-aaaaaa", "notice_seq": 1, "channel": "email",
              "recipient_name": "", "address": "a@example.com", "language": "en",
              "priority": 0, "state": "sent", "attempts": 1, "last_error": None,
              "error_code": None, "created_at": NOW, "next_attempt_at": NOW,
              "claimed_by": None, "claimed_at": None, "sent_at": NOW, "provider_ref": "p1"}
    if commit != "ddb9f53":
        outbox["fallback_address"] = "+85291234567"
    return {
        "incidents": [{"id": "INC-20261124-aaaaaa", "created_at": NOW, "playbook_id": "p",
                       "title": "Core down", "drill": False, "last_seq": 2,
                       "head_hash": "b" * 64}],
        "events": [{"incident_id": "INC-20261124-aaaaaa", "seq": seq,
                    "type": "declared" if seq == 1 else "updated", "at": NOW, "actor": "sup",
                    "data": "{}", "prev_hash": str(seq - 1) * 64, "hash": str(seq) * 64}
                   for seq in (1, 2)],
        "outbox": [{**outbox, "recipient_ref": f"c{k}", "message_id": f"<{k}@x>",
                    "idempotency_key": f"{k:064d}"} for k in (1, 2)],
    }


def _assert_the_code_works_on(store: Store) -> None:
    """The store reads the release's incident and records and claims a row in today's columns."""
    incident_id = "INC-20261124-aaaaaa"
    assert store.incident(incident_id).title == "Core down"
    row = {"incident_id": incident_id, "notice_seq": 3, "channel": "sms", "recipient_ref": "c3",
           "recipient_name": "", "address": "+85291234567", "language": "en", "priority": 0,
           "message_id": "<3@x>", "fallback_address": "c@example.com", "transport": "twilio",
           "idempotency_key": ob.idempotency_key(incident_id, 3, "c3", "sms")}
    with store.write() as conn:
        assert ob.enqueue(conn, [row], now=NOW) == 1
        claimed = ob.claim(conn, worker="w:1", now=NOW, limit=5, transports={"sms": "twilio"})
    assert [(r.recipient_ref, r.fallback_address, r.transport) for r in claimed] == [
        ("c3", "c@example.com", "twilio")]


@pytest.mark.parametrize("commit", sorted(RELEASE_STEPS))
def test_a_database_of_an_earlier_release_migrates_to_the_same_schema_with_its_rows(
        db_url: str, commit: str) -> None:
    engine = create_engine(db_url)
    try:
        old = _create_as_release(engine, commit)
        with engine.begin() as conn:
            for table, values in _rows(commit).items():
                conn.execute(old.metadata.tables[table].insert(), values)
            before = _read(conn, old.metadata)
        store = Store.open(db_url)
        try:
            _assert_matches_schema(engine)
            with engine.connect() as conn:
                after = _read(conn, schema.metadata)
            _assert_the_code_works_on(store)
        finally:
            store.close()
        for table, rows in before.items():
            # Every value the release recorded reads back the same; added columns are empty.
            assert [{k: r[k] for k in rows[0]} for r in after[table]] == rows
            added = set(after[table][0]) - set(rows[0])
            assert all(r[k] is None for r in after[table] for k in added), after[table]
    finally:
        engine.dispose()


def test_migrating_an_up_to_date_database_changes_nothing(db_url: str) -> None:
    Store.open(db_url).close()
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            before = _shape(conn, sorted(inspect(conn).get_table_names()))
            recorded = list(conn.execute(select(schema.migrations)))
        with engine.begin() as conn:
            assert migrate(conn, now=NOW) == []
        Store.open(db_url).close()
        with engine.connect() as conn:
            assert _shape(conn, sorted(inspect(conn).get_table_names())) == before
            assert list(conn.execute(select(schema.migrations))) == recorded
    finally:
        engine.dispose()
