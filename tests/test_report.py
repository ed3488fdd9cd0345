"""Post-mortem reports: every figure of an incident with a known timeline (frozen clock), the
same facts in Markdown in both languages, masking, notes and action items, the period summary,
and drills (nothing to real customers, over a real SMTP server; absent from real summaries)."""

from __future__ import annotations

import email
import email.policy
import json
import re
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from markdown_it import MarkdownIt

from cli_fixtures import Workspace
from counting_smtp import _LocalController
from incident.response.journal import Journal
from incident.settings import load_runtime
from incident.store import outbox as ob
from incident.store import schema
from incident.timeutil import parse_iso

# ------------------------------------------------------------------------------ fixtures

PLAYBOOK = """\
id: test-outage
kind: system_failure
name: {zh-CN: 测试系统故障, en: Test system outage}
summary: {zh-CN: 测试用预案。, en: A playbook for the report test.}
affected_services: [transfers]
impact: {zh-CN: 转账暂停。, en: Transfers are paused.}
measures: {zh-CN: 正在抢修。, en: Engineers are restoring the system.}
advice: {zh-CN: 请稍后再试。, en: Please try again later.}
severity:
  default: II
  levels:
    - id: I
      name: {zh-CN: I级, en: Grade I}
      criteria: {zh-CN: 特别重大, en: Critical}
      update_every: 15m
    - id: II
      name: {zh-CN: II级, en: Grade II}
      criteria: {zh-CN: 重大, en: Major}
      update_every: 30m
principles:
  fast_response: {first_notice_within: 30m}
  minimal_impact:
    urgent_first: true
    manual_channel:
      hotline: "95000"
      hours: {zh-CN: 7×24小时, en: 24 hours a day}
      open_at_start: false
  coordination:
    parties: [tech_support, compliance]
    regulator:
      - id: reg-first
        title: {zh-CN: 首次报告, en: First report}
        body: Regulator
        within: 60m
        source: test rule 1
      - id: reg-written
        title: {zh-CN: 书面报告, en: Written report}
        body: Regulator
        within: 12h
        source: test rule 2
      - id: reg-progress
        title: {zh-CN: 进展报告, en: Progress report}
        body: Regulator
        every: 1h
        grades: [II]
        source: test rule 3
  transparency: {update_every: 1h}
steps:
  - {id: declare, title: {zh-CN: 启动预案, en: Declare}, owner: commander, due: 15m,
     action: declare}
  - {id: notify-parties, title: {zh-CN: 通知相关方, en: Notify parties}, owner: liaison,
     due: 20m, action: notify_parties}
  - {id: triage, title: {zh-CN: 定位故障, en: Triage}, owner: engineering, due: 30m}
  - {id: first-notice, title: {zh-CN: 首次通知, en: First notice}, owner: communications,
     due: 30m, action: notify_customers}
  - {id: open-manual, title: {zh-CN: 开通人工渠道, en: Open the manual channel},
     owner: operations, due: 45m, action: open_manual_channel}
  - {id: media, title: {zh-CN: 媒体口径, en: Media statement}, owner: communications, due: 1h}
  - {id: reconcile, title: {zh-CN: 核对人工业务, en: Reconcile cases}, owner: operations,
     due: 1d}
  - {id: post-report, title: {zh-CN: 事后报告, en: Post-incident report}, owner: commander,
     due: 5d}
notices:
  template_set: system_failure
  channels: [email, sms]
"""

CUSTOMERS = [
    "c1,张伟,zhang.wei@example.com,+8613800138001,zh-CN,retail,guangdong,gd,savings,urgent",
    "c2,Mary Chan,mary.chan@example.org,,en,retail,guangdong,gd,savings,normal",
    "c3,李娜,,+8613800138003,zh-CN,retail,guangdong,gd,savings,normal",
    "c4,Tom Lee,tom.lee@example.org,+85291234567,en,retail,guangdong,gd,savings,normal",
    "c5,王芳,wang.fang@example.com,,zh-CN,retail,guangdong,gd,savings,urgent",
    "c6,Peter Wong,,+85298765432,en,retail,guangdong,gd,savings,normal",
]
REJECTED = "tom.lee@example.org"
# Every customer contact, in the forms a leak could take.
CONTACTS = ["zhang.wei@example.com", "mary.chan@example.org", "tom.lee@example.org",
            "wang.fang@example.com", "13800138001", "13800138003", "91234567", "98765432",
            "13800138000"]  # the last one is typed into a manual case's request


class Recorder:
    """aiosmtpd handler keeping every message with its envelope recipients; refuses the
    addresses in `reject` at RCPT TO with a 550 (a permanent failure)."""

    def __init__(self, reject: set[str] | None = None) -> None:
        self.lock = threading.Lock()
        self.reject = reject or set()
        self.messages: list[tuple[list[str], EmailMessage]] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address in self.reject:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.original_content or envelope.content,
                                          policy=email.policy.default)
        with self.lock:
            self.messages.append((list(envelope.rcpt_tos), parsed))  # type: ignore[arg-type]
        return "250 2.0.0 Ok: queued"

    def recipients(self) -> set[str]:
        with self.lock:
            return {r for rcpts, _ in self.messages for r in rcpts}


@pytest.fixture
def smtp() -> Iterator[tuple[Recorder, int]]:
    """A real SMTP server on 127.0.0.1 (aiosmtpd) that lets the test read every recipient."""
    handler = Recorder({REJECTED})
    controller = _LocalController(handler, hostname="127.0.0.1", port=0)
    controller.start()
    try:
        yield handler, controller.port
    finally:
        controller.stop()


class Clock:
    """The workspace's frozen clock, stepped through the incident's timeline (times in UTC)."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws

    def at(self, hhmm: str) -> None:
        self.ws.freeze(f"2026-11-24T{hhmm}:00Z")


def _journal(ws: Workspace) -> Journal:
    """The record of the workspace, at the time it is frozen at."""
    assert ws.clock is not None
    return Journal(load_runtime(str(ws.config), db=ws.db, operator=ws.operator,
                                clock=ws.clock))


def _setup(ws: Workspace, port: int) -> None:
    (ws.root / "playbooks" / "test-outage.yaml").write_text(PLAYBOOK, encoding="utf-8")
    ws.write_customers(CUSTOMERS)
    ws.use_smtp(port)


def _build_incident(ws: Workspace, clock: Clock) -> str:
    """The known timeline (UTC; Shanghai is +8h). Returns the incident id."""
    clock.at("01:10")
    started = ws.json("start", "test-outage", "--title", "Transfers down",
                      "--detected-at", "2026-11-24T01:00:00Z", "--eta", "2026-11-24T03:10:00Z",
                      "--queue-only")
    iid = started["id"]
    clock.at("01:14")
    ws.run("deliver", iid, code=3)  # tom.lee@example.org is refused: a permanent failure
    clock.at("01:20")
    ws.run("manual", "open", iid)
    clock.at("01:25")
    ws.run("ack", iid, "tech_support")
    clock.at("01:30")
    ws.run("manual", "log", iid, "--customer", "C0003", "--request",
           "Urgent cash withdrawal; call back on 13800138000", "--amount", "5000", "--urgent")
    clock.at("01:32")
    ws.run("ack", iid, "compliance")
    clock.at("01:35")
    ws.run("manual", "log", iid, "--customer", "C0007", "--request", "Lost card",
           "--amount", "1200.50")
    clock.at("01:40")
    ws.run("update", iid, "-m", "Failover in progress", "--status", "identified")
    for hhmm, step in [("01:45", "reg-first"), ("01:50", "triage"), ("01:55", "reg-progress")]:
        clock.at(hhmm)
        ws.run("step", iid, step, "--done")
    clock.at("01:58")
    ws.run("step", iid, "media", "--skip", "No press enquiries")
    clock.at("02:00")
    ws.run("eta", iid, "2026-11-24T03:40:00Z", "--reason", "Database checks take longer")
    clock.at("02:50")
    ws.run("eta", iid, "2026-11-24T04:00:00Z", "--reason", "Batch catch-up")
    clock.at("02:55")
    ws.run("step", iid, "reg-progress", "--done")
    clock.at("03:20")
    ws.run("resolve", iid, "-m", "Transfers restored")
    clock.at("03:30")
    ws.run("manual", "reconcile", iid, "M001")
    clock.at("03:40")
    ws.run("manual", "close", iid)
    clock.at("04:00")
    ws.run("close", iid, "--force", "--reason", "M002: customer unreachable")  # M002 is open
    clock.at("04:10")
    ws.run("note", iid, "--section", "summary", "Transfers were down for 2h20m.")
    ws.run("note", iid, "--section", "root_cause",
           "Expired certificate; the on-call DBA (+86 138 0013 8009) renewed it")
    ws.run("note", iid, "--section", "went_well", "--text", "Branches took urgent requests")
    clock.at("04:15")
    assert ws.json("action", "add", iid, "--owner", "dba-team", "--due", "2026-12-31",
                   "Alert 30 days before a certificate expires")["id"] == "A1"
    assert ws.json("action", "add", iid, "--owner", "comms", "--due", "14d",
                   "Shorter update template")["id"] == "A2"
    clock.at("04:20")
    ws.run("action", "done", iid, "a2", "--note", "Template merged")
    clock.at("05:00")
    return iid


def Z(hhmm: str, day: int = 24, month: int = 11) -> str:
    return f"2026-{month:02d}-{day:02d}T{hhmm}:00Z"


# ------------------------------------------------------------------------------ the figures


def _expected_principles() -> dict[str, Any]:
    steps = [
        ("declare", "Declare", "commander", Z("01:15"), "on_time", Z("01:10")),
        ("notify-parties", "Notify parties", "liaison", Z("01:20"), "on_time", Z("01:10")),
        ("triage", "Triage", "engineering", Z("01:30"), "late", Z("01:50")),
        ("first-notice", "First notice", "communications", Z("01:30"), "on_time", Z("01:10")),
        ("open-manual", "Open the manual channel", "operations", Z("01:45"), "on_time",
         Z("01:20")),
        ("media", "Media statement", "communications", Z("02:00"), "skipped", None),
        ("reconcile", "Reconcile cases", "operations", Z("01:00", day=25), "pending", None),
        ("post-report", "Post-incident report", "commander", Z("01:00", day=29), "pending",
         None),
    ]
    zh = {"declare": "启动预案", "notify-parties": "通知相关方", "triage": "定位故障",
          "first-notice": "首次通知", "open-manual": "开通人工渠道", "media": "媒体口径",
          "reconcile": "核对人工业务", "post-report": "事后报告"}
    step_items = [{"id": i, "title": {"zh-CN": zh[i], "en": en}, "owner": owner, "due": due,
                   "state": state, "done_at": done,
                   "late_by_s": 1200 if i == "triage" else None, "overdue_s": None,
                   "skipped_at": Z("01:58") if i == "media" else None,
                   "reason": "No press enquiries" if i == "media" else ""}
                  for i, en, owner, due, state, done in steps]
    notice = [(1, "initial", "01:10", 8, 6, 7, 1, 240), (8, "update", "01:40", 7, 6, 7, 0, 0),
              (13, "eta_changed", "02:00", 7, 6, 7, 0, 0),
              (15, "eta_changed", "02:50", 7, 6, 7, 0, 0),
              (18, "resolved", "03:20", 7, 6, 7, 0, 0)]
    party = {"tech_support": ({"zh-CN": "科技运维部", "en": "IT Operations"}, "01:25", 900),
             "compliance": ({"zh-CN": "合规部", "en": "Compliance"}, "01:32", 1320)}
    return {
        "fast_response": {
            "verdict": "partly",
            "checks": [
                {"id": "first_notice_on_time", "key": True, "passed": True, "value": 840,
                 "target": 1800, "unit": "seconds"},
                {"id": "steps_on_time", "key": False, "passed": False, "value": 1,
                 "target": 0, "unit": "count"}],
            "figures": {
                "detection_to_declared_s": 600, "declared_to_first_notice_s": 240,
                "detection_to_first_notice_s": 840, "first_notice_target_s": 1800,
                "reach": {
                    "email": {"audience": 4, "reached": 3, "p50_s": 240, "p95_s": None,
                              "p100_s": None},
                    "sms": {"audience": 4, "reached": 4, "p50_s": 240, "p95_s": 240,
                            "p100_s": 240},
                    "customers": {"audience": 6, "reached": 6, "p50_s": 240, "p95_s": 240,
                                  "p100_s": 240}},
                "steps": {"on_time": 4, "late": 1, "skipped": 1, "missed": 0, "pending": 2,
                          "items": step_items}}},
        "minimal_impact": {
            "verdict": "partly",
            "checks": [
                {"id": "manual_channel_on_time", "key": True, "passed": True, "value": 1200,
                 "target": 2700, "unit": "seconds"},
                {"id": "cases_reconciled", "key": False, "passed": False, "value": 1,
                 "target": 0, "unit": "count"},
                {"id": "urgent_first", "key": False, "passed": True, "value": 240,
                 "target": 240, "unit": "seconds"}],
            "figures": {
                "customers_affected": 6, "customers_reached": 6, "impact_duration_s": 8400,
                "impact_ongoing": False,
                "manual_channel": {"opened_at": Z("01:20"), "closed_at": Z("03:40"),
                                   "open_s": 8400, "opened_after_s": 1200, "target_s": 2700},
                "cases": {
                    "logged": 2, "urgent": 1, "reconciled": 1, "outstanding": 1,
                    "amount_total": "6200.50",
                    "items": [
                        {"id": "M001", "customer": "C0003",
                         "request": "Urgent cash withdrawal; call back on 13******000",
                         "amount": "5000.00", "urgent": True, "logged_at": Z("01:30"),
                         "reconciled_at": Z("03:30"), "note": ""},
                        {"id": "M002", "customer": "C0007", "request": "Lost card",
                         "amount": "1200.50", "urgent": False, "logged_at": Z("01:35"),
                         "reconciled_at": None, "note": ""}]},
                "urgent": {"customers": 2, "reached": 2, "all_reached_s": 240,
                           "customers_p50_s": 240},
                "replies": None}},
        "coordination": {
            "verdict": "met",
            "checks": [
                {"id": "regulator_deadlines", "key": True, "passed": True, "value": 3,
                 "target": 3, "unit": "count"},
                {"id": "parties_notified", "key": False, "passed": True, "value": 2,
                 "target": 2, "unit": "count"},
                {"id": "parties_acknowledged", "key": False, "passed": True, "value": 2,
                 "target": 2, "unit": "count"}],
            "figures": {
                "parties": [{"id": pid, "name": name, "required": True,
                             "notified_at": Z("01:10"), "notified_after_s": 600,
                             "delivered_at": Z("01:14"), "acknowledged_at": Z(ack),
                             "ack_after_s": after}
                            for pid, (name, ack, after) in party.items()],
                "regulator": [
                    {"id": "reg-first", "title": {"zh-CN": "首次报告", "en": "First report"},
                     "body": "Regulator", "source": "test rule 1", "every_s": None,
                     "deadlines": [{"due": Z("02:00"), "done_at": Z("01:45"),
                                    "state": "met", "by_s": 900}], "skipped_reason": ""},
                    {"id": "reg-written", "title": {"zh-CN": "书面报告", "en": "Written report"},
                     "body": "Regulator", "source": "test rule 2", "every_s": None,
                     "deadlines": [{"due": Z("13:00"), "done_at": None, "state": "pending",
                                    "by_s": 28800}], "skipped_reason": ""},
                    {"id": "reg-progress",
                     "title": {"zh-CN": "进展报告", "en": "Progress report"},
                     "body": "Regulator", "source": "test rule 3", "every_s": 3600,
                     "deadlines": [{"due": Z("02:00"), "done_at": Z("01:55"), "state": "met",
                                    "by_s": 300},
                                   {"due": Z("03:00"), "done_at": Z("02:55"), "state": "met",
                                    "by_s": 300}], "skipped_reason": ""}],
                "regulator_deadlines": {"met": 3, "late": 0, "missed": 0, "pending": 1,
                                        "skipped": 0},
                "parties_required": 2, "parties_notified_on_time": 2, "parties_notified": 2,
                "parties_acknowledged": 2}},
        "transparency": {
            "verdict": "missed",
            "checks": [
                {"id": "update_cadence", "key": True, "passed": False, "value": 3000,
                 "target": 1800, "unit": "seconds"},
                {"id": "eta_given", "key": False, "passed": True, "value": None,
                 "target": None, "unit": "seconds"},
                {"id": "eta_kept_current", "key": False, "passed": True, "value": 0,
                 "target": 0, "unit": "count"},
                {"id": "recovery_notice", "key": False, "passed": True, "value": None,
                 "target": None, "unit": "seconds"},
                # No receipts: confirmed reach is not judged (tests/test_confirmed_reach.py).
                {"id": "customers_reached", "key": False, "passed": None, "value": 0,
                 "target": 0, "unit": "count"}],
            "figures": {
                "customer_notices": 5, "updates": 3, "internal_updates": 0,
                "promised_cadence_s": 1800, "longest_gap_s": 3000,
                "longest_gap_promised_s": 1800, "gaps_over": 1,
                "gaps": [{"from": Z(a), "to": Z(b), "gap_s": s, "promised_s": 1800,
                          "over": s > 1800, "running": False}
                         for a, b, s in [("01:10", "01:40", 1800), ("01:40", "02:00", 1200),
                                         ("02:00", "02:50", 3000), ("02:50", "03:20", 1800)]],
                "eta_revisions": 2,
                "eta": [{"seq": 1, "eta": Z("03:10"), "announced_at": Z("01:10"),
                         "reason": "", "lapsed": False, "recovery_vs_eta_s": 600},
                        {"seq": 13, "eta": Z("03:40"), "announced_at": Z("02:00"),
                         "reason": "Database checks take longer", "lapsed": False,
                         "recovery_vs_eta_s": -1200},
                        {"seq": 15, "eta": Z("04:00"), "announced_at": Z("02:50"),
                         "reason": "Batch catch-up", "lapsed": False,
                         "recovery_vs_eta_s": -2400}],
                "notices": [{"seq": seq, "phase": phase, "at": Z(at), "messages": messages,
                             "recipients": recipients, "sent": sent, "failed": failed,
                             "pending": 0, "first_accepted_s": after,
                             "last_accepted_s": after}
                            for seq, phase, at, messages, recipients, sent, failed, after
                            in notice],
                "delivery": [
                    {"channel": "email", "language": "en", "messages": 6, "sent": 5,
                     "failed": 1, "pending": 0, "success_rate": 0.8333},
                    {"channel": "email", "language": "zh-CN", "messages": 10, "sent": 10,
                     "failed": 0, "pending": 0, "success_rate": 1.0},
                    {"channel": "sms", "language": "en", "messages": 10, "sent": 10,
                     "failed": 0, "pending": 0, "success_rate": 1.0},
                    {"channel": "sms", "language": "zh-CN", "messages": 10, "sent": 10,
                     "failed": 0, "pending": 0, "success_rate": 1.0}],
                "failures": [{"channel": "email", "code": "550", "count": 1,
                              "example": "550 5.1.1 <t***@example.org>: Recipient address "
                                         "rejected: User unknown"}],
                "receipts": {},
                "reached_share": 1.0,
                "basis": "accepted", "confirmed_reach": None, "confirmed_share": None,
                "undelivered": [], "never_reached": {"count": 0, "customers": []},
                "opted_out_skipped": {}}},
    }


def test_report_json_has_every_figure_of_a_known_timeline(
        ws: Workspace, smtp: tuple[Recorder, int]) -> None:
    recorder, port = smtp
    _setup(ws, port)
    iid = _build_incident(ws, Clock(ws))
    report = ws.json("report", iid)  # --json: the JSON document
    assert report == json.loads(ws.run("report", iid, "--format", "json").stdout)

    assert report["schema"] == "incident-report/1"
    assert report["generated_at"] == Z("05:00")
    assert report["incident"] == {
        "id": iid, "title": "Transfers down", "drill": False,
        "playbook": {"id": "test-outage",
                     "name": {"zh-CN": "测试系统故障", "en": "Test system outage"}},
        "kind": "system_failure", "severity": "II",
        "severity_name": {"zh-CN": "II级", "en": "Grade II"},
        "severity_history": [{"grade": "II", "at": Z("01:10")}], "status": "closed",
        "declared_by": "duty-lead", "affected": ["transfers"], "regions": [],
        "detected_at": Z("01:00"), "declared_at": Z("01:10"), "resolved_at": Z("03:20"),
        "closed_at": Z("04:00"), "eta": Z("04:00"), "events": 28}
    assert report["timestamps"] == {
        "detected": Z("01:00"), "declared": Z("01:10"), "first_notice_recorded": Z("01:10"),
        "first_notice_accepted": Z("01:14"), "regulator_notified": Z("01:45"),
        "manual_channel_opened": Z("01:20"), "resolved": Z("03:20"), "closed": Z("04:00")}
    assert report["verdicts"] == {"fast_response": "partly", "minimal_impact": "partly",
                                  "coordination": "met", "transparency": "missed"}
    expected = _expected_principles()
    for name in expected:  # one principle at a time, for a readable diff
        assert report["principles"][name] == expected[name], name
    assert set(report["principles"]) == set(expected)
    assert report["sections"] == {
        "summary": [{"at": Z("04:10"), "by": "duty-lead",
                     "text": "Transfers were down for 2h20m."}],
        "root_cause": [{"at": Z("04:10"), "by": "duty-lead",
                        "text": "Expired certificate; the on-call DBA (+86 13******009) "
                                "renewed it"}],
        "trigger": [], "resolution": [],
        "went_well": [{"at": Z("04:10"), "by": "duty-lead",
                       "text": "Branches took urgent requests"}],
        "went_wrong": [], "lucky": []}
    assert report["actions"] == [
        {"id": "A1", "text": "Alert 30 days before a certificate expires", "owner": "dba-team",
         "due": "2026-12-30T16:00:00Z", "added_at": Z("04:15"), "added_by": "duty-lead",
         "done_at": None, "note": "", "state": "open", "overdue": False},
        {"id": "A2", "text": "Shorter update template", "owner": "comms",
         "due": Z("04:15", day=8, month=12), "added_at": Z("04:15"), "added_by": "duty-lead",
         "done_at": Z("04:20"), "note": "Template merged", "state": "done",
         "overdue": False}]
    types = [e["type"] for e in report["timeline"]]
    assert types == [
        "declared", "parties_notified", "manual_opened", "party_acked", "case_logged",
        "party_acked", "case_logged", "updated", "step_done", "step_done", "step_done",
        "step_skipped", "eta_revised", "parties_notified", "eta_revised", "parties_notified",
        "step_done", "resolved", "parties_notified", "case_reconciled", "manual_closed",
        "closed", "note", "note", "note", "action_added", "action_added", "action_done"]
    assert [e["seq"] for e in report["timeline"]] == list(range(1, 29))
    assert report["timeline"][0] == {
        "seq": 1, "at": Z("01:10"), "type": "declared", "actor": "duty-lead",
        "what": {"severity": "II", "eta": Z("03:10"),
                 "notice": {"phase": "initial", "audience": "customers", "messages": 8}}}
    # The email refused by the server was not tried again; nobody else was refused.
    assert REJECTED not in recorder.recipients()
    assert {"zhang.wei@example.com", "mary.chan@example.org",
            "wang.fang@example.com"} <= recorder.recipients()


def test_markdown_states_the_same_facts_in_both_languages(
        ws: Workspace, smtp: tuple[Recorder, int]) -> None:
    _, port = smtp
    _setup(ws, port)
    iid = _build_incident(ws, Clock(ws))
    facts = {
        # times in Shanghai (UTC+8), durations as `incident` writes them
        "en": ["# Post-incident report: Transfers down", "Fast response | **partly met**",
               "Minimal impact | **partly met**", "Coordination | **met**",
               "Transparency | **missed**", "| Detection → first notice accepted | 14m |",
               "| Impact duration (detection → recovery) | 2h20m |",
               "| Logged / urgent / reconciled / outstanding | 2 / 1 / 1 / 1 |",
               "| Amount handled by hand | 6200.50 |", "late (late by 20m)",
               "| Longest gap | 50m (Target 30m) |", "recovery earlier by 40m",
               "| email | 4 | 3 | 4m | — | — |", "2026-11-24 09:00 CST",
               "2026-11-24 11:20 CST", "Expired certificate", "| A1 | Alert 30 days",
               "t***@example.org", "13******000"],
        "zh-CN": ["# 事件总结报告：Transfers down", "快速响应 | **部分达标**",
                  "最小影响 | **部分达标**", "协同配合 | **达标**", "信息透明 | **未达标**",
                  "| 发现故障 → 首次通知被接收 | 14m |", "| 影响时长（发现 → 恢复） | 2h20m |",
                  "| 登记 / 紧急 / 已核对 / 未核对 | 2 / 1 / 1 / 1 |", "逾期 (逾期 20m)",
                  "| 最长间隔 | 50m (目标 30m) |", "早于预计 40m", "2026-11-24 09:00 CST",
                  "根本原因", "| A1 | Alert 30 days"],
    }
    for lang, expected in facts.items():
        text = ws.run("report", iid, "--lang", lang).stdout
        for fact in expected:
            assert fact in text, (lang, fact)
        # It is valid Markdown whose tables render: one per section of figures at least.
        html = MarkdownIt("commonmark").enable("table").render(text)
        assert html.count("<table>") >= 15, lang
        assert "<script" not in html
    out = ws.root / "report.md"
    ws.run("report", iid, "--lang", "en", "-o", str(out))
    assert out.read_text("utf-8") == ws.run("report", iid, "--lang", "en").stdout


def test_no_contact_data_in_any_format_or_language(
        ws: Workspace, smtp: tuple[Recorder, int]) -> None:
    _, port = smtp
    _setup(ws, port)
    iid = _build_incident(ws, Clock(ws))
    outputs = [ws.run("report", iid, "--format", fmt, "--lang", lang).stdout
               for fmt in ("md", "html", "json") for lang in ("zh-CN", "en")]
    outputs.append(ws.run("report", "--since", "2026-11-01", "--format", "json").stdout)
    outputs.append(ws.run("report", "--since", "2026-11-01", "--format", "html").stdout)
    digits = [re.sub(r"\D", "", o) for o in outputs]
    for contact in CONTACTS:
        for text, only_digits in zip(outputs, digits, strict=True):
            assert contact not in text
            if contact.isdigit():
                assert contact not in only_digits.replace("20261124", "")
    assert any("t***@example.org" in o for o in outputs)  # the masked form is there


def test_notes_and_action_items_are_events_refused_when_wrong(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    ws.freeze("2026-11-24T01:00:00Z")
    iid = ws.json("start", "core-banking-outage", "--title", "Core down", "--eta", "2h")["id"]
    bad = ws.run("note", iid, "--section", "rootcause", "text", code=2)
    assert "--section 'rootcause'" in bad.stderr and "root_cause" in bad.stderr
    assert "must not be empty" in ws.run("note", iid, "--section", "summary", " ",
                                         code=2).stderr
    assert "--due" in ws.run("action", "add", iid, "--owner", "x", "--due", "2026-01-01",
                             "Fix", code=2).stderr
    assert "A9" in ws.run("action", "done", iid, "A9", code=2).stderr
    ws.run("report", code=2)  # neither an ID nor --since
    assert "--format" in ws.run("report", iid, "--format", "pdf", code=2).stderr
    assert "--lang" in ws.run("report", iid, "--lang", "fr", code=2).stderr
    ws.run("report", "NOPE", code=2)
    # A note and an action item on an open incident; ids go on per incident.
    ws.run("note", iid, "--section", "trigger", "A config push")
    first = ws.json("action", "add", iid, "--owner", "ops", "--due", "7d", "Canary pushes")
    assert (first["id"], first["due"], first["state"]) == ("A1", "2026-12-01T01:00:00+00:00",
                                                           "open")
    second = ws.json("start", "core-banking-outage", "--title", "Other", "--eta", "2h")["id"]
    assert ws.json("action", "add", second, "--owner", "ops", "--due", "2026-12-31T18:00",
                   "Other fix")["id"] == "A1"
    listed = ws.json("actions")
    assert [(a["incident"], a["id"]) for a in listed] == [(iid, "A1"), (second, "A1")]
    assert listed[1]["due"] == "2026-12-31T10:00:00+00:00"  # 18:00 in Shanghai
    table = ws.run("actions").stdout
    assert "Canary pushes" in table and "Other fix" in table
    ws.run("action", "done", iid, "A1")
    assert "already done" in ws.run("action", "done", iid, "A1", code=2).stderr
    assert [a["incident"] for a in ws.json("actions")] == [second]
    assert len(ws.json("actions", "--all")) == 2
    # The notes joined the hash chain.
    assert ws.json("verify", iid) == {"verified": 1, "broken": {}, "unsigned": {},
            "anchored": False}
    assert ws.json("report", iid)["sections"]["trigger"][0]["text"] == "A config push"


def test_percentiles_of_time_to_reach_come_from_the_outbox(ws: Workspace) -> None:
    """20 customers reached one minute apart (customer cN at N minutes), the last not at
    all: 50% at 10m, 95% at 19m, 100% never; urgent c3 and c15 were not reached first."""
    ws.freeze("2026-11-24T01:00:00Z")
    ws.write_customers([f"c{n},Name {n},c{n}@example.com,,en,retail,gd,gd,savings,"
                        f"{'urgent' if n in (3, 15) else 'normal'}" for n in range(1, 21)])
    iid = ws.json("start", "core-banking-outage", "--title", "Reach", "--eta", "2h",
                  "--queue-only")["id"]
    journal = _journal(ws)
    start = parse_iso("2026-11-24T01:00:00Z")
    with journal.store.write() as conn:
        rows = conn.execute(schema.outbox.select().where(
            schema.outbox.c.incident_id == iid, schema.outbox.c.notice_seq == 1)).all()
        for row in rows:
            minute = int(row.recipient_ref[1:])
            if minute < 20:
                ob.mark_sent(conn, [(row.id, None)],
                             now=start.replace(minute=minute))
    journal.store.close()
    report = ws.json("report", iid)
    reach = report["principles"]["fast_response"]["figures"]["reach"]
    assert reach == {
        "email": {"audience": 20, "reached": 19, "p50_s": 600, "p95_s": 1140, "p100_s": None},
        "customers": {"audience": 20, "reached": 19, "p50_s": 600, "p95_s": 1140,
                      "p100_s": None}}
    minimal = report["principles"]["minimal_impact"]
    assert minimal["figures"]["urgent"] == {"customers": 2, "reached": 2, "all_reached_s": 900,
                                            "customers_p50_s": 600}
    urgent = next(c for c in minimal["checks"] if c["id"] == "urgent_first")
    assert urgent["passed"] is False
    assert report["principles"]["fast_response"]["figures"]["declared_to_first_notice_s"] == 60
    transparency = report["principles"]["transparency"]["figures"]
    assert transparency["notices"][0]["pending"] == 1
    assert transparency["reached_share"] == 0.95


# ------------------------------------------------------------------------------ drills


def test_drill_reaches_only_the_drill_audience_and_stays_out_of_real_summaries(
        ws: Workspace, smtp: tuple[Recorder, int]) -> None:
    recorder, port = smtp
    ws.use_smtp(port)
    def customers_only(cfg: dict[str, Any]) -> None:  # only customer notices on the wire
        cfg.pop("parties", None)
        cfg.pop("alerts", None)

    ws.configure(customers_only)
    ws.freeze("2026-11-24T01:00:00Z")
    real = ws.json("start", "core-banking-outage", "--title", "Real outage", "--eta", "2h")
    customers_wire = recorder.recipients()
    recorder.messages.clear()
    ws.freeze("2026-11-24T02:00:00Z")
    drill = ws.json("start", "core-banking-outage", "--title", "Drill: core outage",
                    "--eta", "2h", "--drill")
    ws.run("update", drill["id"], "-m", "Drill progress")
    ws.freeze("2026-11-24T03:00:00Z")
    ws.run("resolve", drill["id"], "-m", "Drill over")

    def addresses(name: str) -> set[str]:
        lines = (ws.root / name).read_text("utf-8").splitlines()[1:]
        return {line.split(",")[2] for line in lines if line.split(",")[2]}

    drill_wire = recorder.recipients()
    assert drill_wire == addresses("drill.csv")  # every drill contact, and only them
    assert not drill_wire & addresses("customers.csv")  # nothing to a real customer
    assert customers_wire == addresses("customers.csv")
    assert all(("演练" in m["Subject"]) or ("DRILL" in m["Subject"])
               for _, m in recorder.messages)
    assert len(recorder.messages) == 3 * len(drill_wire)

    # Scored like a real one, and labelled as a drill in every format.
    report = ws.json("report", drill["id"])
    assert report["incident"]["drill"] is True
    assert set(report["verdicts"].values()) <= {"met", "partly", "missed"}
    assert report["principles"]["fast_response"]["checks"][0]["target"] == 1800
    assert "[DRILL]" in ws.run("report", drill["id"], "--lang", "en").stdout
    assert "[演练]" in ws.run("report", drill["id"], "--lang", "zh-CN").stdout
    assert 'id="drill-banner"' in ws.run("report", drill["id"], "--format", "html").stdout

    summary = ws.json("report", "--since", "2026-11-24", "--until", "2026-11-24")
    assert summary["incidents"] == 1 and summary["drills"] is False
    assert [i["id"] for i in summary["list"]] == [real["id"]]
    drills = ws.json("report", "--since", "2026-11-24", "--drills")
    assert [i["id"] for i in drills["list"]] == [drill["id"]]
    assert "[DRILL]" in ws.run("report", "--since", "2026-11-24", "--drills",
                               "--lang", "en").stdout


def test_period_summary_counts_verdicts_and_figures(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    ids = []
    for day, (playbook, severity, minutes) in enumerate(
            [("core-banking-outage", "II", 10), ("typhoon", "II", 40),
             ("core-banking-outage", "III", 20)], start=1):
        ws.freeze(f"2026-10-0{day}T02:00:00Z")
        ids.append(ws.json("start", playbook, "--title", f"Incident {day}", "--eta", "2h",
                           "--severity", severity, "--detected-at", f"{minutes}m")["id"])
        ws.freeze(f"2026-10-0{day}T03:00:00Z")
        ws.run("resolve", ids[-1], "-m", "Restored")
    ws.run("action", "add", ids[0], "--owner", "ops", "--due", "30d", "Fix the thing")
    ws.freeze("2026-10-10T00:00:00Z")
    summary = ws.json("report", "--since", "2026-10-02")
    assert summary["period"] == {"since": "2026-10-01T16:00:00Z",
                                 "until": "2026-10-10T00:00:00Z"}
    assert [i["id"] for i in summary["list"]] == ids[1:]
    assert summary["incidents"] == 2
    assert summary["by_kind"] == {"natural_disaster": 1, "system_failure": 1}
    assert summary["by_grade"] == {"II": 1, "III": 1}
    assert summary["figures"]["detection_to_declared_s"] == {
        "n": 2, "median": 1200, "worst": 2400, "worst_incident": ids[1]}
    assert summary["figures"]["impact_duration_s"]["worst"] == 2400 + 3600
    for principle in ("fast_response", "minimal_impact", "coordination", "transparency"):
        assert sum(summary["verdicts"][principle].values()) == 2
    assert summary["open_actions"] == []
    everything = ws.json("report", "--since", "2026-10-01", "--until", "2026-10-03")
    assert [i["id"] for i in everything["list"]] == ids
    assert [a["incident"] for a in everything["open_actions"]] == [ids[0]]
    assert "--until" in ws.run("report", "--since", "2026-10-05", "--until", "2026-10-01",
                               code=2).stderr
    text = ws.run("report", "--since", "2026-10-01", "--lang", "en").stdout
    assert "| Incidents | 3 |" in text and "Fix the thing" in text
