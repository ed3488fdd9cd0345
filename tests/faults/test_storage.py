"""The SQLite store under pressure: another writer holding the lock, and a full disk.

A command either waits and succeeds, or fails with exit 1 and a message naming the cause
(busy/locked, disk full) -- never a traceback, never half a record: a notice's event and its
outbox rows are both there or both absent, and `incident verify` still passes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event

import incident.store.engine as store_engine
from cli_fixtures import Workspace

AUDIENCE = 1500  # customers: a notice to all of them needs far more than a few pages


def customer_rows(n: int) -> list[str]:
    """`n` CSV rows (email only) the shipped core-banking-outage playbook selects."""
    return [f"C{i:05d},Customer {i},customer{i:05d}@example.com,,en,retail,guangdong,"
            "gd-sz-futian,savings,normal" for i in range(n)]


def db_path(ws: Workspace) -> Path:
    assert ws.db.startswith("sqlite:///"), ws.db
    return Path(ws.db.removeprefix("sqlite:///"))


def snapshot(ws: Workspace) -> dict[str, Any]:
    """What the database holds, read with the plain sqlite3 module (not through incident)."""
    with contextlib.closing(sqlite3.connect(db_path(ws))) as conn:
        incidents = sorted(r[0] for r in conn.execute("SELECT id FROM incidents"))
        events = conn.execute("SELECT incident_id, seq, type, data FROM events "
                              "ORDER BY incident_id, seq").fetchall()
        outbox = dict(((i, s), n) for i, s, n in conn.execute(
            "SELECT incident_id, notice_seq, count(*) FROM outbox "
            "GROUP BY incident_id, notice_seq"))
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    notices = {}
    for i, s, t, d in events:
        data = json.loads(d)
        if "notice" in data:
            notices[(i, s)] = data["notice"]["messages"]
        if t == "audience_read":  # the exact count of a first notice recorded early
            notices[(i, 1)] = data["messages"]
    return {"incidents": incidents, "events": [(i, s, t) for i, s, t, _ in events],
            "notices": notices, "outbox": outbox, "integrity": integrity}


def assert_whole(ws: Workspace, snap: dict[str, Any]) -> None:
    """Every notice event has exactly its outbox rows and every outbox row its event; the
    file is intact and every incident's chain verifies."""
    assert snap["integrity"] == "ok"
    assert snap["outbox"] == snap["notices"], "an event without its outbox rows, or the reverse"
    for incident_id in snap["incidents"]:
        ws.run("verify", incident_id)


def assert_clear_failure(result: Any, *words: str) -> None:
    """Exit 1, one of `words` in the message, and no traceback anywhere."""
    output = result.stdout + result.stderr
    assert result.exit_code == 1, output
    assert "Traceback" not in output
    assert "error:" in result.stderr
    assert any(w in result.stderr for w in words), result.stderr
    assert "nothing was recorded" in result.stderr


@pytest.fixture
def declared(sqlite_ws: Workspace) -> tuple[Workspace, str]:
    """A workspace with one incident declared to AUDIENCE customers (queued, not sent)."""
    sqlite_ws.write_customers(customer_rows(AUDIENCE))
    started = sqlite_ws.json("start", "core-banking-outage", "--title", "Core down",
                             "--queue-only")
    assert started["notice"]["messages"] == AUDIENCE
    return sqlite_ws, str(started["id"])


# --- another writer holds the lock ---------------------------------------------------------------


@contextlib.contextmanager
def writer_holding_lock(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection inside BEGIN IMMEDIATE: the database's one write lock is taken."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


def test_a_command_waits_for_another_writer_and_succeeds(
        declared: tuple[Workspace, str]) -> None:
    ws, incident_id = declared
    before = snapshot(ws)
    released = threading.Event()
    with writer_holding_lock(db_path(ws)) as holder:
        def release() -> None:
            holder.execute("ROLLBACK")
            released.set()

        # Released well within the busy timeout (30 s): the update must wait, not fail.
        timer = threading.Timer(2.0, release)
        timer.start()
        try:
            result = ws.json("update", incident_id, "-m", "Failover in progress",
                             "--queue-only")
        finally:
            timer.cancel()
            timer.join()
        # The update could only have written after the other writer let go.
        assert released.is_set()
    assert result["notice"]["messages"] == AUDIENCE
    after = snapshot(ws)
    assert len(after["notices"]) > len(before["notices"])
    assert_whole(ws, after)


def test_a_command_gives_up_clearly_when_the_lock_is_held_past_the_busy_timeout(
        declared: tuple[Workspace, str], monkeypatch: pytest.MonkeyPatch) -> None:
    ws, incident_id = declared
    # The shipped busy timeout is 30 s; 1.5 s tests the same path without the wait.
    monkeypatch.setattr(store_engine, "SQLITE_BUSY_MS", 1500)
    before = snapshot(ws)
    with writer_holding_lock(db_path(ws)):
        result = ws.run("update", incident_id, "-m", "Failover in progress", code=None)
        assert_clear_failure(result, "locked", "busy")
        assert "waited 1.5 s" in result.stderr
        # Reading is not blocked by a writer (WAL): status still works meanwhile.
        assert ws.json("status", incident_id)["id"] == incident_id
    after = snapshot(ws)
    assert after == before  # nothing recorded
    assert_whole(ws, after)
    # Once the writer is gone the same command goes through: nothing was left broken.
    monkeypatch.undo()
    ws.json("update", incident_id, "-m", "Failover in progress", "--queue-only")
    assert_whole(ws, snapshot(ws))


# --- disk full -----------------------------------------------------------------------------------


DiskLimit = Callable[[Workspace], contextlib.AbstractContextManager[None]]


@contextlib.contextmanager
def max_page_count(ws: Workspace) -> Iterator[None]:
    """Every new SQLite connection may not grow the file beyond its current size (PRAGMA
    max_page_count): the next write that needs a new page fails with SQLITE_FULL."""
    path = db_path(ws)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        assert conn.execute("PRAGMA freelist_count").fetchone()[0] < 8

    def limit(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute(f"PRAGMA max_page_count = {pages}")

    event.listen(Engine, "connect", limit)
    try:
        yield
    finally:
        event.remove(Engine, "connect", limit)


@contextlib.contextmanager
def filled_filesystem(ws: Workspace) -> Iterator[None]:
    """The small tmpfs holding the database has (almost) no free space left: the next write
    to the WAL fails with ENOSPC (SQLITE_FULL)."""
    path = db_path(ws)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the WAL must grow again to write
    filler = path.parent / "filler"
    stat = os.statvfs(path.parent)
    spare = 8 * 1024  # a couple of pages: not enough for the notice's rows
    with open(filler, "wb") as f:
        remaining = stat.f_bavail * stat.f_frsize - spare
        chunk = b"\0" * (1 << 20)
        try:
            while remaining > 0:
                remaining -= f.write(chunk[:min(len(chunk), remaining)])
        except OSError as exc:  # the last chunk may not fit exactly
            assert exc.errno == errno.ENOSPC
    try:
        yield
    finally:
        filler.unlink()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB tmpfs mounted for this test (only collected as root: see DISKS); a mount that
    fails fails the test."""
    mount = tmp_path / "small-fs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs",
                           str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs at {mount}: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


# SQLite's own size limit everywhere; a real full filesystem too where we may mount one (as
# root, which CI is): without root that variant is not generated rather than skipped.
DISKS = ["max_page_count", "tmpfs"] if os.geteuid() == 0 else ["max_page_count"]


@pytest.fixture(params=DISKS)
def full_disk(request: pytest.FixtureRequest, sqlite_ws: Workspace
              ) -> tuple[Workspace, DiskLimit]:
    """A workspace and a way to make its database's disk full: SQLite's own size limit, or
    (as root) a real filesystem with no space left."""
    if request.param == "max_page_count":
        return sqlite_ws, max_page_count
    mount = request.getfixturevalue("tmpfs")
    sqlite_ws.db = f"sqlite:///{mount}/incident.db"
    return sqlite_ws, filled_filesystem


@pytest.mark.parametrize("command", ["start", "update"])
def test_a_full_disk_fails_clearly_and_records_nothing_half(
        full_disk: tuple[Workspace, DiskLimit], command: str) -> None:
    ws, disk_full = full_disk
    ws.write_customers(customer_rows(AUDIENCE))
    first = ws.json("start", "core-banking-outage", "--title", "Core down", "--queue-only")
    args = {"start": ["start", "core-banking-outage", "--title", "Card payments down",
                      "--queue-only"],
            "update": ["update", str(first["id"]), "-m", "Failover in progress",
                       "--queue-only"]}[command]
    before = snapshot(ws)
    with disk_full(ws):
        result = ws.run(*args, code=None)
        assert_clear_failure(result, "disk is full", "disk full")
        after = snapshot(ws)
    assert after == before, "the failed command left something in the database"
    assert_whole(ws, after)
    # With space again the same command records the whole notice.
    ws.json(*args)
    healed = snapshot(ws)
    assert len(healed["notices"]) > len(before["notices"])
    assert_whole(ws, healed)
