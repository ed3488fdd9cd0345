"""A real Postfix bounce: notices sent by `incident start` over SMTP to a Postfix on
127.0.0.1 that relays them to an smtp-sink rejecting RCPT; Postfix writes its DSNs into a
Maildir (the sender's domain is local), and `incident bounces ingest` matches each to the
notice by its Message-ID — and a message sent with a VERP return path by its key."""

from __future__ import annotations

import email
import smtplib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import servers
from cli_fixtures import Workspace
from incident.store.outbox import idempotency_key

CUSTOMERS = [
    "c1,Li Na,li.na@customer.example,,en,retail,guangdong,gd-sz,savings,normal",
    "c2,Wang Fang,wang.fang@customer.example,,zh-CN,retail,guangdong,gd-sz,savings,normal",
]


@pytest.fixture
def postfix(tmp_path: Path, smtp_sink: Callable[..., servers.SmtpSink],
            ) -> Iterator[servers.PostfixServer]:
    """Postfix accepting mail for customer.example, refused by the remote (smtp-sink: 5xx on
    RCPT), and delivering mail for example.com (the notices' sender) to a Maildir."""
    sink = smtp_sink("-f", "RCPT")
    server = servers.start_postfix(tmp_path / "postfix", local_domain="example.com",
                                   relay_domain="customer.example",
                                   relay=f"{sink.host}:{sink.port}")
    try:
        yield server
    finally:
        server.stop()


def _wait_for(maildir: Path, count: int, log: Path, timeout: float = 60) -> list[Path]:
    """The DSNs in the Maildir, once there are `count` (the parties' internal notices to
    example.com land there too, as in a real shared mailbox)."""
    deadline = time.monotonic() + timeout
    found: list[Path] = []
    while time.monotonic() < deadline:
        found = [p for p in sorted((maildir / "new").glob("*")) if b"report-type=delivery-status"
                 in p.read_bytes()] if (maildir / "new").is_dir() else []
        if len(found) >= count:
            return found
        time.sleep(0.2)
    raise AssertionError(f"Postfix wrote {len(found)} of {count} bounces:\n"
                         + log.read_text(errors="replace")[-3000:])


def test_postfix_dsn_matched_by_message_id_and_verp(sqlite_ws: Workspace,
                                                     postfix: servers.PostfixServer) -> None:
    sqlite_ws.use_smtp(postfix.port, connections=1)
    sqlite_ws.write_customers(CUSTOMERS)
    started = sqlite_ws.json("start", "core-banking-outage", "--title", "Core down")
    iid = str(started["id"])
    assert started["deliveries"]["sent"] == 2  # Postfix accepted both
    key = idempotency_key(iid, 1, "c2", "email")
    with smtplib.SMTP(postfix.host, postfix.port, timeout=30) as client:
        client.sendmail(f"bounce+{key}@example.com", ["wang.fang@customer.example"],
                        b"From: service@example.com\r\nTo: wang.fang@customer.example\r\n"
                        b"Subject: resent\r\nMessage-ID: <resent-1@elsewhere.example>\r\n\r\n"
                        b"Hello\r\n")
    _wait_for(postfix.maildir, 3, postfix.log_path)

    data = sqlite_ws.json("bounces", "ingest", str(postfix.maildir))
    assert data["problems"] == [] and data["unmatched"] == [] and len(data["matched"]) == 3
    assert data["messages"] == 3 + len(data["other"])  # the parties' notices: no failure
    matched = sorted((m["outbox"]["customer"], m["matched_by"]) for m in data["matched"])
    assert [by for _, by in matched] == sorted(["message-id", "message-id", "verp"])
    for bounce in data["matched"]:
        assert bounce["severity"] == "hard" and bounce["status"].startswith("5.")
        assert bounce["outbox"]["incident"] == iid
        assert "Undelivered" not in bounce["diagnostic"]  # the Diagnostic-Code, not a subject
    verp = next(m for m in data["matched"] if m["matched_by"] == "verp")
    by_id = [m for m in data["matched"] if m["matched_by"] == "message-id"]
    assert verp["outbox"]["id"] in {m["outbox"]["id"] for m in by_id}  # c2's email, both ways
    # a second read names every message the same way (re-ingest can be a no-op)
    again = sqlite_ws.json("bounces", "ingest", str(postfix.maildir))
    assert sorted(m["identity"] for m in again["matched"]) == sorted(
        m["identity"] for m in data["matched"])


def test_postfix_delay_warning_is_a_soft_bounce(sqlite_ws: Workspace, tmp_path: Path,
                                                smtp_sink: Callable[..., servers.SmtpSink],
                                                ) -> None:
    """The remote answers 4xx: Postfix keeps retrying and sends a delay DSN (Action: delayed)
    after delay_warning_time, which ingest classifies soft and matches by Message-ID."""
    sink = smtp_sink("-r", "RCPT")
    postfix = servers.start_postfix(
        tmp_path / "postfix", local_domain="example.com", relay_domain="customer.example",
        relay=f"{sink.host}:{sink.port}",
        settings={"delay_warning_time": "1s", "queue_run_delay": "1s",
                  "minimal_backoff_time": "1s", "maximal_backoff_time": "2s"})
    try:
        sqlite_ws.use_smtp(postfix.port, connections=1)
        sqlite_ws.write_customers(CUSTOMERS[:1])
        iid = str(sqlite_ws.json("start", "core-banking-outage", "--title", "Core down")["id"])
        _wait_for(postfix.maildir, 1, postfix.log_path)
    finally:
        postfix.stop()
    data = sqlite_ws.json("bounces", "ingest", str(postfix.maildir))
    [bounce] = data["matched"]
    assert (bounce["severity"], bounce["action"], bounce["matched_by"]) == (
        "soft", "delayed", "message-id")
    assert bounce["status"].startswith("4.") and bounce["outbox"]["incident"] == iid


def test_postfix_bounce_of_a_verp_sent_notice_matched_by_its_key(
        sqlite_ws: Workspace, postfix: servers.PostfixServer, tmp_path: Path) -> None:
    """With bounces.verp_domain, `incident start` sends each notice with MAIL FROM
    bounce+<key>@example.com: Postfix returns its DSN to that address, and the DSN matches by
    that key alone — also when the returned message is cut off, as some MTAs do."""
    def edit(cfg: dict[str, Any]) -> None:
        cfg.setdefault("bounces", {})["verp_domain"] = "example.com"
    sqlite_ws.configure(edit)
    sqlite_ws.use_smtp(postfix.port, connections=1)
    sqlite_ws.write_customers(CUSTOMERS)
    iid = str(sqlite_ws.json("start", "core-banking-outage", "--title", "Core down")["id"])
    dsns = _wait_for(postfix.maildir, 2, postfix.log_path)
    keys = {idempotency_key(iid, 1, ref, "email") for ref in ("c1", "c2")}
    assert {email.message_from_bytes(p.read_bytes())["Delivered-To"] for p in dsns} == {
        f"bounce+{key}@example.com" for key in keys}
    cut = tmp_path / "cut"
    cut.mkdir()
    for n, path in enumerate(dsns):
        dsn = email.message_from_bytes(path.read_bytes())
        payload = dsn.get_payload()
        assert isinstance(payload, list)
        dsn.set_payload([p for p in payload if p.get_content_type() not in (
            "message/rfc822", "text/rfc822-headers")])
        (cut / f"{n}.eml").write_bytes(dsn.as_bytes())
    data = sqlite_ws.json("bounces", "ingest", str(cut))
    assert data["unmatched"] == [] and len(data["matched"]) == 2
    assert {m["matched_by"] for m in data["matched"]} == {"verp"}
    assert {m["outbox"]["customer"] for m in data["matched"]} == {"c1", "c2"}
