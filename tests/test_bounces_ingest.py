"""`incident bounces ingest` against a real SQLite workspace after `incident start`: bounces
matched to the notice's email by the Message-ID the file channel wrote, or by a VERP key;
unmatched ones left alone; problems listed with exit 2; contacts masked."""

from __future__ import annotations

import email
import json
import mailbox
from pathlib import Path

from cli_fixtures import Workspace
from incident.store.outbox import idempotency_key

CORPUS = Path(__file__).parent / "data" / "bounces"
CORPUS_MID = b"<INC-20261124-3F2A7C.0123456789abcdef01234567@bank.example>"
CORPUS_KEY = b"5f2c1e9a7b3d4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f9012a3b4c5d6e7f"
CUSTOMERS = [
    "c1,Li Na,li.na@customer.example,+8613800138001,en,retail,guangdong,gd-sz,savings,normal",
    "c2,Wang Fang,wang.fang@customer.example,+8613800138002,zh-CN,retail,guangdong,gd-sz,"
    "savings,normal",
]


def _started(ws: Workspace) -> tuple[str, dict[str, bytes]]:
    """Start an incident; the Message-ID of each customer's email, by customer."""
    ws.write_customers(CUSTOMERS)
    iid = str(ws.json("start", "core-banking-outage", "--title", "Core down")["id"])
    ids = {}
    for eml in ws.outbox_files(iid, "eml"):
        message = email.message_from_bytes(eml.read_bytes())
        ids["c1" if "li.na" in message["To"] else "c2"] = message["Message-ID"].encode()
    assert len(ids) == 2
    return iid, ids


def _bounce(name: str, message_id: bytes = CORPUS_MID, key: bytes = CORPUS_KEY) -> bytes:
    return (CORPUS / name).read_bytes().replace(CORPUS_MID, message_id).replace(CORPUS_KEY, key)


def test_matched_by_message_id_and_verp_unmatched_left_alone(ws: Workspace,
                                                             tmp_path: Path) -> None:
    """On SQLite and on PostgreSQL."""
    iid, ids = _started(ws)
    key = idempotency_key(iid, 1, "c2", "email").encode()
    box = mailbox.mbox(str(tmp_path / "bounces.mbox"))
    box.add(_bounce("postfix-hard.eml", ids["c1"]))  # hard, by Message-ID
    box.add(_bounce("exim-verp-soft.eml", key=key))  # soft, by VERP
    box.add(_bounce("exim-hard.eml", b"<INC-20261124-3F2A7C.ffffffffffffffffffffffff@x.example>"))
    box.add(_bounce("unmatched.eml"))  # no references at all
    box.add(_bounce("auto-reply.eml"))
    box.close()
    data = ws.json("bounces", "ingest", str(tmp_path / "bounces.mbox"))
    assert data["messages"] == 5 and data["recorded"] == 2 and data["problems"] == []
    matched = {m["outbox"]["customer"]: m for m in data["matched"]}
    assert len(matched) == 2
    hard, soft = (next(m for m in data["matched"] if m["severity"] == s) for s in ("hard", "soft"))
    assert (hard["matched_by"], hard["status"], hard["outbox"]["incident"]) == (
        "message-id", "5.1.1", iid)
    assert hard["outbox"]["message_id"] == ids["c1"].decode()
    assert (soft["matched_by"], soft["action"]) == ("verp", "delayed")
    assert soft["outbox"]["message_id"] == ids["c2"].decode()
    assert [u["why"] for u in data["unmatched"]] == [
        "no email of ours has its Message-ID or VERP key",
        "carries no original Message-ID nor VERP address"]
    assert len(data["other"]) == 1
    # contacts masked everywhere
    text = ws.run("bounces", "ingest", str(tmp_path / "bounces.mbox"),
                         env={"COLUMNS": "300"}).output
    for shown in (str(data), text):
        assert "li.na@customer.example" not in shown and "zhao.lei@customer" not in shown
    assert "l***@customer.example" in text and "hard matched (message-id)" in text
    # Recorded once: a mailbox read again records nothing twice.
    again = ws.json("bounces", "ingest", str(tmp_path / "bounces.mbox"))
    assert (again["recorded"], again["already_recorded"]) == (0, 2)
    # The hard bounce is a customer not reached: listed for the manual-handling team.
    failed = ws.json("failed", iid)
    assert failed["by_state"] == {"bounced_hard": 1}, failed  # the soft one may still arrive
    assert [(r["customer"], r["channel"]) for r in failed["deliveries"]] == [("c1", "email")]
    status = json.dumps(ws.json("status", iid))
    assert "bounced_hard" in status and "bounced_soft" in status


def test_a_bounce_for_another_workspace_is_not_matched(sqlite_ws: Workspace,
                                                      tmp_path: Path) -> None:
    _started(sqlite_ws)
    (tmp_path / "b.eml").write_bytes(_bounce("gmail-delayed.eml"))  # the corpus' own id
    data = sqlite_ws.json("bounces", "ingest", str(tmp_path / "b.eml"))
    assert data["matched"] == [] and len(data["unmatched"]) == 1


def test_maildir_with_a_malformed_message_exits_2_after_reading_the_rest(
        sqlite_ws: Workspace, tmp_path: Path) -> None:
    _, ids = _started(sqlite_ws)
    box = mailbox.Maildir(str(tmp_path / "Maildir"))
    box.add(_bounce("exchange-hard.eml", ids["c2"]))
    box.add(_bounce("malformed-no-boundary.eml"))
    box.add(_bounce("exchange-hard.eml", ids["c2"]))  # the same message again: read once
    result = sqlite_ws.run("--json", "bounces", "ingest", str(tmp_path / "Maildir"), code=2)
    data = json.loads(result.stdout)
    assert len(data["matched"]) == 1 and data["repeated"] == 1
    [problem] = data["problems"]
    assert problem["where"].startswith(str(tmp_path / "Maildir"))
    assert "delivery-status" in problem["why"]
    assert "Traceback" not in result.output


def test_missing_path_is_bad_input(sqlite_ws: Workspace, tmp_path: Path) -> None:
    _started(sqlite_ws)
    result = sqlite_ws.run("bounces", "ingest", str(tmp_path / "nope.mbox"), code=2)
    assert result.stderr.count("nope.mbox") == 1 and "Traceback" not in result.output
