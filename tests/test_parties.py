"""Coordination through the command line: internal parties get their own messages (read back
from a real SMTP server, aiosmtpd on 127.0.0.1), targeted and internal updates,
acknowledgements, drills that never reach the regulator, and re-grading — on SQLite and
PostgreSQL."""

from __future__ import annotations

import email
import email.policy
import threading
from collections import Counter
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from cli_fixtures import Workspace
from counting_smtp import _LocalController

NOW = "2026-11-24T02:00:00+00:00"
CUSTOMERS = {"c1@example.com": "zh-CN", "c2@example.com": "en", "c3@example.com": "zh-CN"}
# incident.yaml.example parties of the core-banking playbook, by address.
PARTIES = {"it-ops@example.com": "tech_support", "branch-ops@example.com": "branch_operations",
           "compliance@example.com": "compliance", "pr@example.com": "pr_media",
           "regulator-liaison@example.com": "regulator", "risk@example.com": "risk_management"}
CRITERIA_II = {"zh-CN": "营业时间内，两个及以上省（区、市）业务中断0.5小时以上",
               "en": "During business hours, service is down in two or more provinces for 30 "
                     "minutes or more"}


class Recorder:
    """aiosmtpd handler keeping every message, parsed, with its envelope recipients."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[str, EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.original_content or envelope.content,
                                          policy=email.policy.default)
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.messages.append((rcpt, parsed))
        return "250 2.0.0 Ok: queued"

    def since(self, mark: int) -> list[tuple[str, EmailMessage]]:
        with self.lock:
            return list(self.messages[mark:])

    def __len__(self) -> int:
        with self.lock:
            return len(self.messages)


@pytest.fixture
def smtp_ws(ws: Workspace) -> Iterator[tuple[Workspace, Recorder]]:
    """The workspace sending email through an aiosmtpd recorder; three customers (email
    only), the compliance department reading English."""
    handler = Recorder()
    controller = _LocalController(handler, hostname="127.0.0.1", port=0)
    controller.start()
    ws.freeze(NOW)
    try:
        ws.use_smtp(controller.port, connections=2)
        ws.configure(lambda cfg: cfg["parties"]["compliance"].update(language="en"))
        ws.write_customers([f"{addr.split('@')[0]},Customer {n},{addr},,{lang},retail,"
                            "guangdong,gd-sz-futian,savings,normal"
                            for n, (addr, lang) in enumerate(CUSTOMERS.items(), 1)])
        yield ws, handler
    finally:
        controller.stop()


def _text(message: EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def _start(ws: Workspace, *extra: str) -> dict[str, Any]:
    return ws.json("start", "core-banking-outage", "--title", "Core banking unavailable",
                   "--severity", "II", "--eta", "2h", *extra)


def _split(messages: list[tuple[str, EmailMessage]]
           ) -> tuple[list[tuple[str, EmailMessage]], list[tuple[str, EmailMessage]]]:
    customers = [(r, m) for r, m in messages if r in CUSTOMERS]
    parties = [(r, m) for r, m in messages if r not in CUSTOMERS]
    assert len(customers) + len(parties) == len(messages)
    return customers, parties


def test_start_notifies_the_playbooks_parties_with_the_internal_notice(
        smtp_ws: tuple[Workspace, Recorder]) -> None:
    ws, recorder = smtp_ws
    started = _start(ws)
    assert started["parties"] == list(PARTIES.values())
    assert started["internal_deliveries"]["sent"] == 6
    customers, parties = _split(recorder.since(0))
    assert Counter(r for r, _ in customers) == Counter(list(CUSTOMERS))  # one each
    assert Counter(r for r, _ in parties) == Counter(list(PARTIES))  # one each, no one else
    for rcpt, message in parties:
        text = _text(message)
        assert started["id"] in message["Subject"]
        if rcpt == "compliance@example.com":  # English reader
            assert "Severity: Grade II (major) — " + CRITERIA_II["en"] in text
            assert "Customers affected: 3" in text
            assert "Sent by: duty-lead" in text
            assert "incident declared" in message["Subject"]
        else:
            assert "级别：II级（重大） — " + CRITERIA_II["zh-CN"] in text
            assert "受影响客户：3人" in text
            assert "发送人：duty-lead" in text
            assert "启动应急预案" in message["Subject"]
        assert "c1@example.com" not in text  # no customer contact in an internal notice
    for rcpt, message in customers:
        text = _text(message) + message.get_body(("html",)).get_content()  # type: ignore
        for leak in (*CRITERIA_II.values(), "受影响客户", "Customers affected", "duty-lead",
                     "Sent by", "发送人"):
            assert leak not in text, (rcpt, leak)
    status = ws.json("status", started["id"])
    assert set(status["parties"]) == set(PARTIES.values())
    assert all(p["notified_at"] == NOW and p["acknowledged_at"] is None
               for p in status["parties"].values())


def test_internal_and_targeted_updates_reach_only_their_recipients(
        smtp_ws: tuple[Workspace, Recorder]) -> None:
    ws, recorder = smtp_ws
    incident_id = _start(ws)["id"]

    mark = len(recorder)
    internal = ws.json("update", incident_id, "-m", "DBA paged: storage controller failover",
                       "--internal")
    assert internal["notice"] is None
    customers, parties = _split(recorder.since(mark))
    assert customers == []
    assert Counter(r for r, _ in parties) == Counter(list(PARTIES))
    assert all("DBA paged: storage controller failover" in _text(m) for _, m in parties)

    mark = len(recorder)
    targeted = ws.json("update", incident_id, "-m", "Failover in progress", "--to",
                       "compliance")
    assert targeted["notice"]["phase"] == "update"
    customers, parties = _split(recorder.since(mark))
    assert Counter(r for r, _ in customers) == Counter(list(CUSTOMERS))
    assert [r for r, _ in parties] == ["compliance@example.com"]
    assert "Failover in progress" in _text(parties[0][1])

    mark = len(recorder)
    only = ws.json("update", incident_id, "-m", "Vendor engineer on site", "--internal",
                   "--to", "tech_support", "--to", "risk_management")
    assert only["notice"] is None
    assert sorted(r for r, _ in recorder.since(mark)) == ["it-ops@example.com",
                                                          "risk@example.com"]

    mark = len(recorder)
    unknown = ws.run("update", incident_id, "-m", "x", "--to", "compliance", "--to",
                     "press_office", code=2)
    assert "unknown parties press_office" in unknown.stderr
    assert recorder.since(mark) == []
    assert [e["type"] for e in ws.json("timeline", incident_id)["events"]][-1] == (
        "parties_notified")  # nothing recorded by the refused update


def test_acknowledgements_are_recorded_once_and_only_for_notified_parties(ws: Workspace) -> None:
    ws.freeze(NOW)
    incident_id = _start(ws)["id"]
    ws.freeze("2026-11-24T02:07:00+00:00")
    acked = ws.json("ack", incident_id, "compliance", "--note", "Ms Li confirmed by phone")
    assert acked["acknowledged"] == ["compliance"]
    assert "compliance" not in acked["waiting"] and "regulator" in acked["waiting"]
    parties = ws.json("status", incident_id)["parties"]
    assert parties["compliance"]["acknowledged_at"] == "2026-11-24T02:07:00+00:00"
    assert parties["compliance"]["notified_at"] == NOW
    assert all(p["acknowledged_at"] is None for k, p in parties.items() if k != "compliance")
    assert "Parties: 1/6 acknowledged" in ws.run("status", incident_id).stdout
    again = ws.run("ack", incident_id, "compliance", code=2)
    assert "acknowledged already" in again.stderr
    # facilities is in incident.yaml but not in this playbook: never notified.
    never = ws.run("ack", incident_id, "facilities", code=2)
    assert "not been notified" in never.stderr
    ws.run("ack", incident_id, "press_office", code=2)
    events = ws.json("timeline", incident_id)["events"]
    assert [e["type"] for e in events].count("party_acked") == 1
    assert events[-1]["data"] == {"party": "compliance", "note": "Ms Li confirmed by phone"}


def _internal_recipients(ws: Workspace, incident_id: str) -> Counter[str]:
    found: Counter[str] = Counter()
    for path in ws.outbox_files(incident_id, "eml", internal=True):
        with open(path, "rb") as handle:
            message = email.message_from_binary_file(handle, policy=email.policy.default)
        found[message["To"].addresses[0].addr_spec] += 1
    return found


def test_a_drill_never_reaches_the_regulator(ws: Workspace) -> None:
    ws.freeze(NOW)
    started = _start(ws, "--drill")
    assert started["drill"] is True
    assert started["parties"] == [p for p in PARTIES.values() if p != "regulator"]
    ws.json("update", started["id"], "-m", "Drill: escalate", "--severity", "I")
    ws.json("update", started["id"], "-m", "Drill: internal", "--internal")
    refused = ws.run("update", started["id"], "-m", "Drill: tell the regulator", "--to",
                     "regulator", code=2)
    assert "regulator" in refused.stderr
    ws.json("eta", started["id"], "3h", "--reason", "Drill: slower")
    ws.json("resolve", started["id"], "-m", "Drill over")
    sent = _internal_recipients(ws, started["id"])
    assert "regulator-liaison@example.com" not in sent
    assert sent["compliance@example.com"] == 5  # declared, regraded, internal, ETA, resolved
    ws.run("ack", started["id"], "regulator", code=2)  # never notified


def test_regrading_is_recorded_and_announced_to_the_parties(ws: Workspace) -> None:
    ws.freeze(NOW)
    started = _start(ws)
    incident_id = started["id"]
    before = len(ws.json("timeline", incident_id)["events"])
    bad = ws.run("update", incident_id, "-m", "x", "--severity", "V", code=2)
    assert "'V'" in bad.stderr and "I, II, III, IV" in bad.stderr
    assert len(ws.json("timeline", incident_id)["events"]) == before
    regraded = ws.json("update", incident_id, "-m", "Now down in three provinces",
                       "--severity", "I")
    assert regraded["severity"] == "I"
    assert regraded["notice"]["phase"] == "update"  # customers hear of the update too
    assert ws.json("status", incident_id)["severity"] == "I"
    events = ws.json("timeline", incident_id)["events"]
    updated = next(e for e in events if e["type"] == "updated")
    assert (updated["data"]["severity"], updated["data"]["previous_severity"]) == ("I", "II")
    assert events[-1]["type"] == "parties_notified"
    assert events[-1]["data"]["kind"] == "regraded"
    assert set(events[-1]["data"]["parties"]) == set(PARTIES.values())
    folder = Path(ws.root, "outbox", incident_id, "internal", f"notice-{events[-1]['seq']:03d}")
    notices = sorted(folder.rglob("*.eml"))
    assert len(notices) == 6
    with open(notices[0], "rb") as handle:
        message = email.message_from_binary_file(handle, policy=email.policy.default)
    assert "事件级别调整" in message["Subject"] and "I级（特别重大）" in message["Subject"]
    body = _text(message)
    assert "Now down in three provinces" in body
    assert "两个及以上省（区、市）业务中断3小时以上" in body  # the grade I criteria
