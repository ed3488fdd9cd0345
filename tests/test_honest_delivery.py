"""Issue 11 §1–§2 through the command line: no customer silently left out, and delivery
outcomes that say what happened (pending with a reason, the transport a notice was recorded
for, channels checked before anything is recorded, parties queued until reached)."""

from __future__ import annotations

import json

from cli_fixtures import Workspace


def _start(ws: Workspace, *extra: str, code: int | None = 0) -> dict:
    return ws.json("start", "core-banking-outage", "--title", "Core banking unavailable",
                   "--eta", "2h", *extra, code=code)


def test_a_customer_with_a_bad_phone_still_gets_the_email(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    ws.write_customers(["c1,张伟,zhang.wei@example.com,999,zh-CN,,,,,",
                        "c2,Li Na,not-an-email,13812348000,en,,,,,"])
    result = ws.run("start", "core-banking-outage", "--title", "Core banking unavailable")
    incident_id = json.loads(ws.run("--json", "list").stdout)[0]["id"]
    emails = ws.outbox_files(incident_id, "eml")
    sms = ws.outbox_files(incident_id, "json")
    assert len(emails) == 1 and len(sms) == 1  # c1 by email, c2 by SMS
    assert b"zhang.wei@example.com" in emails[0].read_bytes()
    assert json.loads(sms[0].read_text(encoding="utf-8"))["to"] == "+8613812348000"
    # Each bad field is named with its line; nothing is said to be skipped.
    assert "customers.csv:2: phone" in result.stderr and "notified by email only" in result.stderr
    assert "customers.csv:3: email" in result.stderr and "notified by SMS only" in result.stderr
    assert "2 customers affected" in result.stdout and "rows skipped" not in result.stdout
    assert "zhang.wei@example.com" not in result.output
