"""The event chain: tampering is detected; concurrent writers lose nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, text

from cli_fixtures import Workspace


def _no_parties(ws: Workspace) -> None:
    """These tests count events: keep internal notices to parties out of the log."""
    def drop(data: dict) -> None:
        data.pop("parties", None)
        data.pop("alerts", None)  # names a party

    ws.configure(drop)


def _incident_with_updates(ws: Workspace, updates: int = 3) -> str:
    _no_parties(ws)
    started = ws.json("start", "core-banking-outage", "--title", "Core down", "--eta", "2h",
                      "--queue-only")
    for n in range(updates):
        ws.run("update", started["id"], "--message", f"progress {n}", "--internal")
    return started["id"]


def _sql(ws: Workspace, statement: str, **params: object) -> None:
    engine = create_engine(ws.db.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(text(statement), params)
    engine.dispose()


TAMPERING = {
    "modified": ("UPDATE events SET data = REPLACE(data, 'progress 1', 'progress X') "
                 "WHERE incident_id = :i AND seq = 3", "#3", "modified"),
    "actor changed": ("UPDATE events SET actor = 'someone-else' WHERE incident_id = :i "
                      "AND seq = 2", "#2", "modified"),
    "deleted": ("DELETE FROM events WHERE incident_id = :i AND seq = 2", "#3", "deleted"),
    "last deleted": ("DELETE FROM events WHERE incident_id = :i AND seq = 4", "head",
                     "latest event"),
    "reordered": ("UPDATE events SET seq = CASE seq WHEN 2 THEN 3 WHEN 3 THEN 2 END "
                  "WHERE incident_id = :i AND seq IN (2, 3)", "#3", "reordered"),
}


def test_verify_passes_on_an_untouched_log(ws: Workspace) -> None:
    incident_id = _incident_with_updates(ws)
    assert ws.json("verify", incident_id) == {"verified": 1, "broken": {}}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_verify_names_the_event_after_tampering(ws: Workspace, case: str) -> None:
    statement, event_label, words = TAMPERING[case]
    incident_id = _incident_with_updates(ws)
    if case == "reordered":
        # Swapping two sequence numbers needs the unique constraint out of the way first.
        _sql(ws, "UPDATE events SET seq = seq + 100 WHERE incident_id = :i AND seq IN (2, 3)",
             i=incident_id)
        statement = ("UPDATE events SET seq = CASE seq WHEN 102 THEN 3 WHEN 103 THEN 2 END "
                     "WHERE incident_id = :i AND seq IN (102, 103)")
    _sql(ws, statement, i=incident_id)
    result = ws.run("verify", incident_id, code=1)
    assert event_label in result.stderr
    assert incident_id in result.stderr
    assert words.split()[0] in result.stderr or "link" in result.stderr


def _append_worker(ws: Workspace, incident_id: str, tag: str, count: int) -> subprocess.Popen:
    env = {**os.environ, "INCIDENT_OPERATOR": tag}
    env.pop("INCIDENT_NOW", None)
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from incident.cli import cli\n"
        "cfg, db, iid, tag, n = sys.argv[1:]\n"
        "runner = CliRunner()\n"
        "for k in range(int(n)):\n"
        "    r = runner.invoke(cli, ['--config', cfg, '--db', db, 'update', iid, '-m',\n"
        "                            f'{tag} {k}', '--queue-only'], catch_exceptions=False)\n"
        "    assert r.exit_code == 0, r.output\n"
    )
    return subprocess.Popen([sys.executable, "-c", code, str(ws.config), ws.db, incident_id,
                             tag, str(count)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_processes_appending_at_once_lose_nothing(ws: Workspace) -> None:
    _no_parties(ws)
    started = ws.json("start", "core-banking-outage", "--title", "Core down", "--eta", "2h",
                      "--queue-only")
    incident_id = started["id"]
    per_process = 12
    workers = [_append_worker(ws, incident_id, tag, per_process) for tag in ("alpha", "beta")]
    for worker in workers:
        _out, err = worker.communicate(timeout=240)
        assert worker.returncode == 0, err[-2000:]
    timeline = ws.json("timeline", incident_id)
    messages = [e["data"].get("message") for e in timeline["events"][1:]]
    assert sorted(messages) == sorted(f"{t} {k}" for t in ("alpha", "beta")
                                      for k in range(per_process))
    assert [e["seq"] for e in timeline["events"]] == list(range(1, 2 + 2 * per_process))
    assert ws.json("verify", incident_id)["broken"] == {}
    # Every update notice got its own full set of outbox rows.
    status = ws.json("status", incident_id)
    assert status["deliveries"]["pending"] == started["deliveries"]["pending"] * (
        1 + 2 * per_process)
