"""The playbook's steps as the incident's checklist, through the command line with a frozen
clock (Workspace.freeze): due times from detection, overdue in `status`, `step --done/--skip`,
actions run from steps, and the cadence warnings every command prints — on SQLite and
PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from cli_fixtures import Workspace

T0 = datetime.fromisoformat("2026-11-24T02:00:00+00:00")  # 10:00 in Shanghai
DETECTED = T0 - timedelta(minutes=10)  # --detected-at 09:50 local
# core-banking-outage: minutes after detection each item falls due (playbook steps, then
# the regulator duties of grade II).
DUE = {"declare": 15, "notify-parties": 20, "engineering-triage": 30,
       "first-customer-notice": 30, "open-manual-channel": 30, "branch-instructions": 45,
       "media-holding-statement": 60, "inform-institutions-and-key-customers": 120,
       "recovery-verification": 240, "recovery-notice": 270, "reconcile-manual-cases": 1440,
       "post-incident-report": 5 * 1440,
       "nfra-first-report": 60, "nfra-written-report": 720, "dora-initial-notification": 240,
       "dora-intermediate-report": 72 * 60, "dora-final-report": 30 * 1440}
# Done by `start` itself: the declaration, the first notice, the parties, the manual channel.
AUTO = {"declare", "notify-parties", "first-customer-notice", "open-manual-channel"}


def _at(ws: Workspace, minutes: float) -> None:
    ws.freeze(T0 + timedelta(minutes=minutes))


def _start(ws: Workspace, *extra: str) -> str:
    _at(ws, 0)
    ws.write_customers(["C1,张伟,zhang.wei@example.com,,zh-CN,retail,guangdong,gd-sz-futian,"
                        "savings,normal"])
    started = ws.json("start", "core-banking-outage", "--title", "Core banking unavailable",
                      "--detected-at", "2026-11-24T09:50", *extra)
    return str(started["id"])


def _steps(ws: Workspace, incident_id: str) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in ws.json("status", incident_id)["steps"]}


def test_steps_are_due_from_detection_and_start_completes_its_own(ws: Workspace) -> None:
    incident_id = _start(ws)
    status = ws.json("status", incident_id)
    assert datetime.fromisoformat(status["detected_at"]) == DETECTED
    steps = {s["id"]: s for s in status["steps"]}
    assert set(steps) == set(DUE)
    for step_id, minutes in DUE.items():
        assert datetime.fromisoformat(steps[step_id]["due"]) == DETECTED + timedelta(
            minutes=minutes), step_id
        assert steps[step_id]["state"] == ("done" if step_id in AUTO else "open"), step_id
        assert steps[step_id]["overdue"] is False
    assert steps["engineering-triage"]["owner"] == "engineering"
    assert steps["nfra-first-report"]["kind"] == "duty"
    human = ws.run("status", incident_id).stdout
    assert "Checklist: 4 done, 0 skipped, 13 open" in human
    assert "engineering-triage" in human and "OVERDUE" not in human


def test_a_step_past_its_due_time_is_overdue_until_done(ws: Workspace) -> None:
    incident_id = _start(ws)
    _at(ws, 25)  # detection + 35m: triage (30m) is late, branch instructions not
    steps = _steps(ws, incident_id)
    assert steps["engineering-triage"]["overdue"] is True
    assert steps["branch-instructions"]["overdue"] is False
    assert steps["first-customer-notice"]["overdue"] is False  # done at start
    human = ws.run("status", incident_id).stdout
    assert "OVERDUE" in human and "engineering-triage overdue by 5m" in human
    done = ws.json("step", incident_id[-6:], "engineering-triage", "--done", "--note",
                   "Storage controller failed")
    assert (done["step"], done["state"], done["ran"]) == ("engineering-triage", "done", None)
    steps = _steps(ws, incident_id)
    assert steps["engineering-triage"]["state"] == "done"
    assert steps["engineering-triage"]["overdue"] is False
    assert "OVERDUE" not in ws.run("status", incident_id).stdout
    again = ws.run("step", incident_id, "engineering-triage", "--done", code=2)
    assert "done already" in again.stderr and "duty-lead" in again.stderr
    event = ws.json("timeline", incident_id)["events"][-1]
    assert event["type"] == "step_done"
    assert event["data"] == {"step": "engineering-triage", "note": "Storage controller failed"}


def test_skip_needs_a_reason_and_unknown_steps_are_listed(ws: Workspace) -> None:
    incident_id = _start(ws)
    for args in (("--skip", "  "), (), ("--done", "--skip", "no")):
        ws.run("step", incident_id, "media-holding-statement", *args, code=2)
    unknown = ws.run("step", incident_id, "call-the-press", "--done", code=2)
    assert "call-the-press" in unknown.stderr
    for listed in ("engineering-triage", "media-holding-statement", "nfra-first-report"):
        assert listed in unknown.stderr
    skipped = ws.json("step", incident_id, "media-holding-statement", "--skip",
                      "No media interest at this hour")
    assert skipped["state"] == "skipped"
    _at(ws, 120)  # long past its due time: a skipped step is not overdue
    steps = _steps(ws, incident_id)
    assert (steps["media-holding-statement"]["state"],
            steps["media-holding-statement"]["overdue"]) == ("skipped", False)
    ws.run("step", incident_id, "media-holding-statement", "--done", code=2)
    event = ws.json("timeline", incident_id)["events"][-1]
    assert event["type"] == "step_skipped"
    assert event["data"]["reason"] == "No media interest at this hour"
    assert "Checklist: 4 done, 1 skipped" in ws.run("status", incident_id).stdout


def test_grade_specific_steps_follow_the_grade(ws: Workspace) -> None:
    incident_id = _start(ws, "--severity", "III")
    steps = _steps(ws, incident_id)
    assert "inform-institutions-and-key-customers" not in steps  # grades I and II only
    assert "dora-initial-notification" not in steps
    ws.run("step", incident_id, "nfra-written-report", "--done")
    _at(ws, 30)
    ws.json("update", incident_id, "-m", "Two provinces affected", "--severity", "II")
    steps = _steps(ws, incident_id)
    assert datetime.fromisoformat(steps["inform-institutions-and-key-customers"]["due"]) == (
        DETECTED + timedelta(hours=2))  # steps are due from detection, whatever the grade
    assert steps["nfra-written-report"]["state"] == "done"


def test_the_manual_channel_step_opens_the_channel(ws: Workspace) -> None:
    incident_id = _start(ws, "--no-manual-channel")
    steps = _steps(ws, incident_id)
    assert steps["open-manual-channel"]["state"] == "open"
    assert {s for s, v in steps.items() if v["state"] == "done"} == AUTO - {
        "open-manual-channel"}
    _at(ws, 5)
    done = ws.json("step", incident_id, "open-manual-channel", "--done")
    assert (done["state"], done["ran"]) == ("done", "open_manual_channel")
    status = ws.json("status", incident_id)
    assert status["manual_channel"]["open"] is True
    assert status["manual_channel"]["opened_at"] == (T0 + timedelta(minutes=5)).isoformat()
    assert ws.json("timeline", incident_id)["events"][-1]["type"] == "manual_opened"
    ws.json("manual", "log", incident_id, "--customer", "C1", "--request", "Urgent cash")
    ws.run("step", incident_id, "open-manual-channel", "--done", code=2)


def test_the_notify_parties_step_notifies_them_when_start_could_not(ws: Workspace) -> None:
    # Already done by start: marking it again is refused.
    first = _start(ws)
    assert _steps(ws, first)["notify-parties"]["state"] == "done"
    ws.run("step", first, "notify-parties", "--done", code=2)

    # Started while incident.yaml had no parties: the step stays open, and marking it done
    # once the parties are configured sends them the internal notice.
    saved: dict[str, Any] = {}

    def drop(cfg: dict[str, Any]) -> None:
        saved.update(parties=cfg.pop("parties"), alerts=cfg.pop("alerts"))

    ws.configure(drop)
    second = _start(ws)
    assert _steps(ws, second)["notify-parties"]["state"] == "open"
    assert ws.outbox_files(second, "eml", internal=True) == []
    ws.configure(lambda cfg: cfg.update(saved))
    done = ws.json("step", second, "notify-parties", "--done")
    assert (done["state"], done["ran"]) == ("done", "notify_parties")
    assert done["internal_messages"] == 6  # the playbook's six parties, by email
    assert len(ws.outbox_files(second, "eml", internal=True)) == 6
    parties = ws.json("status", second)["parties"]
    assert set(parties) == {"tech_support", "branch_operations", "compliance", "pr_media",
                            "regulator", "risk_management"}


def test_every_command_warns_when_the_customer_update_or_eta_falls_due(ws: Workspace) -> None:
    incident_id = _start(ws, "--eta", "2h")  # ETA 12:00 local, grade II: 60m
    _at(ws, 10)
    ws.json("update", incident_id, "-m", "Failover started")  # next update due T0+70m
    _at(ws, 20)
    quiet = ws.run("manual", "list", incident_id)
    assert "customer update" not in quiet.stderr and "ETA passed" not in quiet.stderr
    _at(ws, 60)  # 10 minutes before the update is due
    soon = ws.run("manual", "list", incident_id)
    assert "customer update due in 10m" in soon.stderr
    _at(ws, 75)
    late = ws.run("manual", "list", incident_id)
    assert "customer update overdue by 5m" in late.stderr
    assert "customer update" not in late.stdout  # warnings go to stderr only
    in_json = ws.run("--json", "manual", "list", incident_id)
    assert "customer update overdue by 5m" in in_json.stderr
    _at(ws, 125)  # the 2h ETA passed at T0+120m, never revised
    passed = ws.run("manual", "log", incident_id, "--customer", "C1", "--request", "Cash")
    assert "ETA passed 5m ago without a revision" in passed.stderr
    # Announcing a new ETA and posting the update silences both warnings.
    revised = ws.run("eta", incident_id, "3h", "--reason", "Data checks take longer")
    assert "ETA passed" not in revised.stderr and "customer update" not in revised.stderr
    # A closed incident warns about nothing.
    ws.json("manual", "reconcile", incident_id, "M001")
    ws.json("resolve", incident_id, "-m", "Restored")
    ws.json("close", incident_id)
    _at(ws, 600)
    assert ws.run("manual", "list", incident_id).stderr == ""
