"""`incident start` from a SQL audience killed while recording its first notice: completion runs
the recorded query again and checks the rows' fingerprint — changed data is refused, and the
same data completes the notice exactly once per customer."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, text
from test_sql_audience import QUERY, fill
from test_start_completion import N, _complete, _scalar, _start_and_kill

from cli_fixtures import Workspace


def test_changed_rows_are_refused_and_the_same_rows_complete_the_notice(
        sqlite_ws: Workspace, db_url: str) -> None:
    ws, crm = sqlite_ws, db_url  # the store on SQLite; the CRM on SQLite and PostgreSQL
    fill(crm, [(f"C{i:05d}", f"Customer {i}", f"customer{i:05d}@example.com", "",
                "zh-CN" if i % 2 else "en", "urgent" if i % 7 == 0 else "normal")
               for i in range(N)])

    def edit(cfg: dict[str, Any]) -> None:
        cfg["audiences"]["customers"] = {"url_env": "CRM_DATABASE_URL", "query": QUERY}
    ws.configure(edit)
    env = {"CRM_DATABASE_URL": crm}
    incident_id = _start_and_kill(ws, env, csv=False)
    before = _scalar(ws.db, "SELECT count(*) FROM outbox")

    rename = "UPDATE customers SET name = :name WHERE id = 'C00042'"
    engine = create_engine(crm)
    with engine.begin() as conn:
        conn.execute(text(rename), {"name": "Someone Else"})
    result = ws.run("update", incident_id, "-m", "Failover in progress", "--queue-only",
                    code=2, env=env)
    assert "audience customers (SQL)" in result.stderr
    assert "the query's rows changed since the notice was declared" in result.stderr
    assert _scalar(ws.db, "SELECT count(*) FROM outbox") == before  # nothing recorded

    with engine.begin() as conn:  # the data as it was: the same list again
        conn.execute(text(rename), {"name": "Customer 42"})
    engine.dispose()
    result = ws.run("deliver", incident_id, env=env)
    assert "messages are recorded now (from audience customers (SQL))" in result.stderr
    _complete(ws, incident_id)
