"""Regulator clocks through the command line with a frozen clock: the deadlines each grade
carries (core-banking-outage: 银监办发〔2008〕53号 Art. 35 and DORA), re-grading, recurring
progress reports, and report drafts filled from the record — on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from cli_fixtures import Workspace

T0 = datetime.fromisoformat("2026-11-24T02:00:00+00:00")  # 10:00 in Shanghai
DETECTED = T0 - timedelta(minutes=10)  # --detected-at 09:50 local
H = 60
# Minutes after detection each duty falls due, per grade (the playbook's regulator section).
NFRA = {"nfra-first-report": 60, "nfra-written-report": 12 * H}
DORA = {"dora-initial-notification": 4 * H, "dora-intermediate-report": 72 * H,
        "dora-final-report": 30 * 24 * H}
EXPECTED = {"I": {**NFRA, "nfra-progress-report": 2 * H, **DORA}, "II": {**NFRA, **DORA},
            "III": NFRA, "IV": NFRA}


def _at(ws: Workspace, minutes: float) -> None:
    ws.freeze(T0 + timedelta(minutes=minutes))


def _start(ws: Workspace, grade: str, *extra: str) -> str:
    _at(ws, 0)
    started = ws.json("start", "core-banking-outage", "--title", "核心系统故障", "--severity",
                      grade, "--eta", "2h", "--detected-at", "2026-11-24T09:50", *extra)
    assert started["severity"] == grade
    return str(started["id"])


def _duties(ws: Workspace, incident_id: str) -> dict[str, dict[str, Any]]:
    return {d["id"]: d for d in ws.json("regulator", incident_id)["duties"]}


def _due(duty: dict[str, Any]) -> datetime | None:
    return datetime.fromisoformat(duty["due"]) if duty["due"] else None


@pytest.fixture
def one_customer(ws: Workspace) -> Workspace:
    ws.write_customers(["C1,张伟,zhang.wei@example.com,,zh-CN,retail,guangdong,gd-sz-futian,"
                        "savings,normal"])
    return ws


def test_each_grade_carries_its_reporting_deadlines(one_customer: Workspace) -> None:
    ws = one_customer
    for grade, expected in EXPECTED.items():
        incident_id = _start(ws, grade)
        report = ws.json("regulator", incident_id)
        assert report["severity"] == grade
        duties = {d["id"]: d for d in report["duties"]}
        assert set(duties) == set(expected), grade
        for duty_id, minutes in expected.items():
            assert _due(duties[duty_id]) == DETECTED + timedelta(minutes=minutes), (grade,
                                                                                  duty_id)
            assert duties[duty_id]["state"] == "open" and duties[duty_id]["overdue"] is False
        assert "Art. 35" in duties["nfra-first-report"]["source"]
        assert "NFRA" in duties["nfra-first-report"]["to"]
        if grade == "I":
            assert duties["nfra-progress-report"]["every"] == "2:00:00"
        # The same deadlines are checklist items in status.
        steps = {s["id"]: s for s in ws.json("status", incident_id)["steps"]
                 if s["kind"] == "duty"}
        assert {k: _due(v) for k, v in steps.items()} == {k: _due(v) for k, v in
                                                          duties.items()}
        # 70 minutes after detection the 60-minute first report is overdue, in red.
        _at(ws, 60)
        assert _duties(ws, incident_id)["nfra-first-report"]["overdue"] is True
        human = ws.run("regulator", incident_id).stdout
        assert f"at grade {grade}" in human
        assert "OVERDUE" in human and "nfra-first-report" in human
        assert ("nfra-progress-report" in human) == (grade == "I")
        assert ("dora-initial-notification" in human) == (grade in ("I", "II"))


def test_regrading_starts_new_clocks_at_the_regrade(one_customer: Workspace) -> None:
    ws = one_customer
    incident_id = _start(ws, "II")
    assert "nfra-progress-report" not in _duties(ws, incident_id)
    _at(ws, 60)
    regraded = ws.json("update", incident_id, "-m", "Three provinces down", "--severity", "I")
    # Grade I promises an update every 30 minutes.
    assert datetime.fromisoformat(regraded["next_update_due"]) == T0 + timedelta(minutes=90)
    duties = _duties(ws, incident_id)
    assert _due(duties["nfra-progress-report"]) == T0 + timedelta(minutes=60 + 2 * H)
    # Clocks of duties that already applied at grade II keep running from detection.
    assert _due(duties["dora-initial-notification"]) == DETECTED + timedelta(hours=4)
    assert _due(duties["nfra-first-report"]) == DETECTED + timedelta(hours=1)

    # Filing a progress report moves the next one 2 hours on.
    _at(ws, 170)
    filed = ws.json("step", incident_id, "nfra-progress-report", "--done", "--note",
                    "Progress report 1 faxed")
    assert filed["state"] == "open"  # recurring: the next one is due
    assert datetime.fromisoformat(filed["next_due"]) == T0 + timedelta(minutes=60 + 4 * H)
    duties = _duties(ws, incident_id)
    assert duties["nfra-progress-report"]["reports_filed"] == 1
    assert _due(duties["nfra-progress-report"]) == T0 + timedelta(minutes=60 + 4 * H)
    assert "Next nfra-progress-report due" in ws.run(
        "step", incident_id, "nfra-progress-report", "--done").stdout
    assert _due(_duties(ws, incident_id)["nfra-progress-report"]) == T0 + timedelta(
        minutes=60 + 6 * H)

    # Resolved before the next one falls due: no more progress reports.
    _at(ws, 240)
    ws.json("resolve", incident_id, "-m", "Restored")
    _at(ws, 24 * H)
    progress = _duties(ws, incident_id)["nfra-progress-report"]
    assert progress["due"] is None and progress["overdue"] is False
    assert progress["reports_filed"] == 2
    attention = ws.json("status", incident_id)["attention"]
    assert not any("nfra-progress-report" in a["what"] for a in attention)
    assert any("nfra-written-report" in a["what"] for a in attention)  # still owed

    # An incident re-graded from III into the DORA grades starts the DORA clocks then.
    third = _start(ws, "III")
    _at(ws, 45)
    ws.json("update", third, "-m", "Spreading", "--severity", "II")
    duties = _duties(ws, third)
    assert _due(duties["dora-initial-notification"]) == T0 + timedelta(minutes=45 + 4 * H)
    assert _due(duties["nfra-written-report"]) == DETECTED + timedelta(hours=12)


def test_a_recurring_duty_unfiled_at_resolution_stays_owed(one_customer: Workspace) -> None:
    ws = one_customer
    incident_id = _start(ws, "I")
    _at(ws, 150)  # the first progress report was due at detection + 2h
    ws.json("resolve", incident_id, "-m", "Restored")
    _at(ws, 10 * H)
    progress = _duties(ws, incident_id)["nfra-progress-report"]
    assert _due(progress) == DETECTED + timedelta(hours=2) and progress["overdue"] is True
    ws.json("step", incident_id, "nfra-progress-report", "--done")
    progress = _duties(ws, incident_id)["nfra-progress-report"]
    assert (progress["due"], progress["state"], progress["reports_filed"]) == (None, "done", 1)


def test_draft_fills_the_report_fields_from_the_record(one_customer: Workspace) -> None:
    ws = one_customer
    ws.operator = "duty-supervisor"  # an operator listed in incident.yaml
    incident_id = _start(ws, "II")
    _at(ws, 10)
    early = ws.json("regulator", incident_id, "--draft", "--lang", "zh-CN")
    assert early["fields"]["cause"] == "系统故障，原因排查中"
    ws.json("update", incident_id, "-m", "存储控制器故障，正在切换至备用系统", "--status",
            "identified")
    ws.json("manual", "log", incident_id, "--customer", "C1", "--request", "紧急取款")
    _at(ws, 20)
    zh = ws.json("regulator", incident_id, "--draft", "--lang", "zh-CN")
    assert (zh["duty"], zh["lang"]) == ("nfra-first-report", "zh-CN")  # the next due
    assert datetime.fromisoformat(zh["due"]) == DETECTED + timedelta(hours=1)
    fields = zh["fields"]
    assert list(fields) == ["duty", "deadline", "to", "basis", "grade", "time", "place",
                            "symptoms", "business", "cause", "measures", "next", "contact"]
    assert fields["duty"] == "向监管机构首次报告（电话或简报）"
    assert fields["deadline"] == "2026-11-24 10:50 CST（剩余30m）"
    assert fields["grade"].startswith("II级（重大） — 营业时间内")
    assert "2026-11-24 09:50 CST 发现" in fields["time"]
    assert "2026-11-24 10:00 CST 启动应急预案" in fields["time"]
    assert "counter_services" in fields["place"]
    assert fields["symptoms"] == "核心系统故障；已查明原因"
    assert "受系统故障影响" in fields["business"] and "受影响客户约1户" in fields["business"]
    assert fields["cause"] == "存储控制器故障，正在切换至备用系统"
    assert "2026-11-24 10:10 CST 存储控制器故障，正在切换至备用系统" in fields["measures"]
    assert "人工受理1宗，待补录1宗" in fields["measures"]
    assert fields["next"].startswith("预计恢复时间：2026-11-24 12:00 CST")
    assert "值班主管（commander）" in fields["contact"] and "400-000-0000" in fields["contact"]

    en = ws.json("regulator", incident_id, "--draft", "--lang", "en")["fields"]
    assert en["duty"] == "First report to the regulator (phone or brief note)"
    assert en["deadline"] == "2026-11-24 10:50 CST (30m left)"
    assert en["time"].startswith("detected 2026-11-24 09:50 CST, plan started 2026-11-24 10:00")
    assert "about 1 customers affected" in en["business"]
    assert "1 cases handled, 1 to reconcile" in en["measures"]
    assert "存储控制器故障" in en["measures"] and "commander" in en["contact"]
    human = ws.run("regulator", incident_id, "--draft", "--lang", "en").stdout
    for label in ("Time", "Place and extent", "Symptoms", "Affected business", "Cause",
                  "Measures taken", "Next steps", "Contact"):
        assert label in human
    human_zh = ws.run("regulator", incident_id, "--draft", "--lang", "zh-CN").stdout
    for label in ("发生时间", "地点和范围", "事件现象", "影响业务", "原因", "已采取措施",
                  "下一步工作", "联系人"):
        assert label in human_zh

    written = ws.json("regulator", incident_id, "--draft", "--duty", "nfra-written-report")
    assert written["duty"] == "nfra-written-report" and written["lang"] == "zh-CN"
    assert datetime.fromisoformat(written["due"]) == DETECTED + timedelta(hours=12)
    unknown = ws.run("regulator", incident_id, "--draft", "--duty", "sec-filing", code=2)
    assert "sec-filing" in unknown.stderr and "nfra-written-report" in unknown.stderr
    ws.run("regulator", incident_id, "--draft", "--duty", "nfra-progress-report", code=2)
    ws.run("regulator", incident_id, "--duty", "nfra-first-report", code=2)  # needs --draft
