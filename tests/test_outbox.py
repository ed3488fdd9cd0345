"""Outbox claims: only a dead worker's claims are taken back, on both backends."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

from incident.models import EventType
from incident.payloads import Declared
from incident.store import Store
from incident.store import outbox as ob

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


def _store_with_rows(db_url: str, n: int) -> tuple[Store, str]:
    store = Store.open(db_url)
    with store.write() as conn:
        incident_id = store.create_incident(conn, playbook_id="p", title="t", drill=False,
                                            at=NOW)
        store.append(conn, incident_id, EventType.DECLARED, actor="a", at=NOW,
                     data=Declared(title="t", playbook={}, severity="P3",
                                   detected_at=NOW.isoformat()))
        ob.enqueue(conn, [{"incident_id": incident_id, "notice_seq": 1, "channel": "email",
                           "recipient_ref": f"c{k}", "recipient_name": "", "address": "x@y.z",
                           "language": "en", "priority": 1, "message_id": f"<{k}@y.z>",
                           "idempotency_key": ob.idempotency_key(incident_id, 1, f"c{k}",
                                                                 "email")}
                          for k in range(n)], now=NOW)
    return store, incident_id


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_recover_releases_only_the_claims_of_dead_workers(db_url: str) -> None:
    from incident.composer import Composer
    from incident.delivery import Dispatcher
    from incident.rendering import Renderer
    from incident.settings import load_runtime

    store, _ = _store_with_rows(db_url, 6)
    host = ob.worker_name().split(":")[0]
    alive = f"{host}:{os.getpid()}:live"  # this test process: alive
    dead = f"{host}:{_dead_pid()}:dead"
    other_host = "a_b:1:remote"  # another machine: only the stale-claim timeout applies
    with store.write() as conn:
        for worker in (alive, dead, other_host):
            assert len(ob.claim(conn, worker=worker, now=NOW, limit=2)) == 2

    rt = load_runtime(None, env={})  # the built-in defaults
    dispatcher = Dispatcher(store, Composer(rt, Renderer(rt.template_path), {}), {})
    assert dispatcher.recover() == 2
    with store.read() as conn:
        rows = conn.execute(ob.schema.outbox.select()).all()
    by_worker = {r.claimed_by for r in rows if r.state == "sending"}
    assert by_worker == {alive, other_host}
    assert sum(r.state == "pending" for r in rows) == 2


def test_host_wildcards_do_not_match_other_hosts(db_url: str) -> None:
    store, _ = _store_with_rows(db_url, 2)
    with store.write() as conn:
        ob.claim(conn, worker="axb:1:w", now=NOW, limit=1)
        ob.claim(conn, worker="a_b:2:w", now=NOW, limit=1)
        assert ob.claimed_workers(conn, "a_b") == ["a_b:2:w"]
        assert ob.claimed_workers(conn, "a%") == []


def test_m004_adds_the_transport_to_an_older_outbox_and_claims_honour_it(db_url: str) -> None:
    from sqlalchemy import inspect

    store, _ = _store_with_rows(db_url, 2)
    with store.write() as conn:  # the outbox as m001-m003 left it, rows without a transport
        conn.exec_driver_sql("ALTER TABLE outbox DROP COLUMN transport")
        conn.exec_driver_sql("DELETE FROM schema_migrations "
                             "WHERE name = 'm004_outbox_transport'")
    store = Store.open(db_url)
    with store.write() as conn:
        assert "transport" in {c["name"] for c in inspect(conn).get_columns("outbox")}
        conn.exec_driver_sql("UPDATE outbox SET transport = 'smtp' WHERE recipient_ref = 'c1'")
        # A file worker takes the older row (no transport recorded), never the smtp one.
        claimed = ob.claim(conn, worker="w:1", now=NOW, limit=10,
                           transports={"email": "file", "sms": "file"})
        assert [row.recipient_ref for row in claimed] == ["c0"]
        claimed = ob.claim(conn, worker="w:1", now=NOW, limit=10,
                           transports={"email": "smtp", "sms": "file"})
        assert [(row.recipient_ref, row.transport) for row in claimed] == [("c1", "smtp")]
