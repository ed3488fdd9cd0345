"""The whole incident lifecycle through the command line, on SQLite and PostgreSQL."""

from __future__ import annotations

import email
import email.policy
import json
from email.message import EmailMessage
from pathlib import Path

import pytest

from cli_fixtures import Workspace


def _read_eml(path) -> EmailMessage:
    with open(path, "rb") as handle:
        message = email.message_from_binary_file(handle, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _start(ws: Workspace, *extra: str) -> dict:
    return ws.json("start", "core-banking-outage", "--title", "Core banking unavailable",
                   "--eta", "2h", *extra)


def test_full_lifecycle_records_every_step_and_writes_every_notice(ws: Workspace) -> None:
    started = _start(ws, "--severity", "II", "--detected-at", "10m")
    incident_id = started["id"]
    assert started["status"] == "investigating"
    assert started["severity"] == "II"
    assert started["eta"] is not None
    first = started["deliveries"]
    assert first["failed"] == 0 and first["pending"] == 0 and first["sent"] > 0
    sent_initial = first["sent"]

    short = incident_id[-6:]
    updated = ws.json("update", short, "--message", "Failover to the standby database",
                      "--status", "identified")
    assert updated["status"] == "identified"
    assert updated["notice"]["phase"] == "update"
    assert updated["deliveries"]["sent"] == 2 * sent_initial

    revised = ws.json("eta", short, "3h", "--reason", "Data verification takes longer")
    assert revised["notice"]["phase"] == "eta_changed"
    assert revised["eta"] != started["eta"]

    resolved = ws.json("resolve", short, "--message", "All services restored")
    assert resolved["status"] == "resolved"
    assert resolved["next_update_due"] is None
    assert resolved["deliveries"]["sent"] == 4 * sent_initial

    closed = ws.json("close", short)
    assert closed["status"] == "closed"

    timeline = ws.json("timeline", short)
    # The parties hear of the declaration, the ETA change and the recovery; customers of
    # every notice.
    assert [e["type"] for e in timeline["events"]] == [
        "declared", "parties_notified", "updated", "eta_revised", "parties_notified",
        "resolved", "parties_notified", "closed"]
    assert {e["actor"] for e in timeline["events"]} == {"duty-lead"}
    assert ws.json("verify", short) == {"verified": 1, "broken": {}, "unsigned": {},
            "anchored": False}

    # Every notice went to every recipient once: 4 notices × the first notice's messages.
    emls = ws.outbox_files(incident_id, "eml")
    smss = ws.outbox_files(incident_id, "json")
    assert len(emls) + len(smss) == 4 * sent_initial
    assert ws.json("list") == []  # closed incidents are not listed without --all
    assert [i["id"] for i in ws.json("list", "--all")] == [incident_id]


def test_email_files_are_real_multipart_messages_in_the_customer_language(ws: Workspace) -> None:
    ws.write_customers([
        "c1,张伟,zhang.wei@example.com,,zh-CN,retail,guangdong,gd-sz,current_account,urgent",
        "c2,Mary Chan,mary@example.org,,en,private,hong-kong,hk-central,wealth,normal",
    ])
    started = _start(ws)
    emls = {(_read_eml(p)["To"].addresses[0].addr_spec): _read_eml(p)
            for p in ws.outbox_files(started["id"], "eml")}
    assert set(emls) == {"zhang.wei@example.com", "mary@example.org"}
    zh, en = emls["zhang.wei@example.com"], emls["mary@example.org"]
    for message in (zh, en):
        assert message.get_content_type() == "multipart/alternative"
        parts = [p.get_content_type() for p in message.iter_parts()]
        assert parts == ["text/plain", "text/html"]
        assert message["Message-ID"].startswith(f"<{started['id']}.")
        assert started["id"] in message["Subject"]
    # The subject is RFC 2047-encoded on the wire and decodes to Chinese.
    raw = ws.outbox_files(started["id"], "eml")
    assert any(b"=?utf-8?" in p.read_bytes() for p in raw)
    assert any("\u4e00" <= ch <= "\u9fff" for ch in zh["Subject"])
    assert zh["To"].addresses[0].display_name == "张伟"
    text_zh = zh.get_body(("plain",)).get_content()
    assert "张伟" in text_zh
    assert "Mary Chan" in en.get_body(("plain",)).get_content()
    # The stable Message-ID is derived from (incident, notice, recipient, channel).
    again = [_read_eml(p)["Message-ID"] for p in ws.outbox_files(started["id"], "eml")]
    assert sorted(again) == sorted(m["Message-ID"] for m in emls.values())


def test_sms_files_carry_segments_and_no_customer_reference(ws: Workspace) -> None:
    ws.write_customers([
        "c1,李娜,,+8613800138001,zh-CN,retail,shanghai,sh-pudong,debit_card,normal",
        "c2,Tom Lee,,+85291234567,en,retail,hong-kong,hk-central,debit_card,normal",
    ])
    started = _start(ws)
    sms = {json.loads(p.read_text("utf-8"))["to"]: json.loads(p.read_text("utf-8"))
           for p in ws.outbox_files(started["id"], "json")}
    assert set(sms) == {"+8613800138001", "+85291234567"}
    assert sms["+8613800138001"]["encoding"] == "UCS-2"
    assert sms["+85291234567"]["encoding"] == "GSM-7"
    for body in sms.values():
        assert body["segments"] >= 1
        assert "c1" not in body["body"] and "c2" not in body["body"]
        assert started["id"] in body["body"]


def test_status_shows_eta_cadence_and_masks_contacts(ws: Workspace) -> None:
    ws.write_customers(["c1,王芳,wang.fang@example.com,+8613800138002,zh-CN,retail,beijing,"
                        "bj-xicheng,savings,normal"])
    started = _start(ws)
    status = ws.run("status", started["id"]).stdout
    assert "investigating" in status
    assert "Next customer update" in status
    assert "wang.fang@example.com" not in status and "13800138002" not in status
    data = ws.json("status", started["id"])
    assert data["next_update_due"] is not None and data["update_overdue"] is False
    assert data["deliveries_by_channel"]["email"]["sent"] == 1
    assert data["deliveries_by_channel"]["sms"]["sent"] == 1


def test_internal_update_records_without_notifying_customers(ws: Workspace) -> None:
    started = _start(ws)
    before = started["deliveries"]["sent"]
    result = ws.json("update", started["id"], "--message", "DBA paged", "--internal")
    assert result["notice"] is None
    assert result["deliveries"]["sent"] == before  # customer deliveries
    internal = ws.outbox_files(started["id"], "eml", internal=True)
    notices = sorted({p.parent.parent.name for p in internal})
    assert len(notices) == 2  # the declaration and this update went to the parties


def test_queue_only_records_then_deliver_sends_once(ws: Workspace) -> None:
    started = _start(ws, "--queue-only")
    assert started["deliveries"]["sent"] == 0
    pending = started["deliveries"]["pending"]
    internal = started["internal_deliveries"]["pending"]
    assert pending > 0 and internal > 0
    delivered = ws.json("deliver", started["id"])
    assert delivered["sent"] == pending + internal and delivered["pending"] == 0
    again = ws.json("deliver", started["id"])
    assert again["sent"] == 0
    assert len(ws.outbox_files(started["id"], "eml")) + len(
        ws.outbox_files(started["id"], "json")) == pending


def test_update_overdue_is_flagged_with_a_frozen_clock(ws: Workspace) -> None:
    ws.freeze("2026-11-24T02:00:00Z")
    started = _start(ws)
    ws.freeze("2026-11-24T05:30:00Z")  # cadence is at most 1h
    data = ws.json("status", started["id"])
    assert data["update_overdue"] is True
    assert data["eta_passed"] is True  # 2h ETA passed at 04:00
    human = ws.run("status", started["id"]).stdout
    assert "OVERDUE" in human and "passed" in human


def test_dry_run_counts_and_records_nothing(ws: Workspace) -> None:
    plan = ws.json("start", "online-banking-outage", "--title", "App down", "--dry-run")
    assert plan["dry_run"] is True
    assert plan["recipients"] > 0
    assert set(plan["sms"]) == {"zh-CN", "zh-HK", "en"}  # the example list has all three
    assert plan["sms"]["zh-CN"]["encoding"] == "UCS-2"
    assert ws.json("list", "--all") == []
    assert not (ws.root / "outbox").exists()


def test_drill_goes_only_to_the_drill_audience(ws: Workspace) -> None:
    started = _start(ws, "--drill")
    drill_rows = (ws.root / "drill.csv").read_text("utf-8").strip().splitlines()[1:]
    assert started["audience"]["recipients"] == len(drill_rows)
    assert started["drill"] is True
    subjects = [_read_eml(p)["Subject"] for p in ws.outbox_files(started["id"], "eml")]
    assert subjects and all(("演练" in s) or ("DRILL" in s) for s in subjects)


def test_region_scopes_a_disaster_to_affected_customers(ws: Workspace) -> None:
    started = ws.json("start", "typhoon", "--title", "Typhoon signal 8", "--region",
                      "hong-kong")
    customers = (ws.root / "customers.csv").read_text("utf-8").splitlines()[1:]
    in_region = [line for line in customers if ",hong-kong," in line]
    assert 0 < started["audience"]["recipients"] == len(in_region) < len(customers)


def test_file_channels_take_turns_with_other_senders(ws: Workspace,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A file write never suspends: each gives the other senders a turn, so one channel's
    queue is not written out whole before another channel (an SMTP handshake) runs at all."""
    import incident.channels.file as file_channel

    order: list[str] = []
    write = file_channel._atomic_write

    def logged(path: Path, data: bytes) -> None:
        if "internal" not in path.parts:  # the parties' notices are not the point here
            order.append(path.suffix)
        write(path, data)

    monkeypatch.setattr(file_channel, "_atomic_write", logged)
    ws.write_customers([f"C{i:04d},Customer {i},c{i}@example.com,+8613900{i:06d},en,retail,"
                        f"CN-GD,,,normal" for i in range(200)])
    ws.run("start", "core-banking-outage", "--title", "Core banking down", "--eta", "2h")
    assert order.count(".eml") == 200 and order.count(".json") == 200
    assert {".eml", ".json"} <= set(order[:10]), order[:40]
