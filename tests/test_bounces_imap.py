"""`incident bounces ingest --imap` against a real Dovecot started by the test: DSNs APPENDed to
the mailbox are matched and recorded exactly as from a file, a second run records nothing
more and leaves the mailbox as it was (nothing flagged, moved or deleted); a refused login, an
unknown mailbox and a refused connection exit 1 naming the server, never the password."""

from __future__ import annotations

import imaplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_bounces_ingest import _bounce, _started

import servers
from cli_fixtures import Workspace
from incident.store.outbox import idempotency_key


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[servers.DovecotServer]:
    server = servers.start_dovecot(tmp_path / "dovecot")
    yield server
    server.stop()


def _imap(ws: Workspace, server: servers.DovecotServer, **more: Any) -> None:
    def edit(cfg: dict[str, Any]) -> None:
        cfg.setdefault("bounces", {})["imap"] = {
            "host": server.host, "port": server.port, "user": server.user, "tls": "none",
            "timeout": 30, **more}
    ws.configure(edit)


def _append(server: servers.DovecotServer, *messages: bytes) -> imaplib.IMAP4:
    conn = imaplib.IMAP4(server.host, server.port, timeout=30)
    conn.login(server.user, server.password)
    for message in messages:
        typ, data = conn.append("INBOX", None, None, message)
        assert typ == "OK", data
    return conn


def _flags(conn: imaplib.IMAP4) -> list[bytes]:
    conn.select("INBOX", readonly=True)
    typ, data = conn.fetch("1:*", "(FLAGS)")
    assert typ == "OK"
    return [d for d in data if isinstance(d, bytes)]


def test_imap_bounces_recorded_once_mailbox_untouched(
        ws: Workspace, dovecot: servers.DovecotServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """On SQLite and on PostgreSQL."""
    iid, ids = _started(ws)
    key = idempotency_key(iid, 1, "c2", "email").encode()
    conn = _append(dovecot, _bounce("postfix-hard.eml", ids["c1"]),
                   _bounce("exim-verp-soft.eml", key=key), _bounce("auto-reply.eml"))
    before = _flags(conn)
    _imap(ws, dovecot)
    monkeypatch.setenv("BOUNCES_IMAP_PASSWORD", dovecot.password)
    data = ws.json("bounces", "ingest", "--imap")
    assert (data["messages"], data["recorded"], data["problems"]) == (3, 2, [])
    assert sorted(m["matched_by"] for m in data["matched"]) == ["message-id", "verp"]
    assert all(m["where"].startswith(f"imap://127.0.0.1:{dovecot.port}/INBOX;UID=")
               for m in data["matched"])
    assert len(data["other"]) == 1
    again = ws.json("bounces", "ingest", "--imap")
    assert (again["messages"], again["recorded"], again["already_recorded"]) == (3, 0, 2)
    assert _flags(conn) == before  # nothing flagged \Seen, moved or deleted
    conn.logout()
    assert ws.json("failed", iid)["by_state"] == {"bounced_hard": 1}


def test_imap_refusals_exit_1_with_a_clear_message(
        sqlite_ws: Workspace, dovecot: servers.DovecotServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _started(sqlite_ws)
    _imap(sqlite_ws, dovecot)
    monkeypatch.setenv("BOUNCES_IMAP_PASSWORD", "wrong-password-123")
    refused = sqlite_ws.run("bounces", "ingest", "--imap", code=1)
    assert "refused the login of 'bounces'" in refused.stderr
    assert f"127.0.0.1:{dovecot.port}" in refused.stderr
    assert "wrong-password-123" not in refused.output and "Traceback" not in refused.output

    monkeypatch.setenv("BOUNCES_IMAP_PASSWORD", dovecot.password)
    _imap(sqlite_ws, dovecot, mailbox="Bounces")
    unknown = sqlite_ws.run("bounces", "ingest", "--imap", code=1)
    assert "has no mailbox 'Bounces'" in unknown.stderr

    port = dovecot.port
    dovecot.stop()
    _imap(sqlite_ws, dovecot)
    gone = sqlite_ws.run("bounces", "ingest", "--imap", code=1)
    assert f"cannot connect to the IMAP server imap://127.0.0.1:{port}/INBOX" in gone.stderr

    monkeypatch.delenv("BOUNCES_IMAP_PASSWORD")
    unset = sqlite_ws.run("bounces", "ingest", "--imap", code=2)
    assert "BOUNCES_IMAP_PASSWORD" in unset.stderr
    assert "give PATH... or --imap" in sqlite_ws.run("bounces", "ingest", code=2).output
