"""`incident start` killed while it is still recording its first notice (the first recipients
are recorded with the event, the rest while sending): the notice must end up complete — every
selected customer exactly once — through `incident deliver` or the next `update`, and a changed
audience file must be refused rather than completed from the wrong list."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

import incident
from cli_fixtures import Workspace
from incident.audience import Selection, scan_audience

PACKAGE_PARENT = str(Path(incident.__file__).resolve().parent.parent)
N = 20_000


def customers(n: int) -> list[str]:
    """`n` CSV rows with an email only, every 7th customer urgent."""
    return [f"C{i:05d},Customer {i},customer{i:05d}@example.com,,{'zh-CN' if i % 2 else 'en'},"
            f"retail,guangdong,gd-sz-futian,,{'urgent' if i % 7 == 0 else 'normal'}"
            for i in range(n)]


def customers_only(ws: Workspace) -> None:
    """No parties: only customer rows in the outbox."""
    def edit(cfg: dict) -> None:
        cfg.pop("parties", None)
        cfg.pop("alerts", None)
    ws.configure(edit)


def _scalar(db_url: str, sql: str, **params: object) -> int:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(sql), params).scalar() or 0)
    finally:
        engine.dispose()


def _start_and_kill(ws: Workspace, env: dict[str, str] | None = None,
                    csv: bool = True, also: Callable[[], bool] = lambda: True) -> str:
    """Run `incident start` as a process (with `env` added; the customers CSV written unless
    not `csv`); SIGKILL it once its notice is recorded but before all of its rows are (and
    while `also()` holds); return the incident id."""
    customers_only(ws)
    if csv:
        ws.write_customers(customers(N))
    env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(
        p for p in (PACKAGE_PARENT, os.environ.get("PYTHONPATH")) if p)}
    cmd = [sys.executable, "-m", "incident", "--config", str(ws.config), "--db", ws.db,
           "start", "core-banking-outage", "--title", "Core banking down", "--eta", "2h"]
    proc = subprocess.Popen(cmd, env=env, cwd=ws.root, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    rows = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                rows = _scalar(ws.db, "SELECT count(*) FROM outbox")
            except DBAPIError:  # the database is not created yet
                rows = 0
            if 0 < rows < N and also():
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "start finished before it could be killed"
    recorded = _scalar(ws.db, "SELECT count(*) FROM outbox")
    assert 0 < recorded < N, f"killed with {recorded} of {N} rows recorded"
    assert also(), "killed too late"
    incident_ids = ws.json("list")
    assert len(incident_ids) == 1
    return incident_ids[0]["id"]


def _complete(ws: Workspace, incident_id: str, notices: int = 1) -> None:
    rows = _scalar(ws.db, "SELECT count(*) FROM outbox WHERE incident_id = :i AND "
                   "notice_seq = 1", i=incident_id)
    distinct = _scalar(ws.db, "SELECT count(DISTINCT recipient_ref) FROM outbox WHERE "
                       "incident_id = :i AND notice_seq = 1", i=incident_id)
    assert rows == distinct == N  # every selected customer, exactly once
    status = ws.json("status", incident_id)
    assert status["deliveries"]["pending"] == 0 and status["deliveries"]["failed"] == 0
    assert status["deliveries"]["sent"] == notices * N
    assert ws.json("verify", incident_id)["broken"] == {}


def test_deliver_completes_a_notice_whose_start_was_killed(ws: Workspace) -> None:
    incident_id = _start_and_kill(ws)
    result = ws.run("deliver", incident_id)
    assert "complet" in (result.stdout + result.stderr).lower()
    _complete(ws, incident_id)
    # Every customer's file was written once (the file channel names files by the row's key).
    assert len(ws.outbox_files(incident_id, "eml")) == N


def test_update_completes_the_first_notice_before_copying_it(ws: Workspace) -> None:
    incident_id = _start_and_kill(ws)
    ws.run("update", incident_id, "-m", "Failover in progress", "--queue-only")
    rows = _scalar(ws.db, "SELECT count(*) FROM outbox WHERE incident_id = :i AND "
                   "notice_seq > 1 AND recipient_ref NOT LIKE 'party:%'", i=incident_id)
    assert rows == N  # the update went to the whole audience, not to the part recorded
    ws.run("deliver", incident_id)
    _complete(ws, incident_id, notices=2)


def test_a_changed_audience_file_is_refused_not_used(ws: Workspace) -> None:
    incident_id = _start_and_kill(ws)
    before = _scalar(ws.db, "SELECT count(*) FROM outbox")
    ws.write_customers(customers(N)[:100])  # someone replaced the list after the crash
    result = ws.run("update", incident_id, "-m", "Failover in progress", code=2)
    assert "customers.csv" in result.stderr
    assert _scalar(ws.db, "SELECT count(*) FROM outbox") == before  # nothing recorded
    assert ws.json("verify", incident_id)["broken"] == {}


def mixed_customers(n: int) -> list[str]:
    """`n` CSV rows with a bit of everything the counts depend on: a mobile on every third,
    a bad phone kept without it on every 13th, a row with no usable contact (skipped) on every
    11th, two languages, every 7th customer urgent."""
    rows = []
    for i in range(n):
        email = f"customer{i:05d}@example.com" if i % 11 else "not-an-address"
        phone = "12345" if i % 13 == 0 else f"+86138{i:08d}" if i % 3 == 0 else ""
        rows.append(f"C{i:05d},Customer {i},{email},{phone},{'zh-CN' if i % 2 else 'en'},"
                    f"retail,guangdong,gd-sz-futian,,{'urgent' if i % 7 == 0 else 'normal'}")
    return rows


def _events(db_url: str, incident_id: str, kind: str) -> list[dict]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return [json.loads(d) for (d,) in conn.execute(text(
                "SELECT data FROM events WHERE incident_id = :i AND type = :t ORDER BY seq"),
                {"i": incident_id, "t": kind})]
    finally:
        engine.dispose()


def _rows(db_url: str, incident_id: str) -> list[tuple]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return sorted(tuple(r) for r in conn.execute(text(
                "SELECT channel, recipient_ref, address, language, priority, fallback_address "
                "FROM outbox WHERE incident_id = :i AND notice_seq = 1"), {"i": incident_id}))
    finally:
        engine.dispose()


def test_a_start_killed_before_its_audience_is_read_completes_to_the_exact_counts(
        ws: Workspace) -> None:
    """The notice is recorded from the first rows, the rest read while sending: killed before
    the file is read to the end (counts still pending), completion derives the same rows and
    the same counts as an uninterrupted start, and as reading the whole file first."""
    customers_only(ws)
    path = ws.write_customers(mixed_customers(N))

    def before_the_end() -> bool:
        return _scalar(ws.db, "SELECT count(*) FROM events WHERE type = 'audience_read'") == 0

    incident_id = _start_and_kill(ws, csv=False, also=before_the_end)
    declared = _events(ws.db, incident_id, "declared")[0]
    assert declared["audience"]["counts"] == "pending"  # recorded before the end of the file
    assert _events(ws.db, incident_id, "audience_read") == []
    ws.run("deliver", incident_id)
    [counts] = _events(ws.db, incident_id, "audience_read")
    assert counts["sha256"] == declared["audience"]["sha256"]

    uninterrupted = ws.json("start", "core-banking-outage", "--title", "Again")["id"]
    assert _rows(ws.db, incident_id) == _rows(ws.db, uninterrupted)
    assert _events(ws.db, uninterrupted, "audience_read") == [counts]
    # The same counts as reading the whole file before recording (scan_audience).
    whole = scan_audience(path, Selection(), default_language="zh-CN", default_region="CN")
    assert whole.spool is not None
    whole.spool.close()
    assert (counts["rows"], counts["skipped"], counts["partial"], counts["selected"]) == (
        N, whole.bad_rows, whole.partial_rows, whole.selected)
    assert counts["by_channel"] == whole.messages(["email", "sms"])
    assert counts["messages"] == len(_rows(ws.db, incident_id))
    assert whole.bad_rows > 0 and whole.partial_rows > 0  # the counts are not trivial
    status = ws.json("status", incident_id)
    assert status["deliveries"]["pending"] == 0
    assert sum(status["deliveries"].values()) == counts["messages"]
    assert ws.json("verify", incident_id)["broken"] == {}


def test_a_start_killed_after_its_urgent_customers_completes_to_the_same_rows(
        ws: Workspace) -> None:
    """Urgent customers at the end of the file are recorded with the notice, first (killed
    before the rest are, they are on record); completion derives the same rows as an
    uninterrupted start, each customer once."""
    customers_only(ws)
    rows = [row.rpartition(",")[0] + ("," + ("urgent" if i >= N - 100 else "normal"))
            for i, row in enumerate(mixed_customers(N))]
    ws.write_customers(rows)
    incident_id = _start_and_kill(ws, csv=False)
    urgent = {f"C{i:05d}" for i in range(N - 100, N) if i % 11}  # every 11th: skipped
    recorded = {ref for _, ref, *_ in _rows(ws.db, incident_id)}
    assert urgent <= recorded  # recorded with the notice, before the others
    ws.run("deliver", incident_id)
    uninterrupted = ws.json("start", "core-banking-outage", "--title", "Again")["id"]
    completed = _rows(ws.db, incident_id)
    assert completed == _rows(ws.db, uninterrupted)
    assert len(completed) == len(set(completed))
    assert _events(ws.db, incident_id, "audience_read") == _events(
        ws.db, uninterrupted, "audience_read")
