"""SQL audiences (`audiences: {NAME: {url_env, query}}`): customers read by a query from a real
SQLite file and the real PostgreSQL the tests start — validated like CSV rows, read-only, the
URL only from the environment, and a fingerprint that crash completion checks."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, text

from cli_fixtures import Workspace
from incident.audience import refuse_statement
from incident.errors import AudienceInvalid
from incident.store.readonly import query_rows

QUERY = ("SELECT id, name, email, phone, language, segment, region, branch, products, priority "
         "FROM customers WHERE active ORDER BY id")
CUSTOMERS = [
    ("C001", "Li Wei", "li.wei@example.com", "+8613800138000", "zh-CN", "urgent"),
    ("C002", "Ann Lee", "ann@example.com", "", "en", "normal"),
    ("C003", "Chan Tai Man", "", "+85291234567", "zh-HK", "normal"),
]


def fill(url: str, rows: list[tuple[str, ...]]) -> None:
    """(Re)create the customers table of a CRM database with these rows (all active)."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS customers"))
            conn.execute(text(
                "CREATE TABLE customers (id TEXT PRIMARY KEY, name TEXT, email TEXT, "
                "phone TEXT, language TEXT, segment TEXT, region TEXT, branch TEXT, "
                "products TEXT, priority TEXT, active BOOLEAN NOT NULL)"))
            if rows:
                conn.execute(text(
                    "INSERT INTO customers VALUES (:id, :name, :email, :phone, :language, "
                    "'retail', 'guangdong', 'gd-sz-futian', 'core', :priority, TRUE)"),
                    [dict(zip(("id", "name", "email", "phone", "language", "priority"), r,
                              strict=True)) for r in rows])
    finally:
        engine.dispose()


def count(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM customers")).scalar() or 0)
    finally:
        engine.dispose()


@pytest.fixture
def crm(db_url: str) -> str:
    """The URL of a CRM database holding CUSTOMERS: a SQLite file, or a fresh PostgreSQL
    database on the session server (an empty database of db_url, not the workspace's)."""
    fill(db_url, CUSTOMERS)
    return db_url


def use_query(ws: Workspace, query: str = QUERY, name: str = "customers") -> None:
    """Make the default audience a query on $CRM_DATABASE_URL."""
    def edit(cfg: dict[str, Any]) -> None:
        cfg["audiences"][name] = {"url_env": "CRM_DATABASE_URL", "query": query}
    ws.configure(edit)


def start(ws: Workspace, crm: str | None, *extra: str, code: int = 0) -> Any:
    env = {"CRM_DATABASE_URL": crm} if crm else {"CRM_DATABASE_URL": ""}
    return ws.run("--json", "start", "core-banking-outage", "--title", "Core banking down",
                  "--eta", "2h", *extra, code=code, env=env)


def test_start_reads_the_query_and_status_counts_its_customers(sqlite_ws: Workspace,
                                                               crm: str) -> None:
    import json

    use_query(sqlite_ws)
    result = start(sqlite_ws, crm)
    started = json.loads(result.stdout)
    assert started["audience"]["recipients"] == 3
    assert started["audience"]["file"] == "audience customers (SQL)"
    status = sqlite_ws.json("status", started["id"])
    assert status["deliveries"]["sent"] == 4  # two emails and two SMS
    assert status["deliveries"]["failed"] == 0
    # What the rows derive from is on record: the query and the variable, never the URL.
    engine = create_engine(sqlite_ws.db)
    with engine.connect() as conn:
        recorded = conn.execute(text("SELECT data FROM events WHERE seq = 1")).scalar_one()
    engine.dispose()
    assert "CRM_DATABASE_URL" in recorded and "WHERE active" in recorded
    assert crm not in recorded and crm not in result.stdout + result.stderr


def test_a_bad_row_names_its_row_number_id_and_field(sqlite_ws: Workspace, crm: str) -> None:
    fill(crm, [*CUSTOMERS, ("C004", "Bad Mail", "not-an-address", "", "en", "normal"),
               ("C005", "Odd", "odd@example.com", "", "en", "someday")])
    use_query(sqlite_ws)
    result = start(sqlite_ws, crm, code=0)
    problems = result.stdout + result.stderr
    assert "row 4 of the query, id C004" in problems
    assert "email" in problems and "priority" in problems
    assert "row 5 of the query, id C005" in problems


@pytest.mark.parametrize("query", [
    "DELETE FROM customers",
    "SELECT * FROM customers; DROP TABLE customers",
    "WITH gone AS (DELETE FROM customers RETURNING *) SELECT * FROM gone",
    "SELECT * INTO copy FROM customers",
    "UPDATE customers SET active = FALSE",
])
def test_a_statement_that_is_not_a_select_is_refused_before_it_runs(
        sqlite_ws: Workspace, crm: str, query: str) -> None:
    use_query(sqlite_ws, query)
    result = start(sqlite_ws, crm, code=2)
    assert "refused before it runs" in result.stderr
    assert count(crm) == len(CUSTOMERS)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("query, refused", [
    (QUERY, False),
    ("  -- customers\n with a as (select 1) select * from a;", False),
    ("SELECT 'delete; drop' AS id, \"update\" FROM t", False),  # in strings and quoted names
    ("SELECT $$ ; insert $$ FROM t", False),
    ("select * from t for update", True),
    ("EXPLAIN ANALYZE DELETE FROM t", True),
    ("", True),
])
def test_the_statement_check_looks_past_strings_and_comments(query: str,
                                                             refused: bool) -> None:
    assert (refuse_statement(query) is not None) == refused


def test_a_write_that_gets_past_the_check_fails_read_only(crm: str) -> None:
    """The connection itself is read-only: a write the statement check does not see (a
    sequence's nextval on PostgreSQL; any write, sent straight, on SQLite) fails."""
    if crm.startswith("sqlite"):
        statement = "DELETE FROM customers RETURNING id"
    else:
        engine = create_engine(crm)
        with engine.begin() as conn:
            conn.execute(text("CREATE SEQUENCE numbers"))
        engine.dispose()
        statement = "SELECT id, nextval('numbers') FROM customers"
    with pytest.raises(AudienceInvalid, match=r"read-only|readonly"):
        list(query_rows(crm, statement, label="customers"))
    assert count(crm) == len(CUSTOMERS)


def test_a_missing_variable_is_named_and_nothing_is_recorded(sqlite_ws: Workspace,
                                                             crm: str) -> None:
    use_query(sqlite_ws)
    result = start(sqlite_ws, None, code=2)
    assert "CRM_DATABASE_URL is not set" in result.stderr
    assert sqlite_ws.json("list", "--all") == []


def test_the_password_never_appears_in_an_error(sqlite_ws: Workspace) -> None:
    use_query(sqlite_ws)
    url = "postgresql+psycopg://reader:Sup3rSecretPw@127.0.0.1:1/crm"
    result = start(sqlite_ws, url, code=1)
    assert "Sup3rSecretPw" not in result.stdout + result.stderr
    assert "reader:***@127.0.0.1:1/crm" in result.stderr


def test_audience_names_a_configured_query_and_still_takes_a_file(sqlite_ws: Workspace,
                                                                 crm: str) -> None:
    import json

    use_query(sqlite_ws, name="crm")
    by_name = json.loads(start(sqlite_ws, crm, "--audience", "crm").stdout)
    assert by_name["audience"]["recipients"] == 3
    csv = sqlite_ws.write_customers(["X1,Ann,ann@example.com,,en,retail,gd,b,,"],
                                    name="one.csv")
    by_file = json.loads(start(sqlite_ws, crm, "--audience", str(csv)).stdout)
    assert by_file["audience"]["recipients"] == 1


def test_rows_are_streamed_not_loaded(crm: str) -> None:
    """A server-side cursor: reading 200,000 rows of ~200 bytes (~40 MB as Python objects)
    holds a few batches at a time, not the result."""
    import tracemalloc

    n = 200_000
    series = ("SELECT g FROM generate_series(1, :n) AS g" if crm.startswith("postgresql")
              else "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < :n) "
                   "SELECT g FROM s")
    engine = create_engine(crm)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE big (id TEXT, name TEXT)"))
        conn.execute(text(f"INSERT INTO big SELECT 'C' || g, :pad || g FROM ({series}) AS t"),
                     {"n": n, "pad": "x" * 200})
    engine.dispose()
    rows = query_rows(crm, "SELECT id, name FROM big", label="big")
    assert next(rows) == ("id", "name")
    tracemalloc.start()
    try:
        read = sum(1 for _ in rows)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert read == n
    assert peak < 15 * 2**20, f"{peak / 2**20:.0f} MB held while reading {n:,} rows"
