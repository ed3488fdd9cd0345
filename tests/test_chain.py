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
    assert ws.json("verify", incident_id) == {"verified": 1, "broken": {}, "unsigned": {},
            "anchored": False}


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


# ------------------------------------------------------------------------------ the anchor

KEY = "test-chain-key-7f3a9c"


def _truncate_and_rewrite_head(ws: Workspace, incident_id: str) -> None:
    """What someone with write access to the database can do without the key: delete the
    latest event and point the stored head at the one before."""
    _sql(ws, "DELETE FROM events WHERE incident_id = :i AND seq = 4", i=incident_id)
    _sql(ws, "UPDATE incidents SET last_seq = 3, head_hash = (SELECT hash FROM events "
             "WHERE incident_id = :i AND seq = 3) WHERE id = :i", i=incident_id)


def _rewrite_whole_chain(ws: Workspace, incident_id: str) -> None:
    """Change event #2 and recompute every hash after it and the head, as a careful forger
    would: the hash chain alone is then consistent again."""
    from sqlalchemy import select

    from incident.store.events import event_hash
    from incident.store.schema import events

    engine = create_engine(ws.db.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        rows = conn.execute(select(events).where(events.c.incident_id == incident_id)
                            .order_by(events.c.seq)).all()
        prev = "0" * 64
        for row in rows:
            data = row.data.replace("progress 0", "progress FORGED")
            digest = event_hash(incident_id=incident_id, seq=row.seq, type=row.type, at=row.at,
                                actor=row.actor, data=data, prev_hash=prev)
            conn.execute(text("UPDATE events SET data = :d, prev_hash = :p, hash = :h "
                              "WHERE id = :id"), {"d": data, "p": prev, "h": digest, "id": row.id})
            prev = digest
        conn.execute(text("UPDATE incidents SET head_hash = :h WHERE id = :i"),
                     {"h": prev, "i": incident_id})
    engine.dispose()


def test_without_a_key_verify_says_what_it_cannot_prove(ws: Workspace) -> None:
    incident_id = _incident_with_updates(ws)
    _truncate_and_rewrite_head(ws, incident_id)
    result = ws.run("verify", incident_id)  # undetectable without an anchor: and it says so
    assert "not anchored" in result.stdout
    assert "INCIDENT_CHAIN_KEY is not set" in result.stderr
    assert "rewriting that head" in result.stderr


@pytest.mark.parametrize("forgery", [_truncate_and_rewrite_head, _rewrite_whole_chain])
def test_with_a_key_verify_detects_a_rewritten_head_or_chain(
        ws: Workspace, monkeypatch: pytest.MonkeyPatch, forgery: object) -> None:
    monkeypatch.setenv("INCIDENT_CHAIN_KEY", KEY)
    incident_id = _incident_with_updates(ws)
    assert ws.json("verify", incident_id) == {"verified": 1, "broken": {}, "unsigned": {},
            "anchored": True}
    assert "signatures valid" in ws.run("verify", incident_id).stdout
    assert callable(forgery)
    forgery(ws, incident_id)
    result = ws.run("verify", incident_id, code=1)
    assert "signature does not match" in result.stderr
    # A key that is not the one the chain was written with proves nothing either way.
    monkeypatch.setenv("INCIDENT_CHAIN_KEY", "another-key-entirely")
    ws.run("verify", incident_id, code=1)


def test_with_a_key_events_recorded_before_it_are_reported_unsigned(
        ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    incident_id = _incident_with_updates(ws, updates=1)
    monkeypatch.setenv("INCIDENT_CHAIN_KEY", KEY)
    # Not signed is not broken: said, exit 0, and what it then proves is what it proves
    # without a key.
    result = ws.run("verify", incident_id)
    assert "events #1–#2 are not signed with the chain key" in result.stderr
    assert "chain intact, not signed" in result.stdout and "broken" not in result.stderr
    assert ws.json("verify", incident_id)["unsigned"]
    # Writing goes on without a tampering record: a missing signature is not a forgery.
    write = ws.run("update", incident_id, "--message", "later", "--internal")
    assert "broken" not in write.stderr
    types = [e["type"] for e in ws.json("timeline", incident_id)["events"]]
    assert "chain_tampered" not in types


@pytest.mark.parametrize("keyed", [False, True], ids=["no key", "key"])
def test_a_write_on_a_tampered_chain_warns_and_records_it_once(
        ws: Workspace, monkeypatch: pytest.MonkeyPatch, keyed: bool) -> None:
    if keyed:
        monkeypatch.setenv("INCIDENT_CHAIN_KEY", KEY)
    incident_id = _incident_with_updates(ws)
    if keyed:
        _truncate_and_rewrite_head(ws, incident_id)
    else:
        _sql(ws, "DELETE FROM events WHERE incident_id = :i AND seq = 2", i=incident_id)

    first = ws.run("update", incident_id, "--message", "after tampering", "--internal")
    assert "event chain is broken" in first.stderr and incident_id in first.stderr
    second = ws.run("update", incident_id, "--message", "once more", "--internal")
    assert "event chain is broken" in second.stderr  # every write warns ...

    events = ws.json("timeline", incident_id)["events"]
    tampered = [e for e in events if e["type"] == "chain_tampered"]
    assert len(tampered) == 1, [t["data"] for t in tampered]  # ... and the finding is recorded once
    assert tampered[0]["data"]["problems"]
    assert [e["data"].get("message") for e in events[-2:]] == ["after tampering", "once more"]
    assert "EVENT CHAIN FOUND BROKEN" in ws.run("timeline", incident_id,
                                                 env={"COLUMNS": "400"}).stdout
    assert "EVENT CHAIN FOUND BROKEN" in ws.run("report", incident_id, "--lang", "en").stdout
    # The record of the tampering is itself evidence: verify keeps failing.
    result = ws.run("verify", incident_id, code=1)
    assert "found the chain broken" in result.stderr


@pytest.mark.parametrize("keyed", [False, True], ids=["no key", "key"])
def test_deleting_the_latest_notice_neither_blocks_the_next_nor_goes_unseen(
        ws: Workspace, monkeypatch: pytest.MonkeyPatch, keyed: bool) -> None:
    # The latest event is a customer notice; deleting it and rewriting the head left its
    # messages in the outbox under its number, and every later notice failed on them
    # ("conflicting write") while the tampering was never recorded.
    if keyed:
        monkeypatch.setenv("INCIDENT_CHAIN_KEY", KEY)
    _no_parties(ws)
    incident_id = ws.json("start", "core-banking-outage", "--title", "Core down",
                          "--queue-only")["id"]
    ws.run("update", incident_id, "--message", "progress", "--queue-only")
    _sql(ws, "DELETE FROM events WHERE incident_id = :i AND seq = 2", i=incident_id)
    _sql(ws, "UPDATE incidents SET last_seq = 1, head_hash = (SELECT hash FROM events "
             "WHERE incident_id = :i AND seq = 1) WHERE id = :i", i=incident_id)
    result = ws.run("verify", incident_id, code=1)
    assert "outbox: it holds messages of notice #2, after the last event #1" in result.stderr
    write = ws.run("update", incident_id, "--message", "after tampering", "--queue-only")
    assert "event chain is broken" in write.stderr
    again = ws.run("eta", incident_id, "3h", "--reason", "later", "--queue-only")
    assert "event chain is broken" in again.stderr
    types = [e["type"] for e in ws.json("timeline", incident_id)["events"]]
    assert types == ["declared", "chain_tampered", "updated", "eta_revised"]


def test_m005_adds_the_anchor_columns_to_an_older_database(tmp_path: object) -> None:
    from sqlalchemy import inspect

    from incident.store import Store

    url = f"sqlite:///{tmp_path}/old.db"
    Store.open(url).close()
    engine = create_engine(url)
    with engine.begin() as conn:  # the database as m001–m003 left it
        conn.execute(text("ALTER TABLE events DROP COLUMN mac"))
        conn.execute(text("ALTER TABLE incidents DROP COLUMN head_mac"))
        conn.execute(text("DELETE FROM schema_migrations WHERE name = 'm005_chain_anchor'"))
    Store.open(url).close()
    columns = {t: {c["name"] for c in inspect(engine).get_columns(t)}
               for t in ("events", "incidents")}
    engine.dispose()
    assert "mac" in columns["events"] and "head_mac" in columns["incidents"]


def test_every_internal_notice_carries_the_chain_head_outside_the_database(
        ws: Workspace) -> None:
    import email
    import email.policy
    import re

    started = ws.json("start", "core-banking-outage", "--title", "Core down", "--eta", "2h")
    incident_id = started["id"]
    ws.run("update", incident_id, "--message", "Failover under way", "--internal")
    hashes = {e["seq"]: e["hash"] for e in ws.json("timeline", incident_id)["events"]}
    heads = set()
    for path in ws.outbox_files(incident_id, "eml", internal=True):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        body = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        found = re.search(r"(?:event #|第)(\d+)\D+?([0-9a-f]{64})", body)
        assert found, body
        heads.add((int(found[1]), found[2]))
    # Each notice names the event it reports and that event's hash, as the record holds it.
    assert len(heads) == 2 and all(hashes[seq] == digest for seq, digest in heads)


def test_deliver_names_a_notice_deleted_from_under_its_messages(ws: Workspace) -> None:
    _no_parties(ws)
    incident_id = ws.json("start", "core-banking-outage", "--title", "Core down",
                          "--queue-only")["id"]
    _sql(ws, "DELETE FROM events WHERE incident_id = :i AND seq = 1", i=incident_id)

    result = ws.run("deliver", incident_id, code=1)

    assert f"{incident_id}: notice #1 is not in the record" in result.output
    assert f"incident verify {incident_id[-6:]}" in result.output
    assert "Traceback" not in result.output
